"""The inference folder: what inference.yaml records and how it rebuilds the model."""

import logging
import shutil

import pytest
import torch
from ruamel.yaml import YAML

from speechbrain_mowe.export import write_inference_folder
from speechbrain_mowe.families import FAMILIES_FOLDER, load_family
from speechbrain_mowe.inference import PretrainedAudioLLM
from speechbrain_mowe.model import Decoding


def test_paths_are_made_absolute_and_settings_reach_the_family(
    tmp_path, monkeypatch, whisper_dir, llama_dir
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(FAMILIES_FOLDER / "tiny_mowe.yaml", "family.yaml")
    shutil.copytree(whisper_dir, "whisper")
    sources = {"whisper_source": "whisper", "llm_source": llama_dir, "unused": "org/model"}
    model = load_family("family.yaml", sources, tasks=["asr", "er"], top_k=2, weak_dim=24)
    write_inference_folder(
        "run",
        model,
        instructions={"asr": "Transcribe the speech."},
        decoding=Decoding(max_new_tokens=7),
        max_audio_seconds=12.0,
    )
    written = YAML().load((tmp_path / "run" / "inference.yaml").read_text())
    assert written["format"] == 2
    assert written["model_family"] == str(tmp_path / "family.yaml")
    assert dict(written["model_sources"]) == {  # the sources the family uses
        "whisper_source": str(tmp_path / "whisper"),
        "llm_source": str(llama_dir),
    }
    # Every setting's value, and the family file itself: later edits of the file
    # (or of its defaults) do not change the folder's model.
    assert dict(written["model_settings"]) == {
        "weak_dim": 24, "top_k": 2, "aux_weight": 0.1, "long_audio": "refuse",
        "attn_implementation": None, "gradient_checkpointing": False,
        "prompt_aware_lora": False,
    }  # fmt: skip
    assert written["model"]["text"] == (tmp_path / "family.yaml").read_text()
    (tmp_path / "family.yaml").write_text("broken: [")
    assert list(written["tasks"]) == ["asr", "er"]
    assert dict(written["answers"]["asr"]) == {
        "instruction": "Transcribe the speech.",
        "join": " ",
        "shortcut": "transcribe_file",
    }
    monkeypatch.chdir("/")
    loaded = PretrainedAudioLLM.from_hparams(source=tmp_path / "run")
    model = loaded.mods.model
    assert model.mowe_encoder.router.top_k == 2 and model.mowe_encoder.weak_dim == 24
    assert model.tasks == ["asr", "er"]
    assert loaded.hparams.max_audio_seconds == 12.0
    assert loaded.decoding == Decoding(max_new_tokens=7, num_beams=1)


def test_a_model_no_family_built_is_not_written(tmp_path, caplog, whisper_dir, llama_dir):
    model = load_family("tiny_mowe", {"whisper_source": whisper_dir, "llm_source": llama_dir})
    model.built_from = None  # as for a model built with !new: in a user's own YAML
    with caplog.at_level(logging.WARNING):
        assert write_inference_folder(tmp_path, model, instructions={}) is None
    assert "was not built by a model family" in caplog.text
    assert not any(tmp_path.iterdir())


def test_a_folder_of_the_earlier_layout_is_refused_by_name(tmp_path):
    (tmp_path / "inference.yaml").write_text("model_family: tiny_mowe\ntasks: [asr]\n")
    for name in ("mowe_encoder", "projector", "llm"):
        torch.save({}, tmp_path / f"{name}.ckpt")
    with pytest.raises(ValueError, match="layout 1 .* written by an earlier speechbrain-mowe"):
        PretrainedAudioLLM.from_hparams(source=tmp_path)
