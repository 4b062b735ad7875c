"""Models built in YAML: a shipped family file, and ``!new:`` classes only."""

from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mowe.lobes import (
    HybridRouter,
    LanguageModel,
    MoWEEncoder,
    TinyConvEncoder,
    WhisperEncoder,
)
from speechbrain_mowe.model import Decoding

HPARAMS = Path(__file__).parents[2] / "hparams"

NEW_ONLY = """
model: !new:speechbrain_mowe.model.MoWEAudioLLM
    tasks: [asr, ast, er, aac]
    mowe_encoder: !new:speechbrain_mowe.lobes.MoWEEncoder
        base: !new:speechbrain_mowe.lobes.WhisperEncoder
            source: {whisper}
            mode: pad30
        weak_pool:
            - !new:speechbrain_mowe.lobes.TinyConvEncoder
        router: null
        weak_dim: 16
    llm: !new:speechbrain_mowe.lobes.LanguageModel
        source: {llm}
        lora_rank: 2
    projector: !new:speechbrain_mowe.lobes.WindowQFormerProjector
        input_dim: 80
        output_dim: 64
        hidden_dim: 32
        num_heads: 4
"""


def _answer(model):
    model.eval()
    wavs, lens = torch.randn(2, 8000) * 0.1, torch.tensor([1.0, 0.5])
    audio = model.encode_audio(wavs, lens, model.task_ids(["asr", "aac"]))
    prefix, suffix = model.llm.tokenize_prompts(["transcribe the audio .", "describe the sound ."])
    return audio.encoded, model.generate(audio, prefix, suffix, Decoding(max_new_tokens=3))


def test_shared_hparams_build_a_mowe_audio_llm_from_registry_names(whisper_dir, llama_dir):
    with open(HPARAMS / "tiny_mowe.yaml") as f:
        hparams = load_hyperpyyaml(f, {"whisper_source": whisper_dir, "llm_source": llama_dir})
    model = hparams["model"]
    mowe = model.mowe_encoder
    assert isinstance(mowe, MoWEEncoder) and isinstance(mowe.base, WhisperEncoder)
    assert all(isinstance(w, TinyConvEncoder) for w in mowe.weak_pool)
    assert isinstance(mowe.router, HybridRouter) and isinstance(model.llm, LanguageModel)
    assert mowe.output_dim == 64 + 32
    out, answers = _answer(model)
    assert out.routing.experts.shape == (2, 1) and len(answers) == 2


def test_yaml_builds_with_new_classes_only(whisper_dir, llama_dir):
    hparams = load_hyperpyyaml(NEW_ONLY.format(whisper=whisper_dir, llm=llama_dir))
    out, answers = _answer(hparams["model"])
    assert hparams["model"].mowe_encoder.base.mode == "pad30"
    assert out.feats.shape == (2, 25, 80) and out.routing is None  # 1500, trimmed to 0.5 s
    assert len(answers) == 2


def test_missing_placeholder_is_reported():
    with open(HPARAMS / "tiny_mowe.yaml") as f, pytest.raises(ValueError, match="PLACEHOLDER"):
        load_hyperpyyaml(f)
