"""Data: audio reading, manifests, preparation, pipelines, sampling, the feature cache."""

from speechbrain_mowe.dataio.audio import (
    SAMPLE_RATE,
    AudioError,
    AudioInfo,
    audio_info,
    load_audio,
    save_audio,
)
from speechbrain_mowe.dataio.feature_cache import FeatureCache, encoder_fingerprint
from speechbrain_mowe.dataio.manifest import (
    COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    check_columns,
    check_manifest,
    clean_text,
    load_manifest,
    load_manifests,
    manifest_row,
    write_manifest,
)
from speechbrain_mowe.dataio.pipelines import (
    EmptyBatch,
    SkippedClips,
    UnreadableAudio,
    audio_pipeline,
    collate_audio,
    prompt_pipeline,
)
from speechbrain_mowe.dataio.preparation import (
    Preparation,
    check_splits,
    run_from_command_line,
)
from speechbrain_mowe.dataio.sampling import (
    DurationBatchSampler,
    WeightedMixtureSampler,
    durations,
)

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioInfo",
    "audio_info",
    "load_audio",
    "save_audio",
    "FeatureCache",
    "encoder_fingerprint",
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "ManifestError",
    "check_columns",
    "check_manifest",
    "clean_text",
    "load_manifest",
    "load_manifests",
    "manifest_row",
    "write_manifest",
    "EmptyBatch",
    "SkippedClips",
    "UnreadableAudio",
    "audio_pipeline",
    "collate_audio",
    "prompt_pipeline",
    "Preparation",
    "check_splits",
    "run_from_command_line",
    "DurationBatchSampler",
    "WeightedMixtureSampler",
    "durations",
]
