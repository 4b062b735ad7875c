"""The inference folder: what inference.yaml records and how it rebuilds the model."""

import logging
import shutil

from ruamel.yaml import YAML

from speechbrain_mowe.experiment import FAMILIES_FOLDER, MODEL_PARTS, load_family
from speechbrain_mowe.export import save_for_inference, write_inference_folder
from speechbrain_mowe.inference import MoWEAudioLLM


def test_paths_are_made_absolute_and_settings_reach_the_family(
    tmp_path, monkeypatch, whisper_dir, llama_dir
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(FAMILIES_FOLDER / "tiny_mowe.yaml", "family.yaml")
    shutil.copytree(whisper_dir, "whisper")
    sources = {"whisper_source": "whisper", "llm_source": llama_dir, "unused": "org/model"}
    model = load_family("family.yaml", sources, num_tasks=2, top_k=2)
    write_inference_folder(
        "run",
        {name: model[name] for name in MODEL_PARTS},
        model_family="family.yaml",
        model_sources=sources,
        model_settings={"top_k": 2},
        tasks=["asr", "er"],
        instructions={"asr": "Transcribe the speech."},
        emotion_labels=["happy", "sad"],
        max_audio_seconds=12.0,
    )
    written = YAML().load((tmp_path / "run" / "inference.yaml").read_text())
    assert written["model_family"] == str(tmp_path / "family.yaml")
    assert dict(written["model_sources"]) == {
        "whisper_source": str(tmp_path / "whisper"),
        "llm_source": str(llama_dir),
        "unused": "org/model",
    }
    assert (written["model"]["num_tasks"], written["model"]["top_k"]) == (2, 2)
    monkeypatch.chdir("/")
    loaded = MoWEAudioLLM.from_hparams(source=tmp_path / "run")
    assert loaded.mods.mowe_encoder.router.top_k == 2
    assert loaded.hparams.emotion_labels == ["happy", "sad"]
    assert loaded.hparams.max_audio_seconds == 12.0


def test_recipes_without_a_model_family_are_told_why_nothing_is_written(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert save_for_inference(None, {"output_folder": str(tmp_path)}, None) is None
    assert "No inference.yaml written" in caplog.text
    assert "lack model_family and model_sources" in caplog.text
    assert not any(tmp_path.iterdir())
