"""The inference folder: what inference.yaml records and how it rebuilds the model."""

import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from ruamel.yaml import YAML

from speechbrain_mowe.export import write_inference_folder
from speechbrain_mowe.families import FAMILIES_FOLDER, load_family
from speechbrain_mowe.inference import PretrainedAudioLLM
from speechbrain_mowe.model import Decoding
from speechbrain_mowe.sealing import SealError, open_sources, seal_sources
from speechbrain_mowe.tiny import make_tiny_llm


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
    assert written["format"] == 3
    assert written["model_family"] == str(tmp_path / "family.yaml")
    sources = dict(written["model_sources"])  # the sources the family uses, sealed inside
    assert sorted(sources) == ["llm_source", "whisper_source"]
    originals = {"whisper_source": tmp_path / "whisper", "llm_source": Path(llama_dir)}
    for key, original in originals.items():
        sealed = tmp_path / "run" / sources[key]
        assert sources[key].startswith("sources/") and sealed.is_dir()
        files = sorted(p.relative_to(original).as_posix() for p in original.rglob("*")
                       if p.is_file())  # fmt: skip
        assert sorted(written["source_checksums"][key]) == files
        for name in files:  # hard links: the same bytes, no disk used
            assert (sealed / name).stat().st_ino == (original / name).stat().st_ino
    # Every setting's value, and the family file itself: later edits of the file
    # (or of its defaults) do not change the folder's model.
    assert dict(written["model_settings"]) == {
        "weak_dim": 24, "top_k": 2, "aux_weight": 0.1, "long_audio": "refuse",
        "attn_implementation": None, "gradient_checkpointing": False,
        "prompt_aware_lora": False, "projector_norm": 1.0,
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


def _trained(tmp_path, whisper_dir, llama_dir, seal="link"):
    """A tiny model with random trained parts, its sources copied to ``tmp_path``,
    written to ``tmp_path / "run"``; its answer to a clip."""
    shutil.copytree(whisper_dir, tmp_path / "whisper")
    shutil.copytree(llama_dir, tmp_path / "llm")
    sources = {"whisper_source": tmp_path / "whisper", "llm_source": tmp_path / "llm"}
    torch.manual_seed(0)
    model = load_family("tiny_mowe", sources, tasks=["asr"])
    write_inference_folder(tmp_path / "run", model, instructions={"asr": "Transcribe."},
                           decoding=Decoding(max_new_tokens=6), seal=seal)  # fmt: skip
    return tmp_path / "run"


def _answer(folder, wavs):
    loaded = PretrainedAudioLLM.from_hparams(source=folder)
    return loaded.generate_batch(*wavs, "Transcribe.", tasks="asr")


def test_a_sealed_folder_answers_the_same_moved_and_after_its_sources_change(
    tmp_path, whisper_dir, llama_dir, wavs
):
    run = _trained(tmp_path, whisper_dir, llama_dir)
    answers = _answer(run, wavs)
    # The sources are made again in place (new files under the old names) ...
    for original in (tmp_path / "llm").iterdir():
        data = original.read_bytes()
        original.unlink()
        original.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    shutil.rmtree(tmp_path / "whisper")
    # ... and the folder is moved: it still answers as it did.
    moved = shutil.move(run, tmp_path / "elsewhere" / "model")
    assert _answer(moved, wavs) == answers


@pytest.mark.parametrize("damage, message", [
    (lambda file: file.write_bytes(file.read_bytes()[:-1] + b"x"),
     r"{file} has changed since the model was trained: its sha256 is [0-9a-f]{{64}}, "
     r"inference.yaml pins {checksum} \(source llm_source\)"),
    (lambda file: file.unlink(),
     r"{file} is missing: the model's source llm_source was sealed with it "
     r"\(sha256 {checksum}\)"),
])  # fmt: skip
def test_a_changed_or_missing_source_file_is_refused_in_one_line(
    tmp_path, whisper_dir, llama_dir, damage, message
):
    run = _trained(tmp_path, whisper_dir, llama_dir, seal="copy")
    written = YAML().load((run / "inference.yaml").read_text())
    name = "model.safetensors"
    file = run / written["model_sources"]["llm_source"] / name
    assert file.stat().st_nlink == 1  # copied, not linked
    damage(file)
    checksum = written["source_checksums"]["llm_source"][name]
    with pytest.raises(SealError) as error:
        PretrainedAudioLLM.from_hparams(source=run)
    assert "\n" not in str(error.value)
    assert re.fullmatch(message.format(file=re.escape(str(file)), checksum=checksum) + ".*",
                        str(error.value))  # fmt: skip


def test_writing_again_replaces_the_sealing_whole(tmp_path, whisper_dir, llama_dir, wavs):
    run = _trained(tmp_path, whisper_dir, llama_dir)
    first = {p.name for p in (run / "sources").iterdir()}
    make_tiny_llm(tmp_path / "llm2", seed=5)
    model = load_family("tiny_mowe", {"whisper_source": tmp_path / "whisper",
                                      "llm_source": tmp_path / "llm2"}, tasks=["asr"])  # fmt: skip
    write_inference_folder(run, model, instructions={"asr": "Transcribe."})
    second = {p.name for p in (run / "sources").iterdir()}
    assert len(first) == len(second) == 1 and first != second  # the old one removed
    _answer(run, wavs)


def test_a_folder_of_layout_2_still_loads_with_a_warning(
    tmp_path, whisper_dir, llama_dir, wavs, caplog
):
    run = _trained(tmp_path, whisper_dir, llama_dir)
    answers = _answer(run, wavs)
    text = (run / "inference.yaml").read_text()
    written = YAML().load(text)
    sealed = {key: str(run / value) for key, value in written["model_sources"].items()}
    # What version 2 wrote: absolute sources, no checksums, no model_folder.
    head, model = text.split("model_folder: !PLACEHOLDER")[0], text.split("\nmodel:")[1]
    head = head.replace("format: 3", "format: 2")
    for key, value in written["model_sources"].items():
        head = head.replace(f"{key}: {value}", f"{key}: {sealed[key]}")
    model = re.sub(r"sources: !apply:speechbrain_mowe.sealing.open_sources\n(        .*\n)+",
                   "sources: !ref <model_sources>\n", model)  # fmt: skip
    (run / "inference.yaml").write_text(head + "model:" + model)
    with caplog.at_level(logging.WARNING):
        assert _answer(run, wavs) == answers
    assert "is of layout 2: its sources" in caplog.text


def test_a_hub_source_is_pinned_by_its_cached_revision(tmp_path, monkeypatch):
    import huggingface_hub

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    named, checksums, revisions = seal_sources(tmp_path / "run", {"llm_source": "org/tiny"})
    assert named == {"llm_source": "org/tiny"} and checksums == {}
    assert revisions == {"llm_source": revision}
    opened = open_sources(tmp_path / "run", named, checksums, revisions)
    assert Path(opened["llm_source"]) == repo / "snapshots" / revision


def test_a_task_the_exporting_process_does_not_know_is_exported_as_it_was_written(
    tmp_path, whisper_dir, llama_dir
):
    from speechbrain_mowe.deployment import export_portable

    model = load_family("tiny_mowe", {"whisper_source": whisper_dir, "llm_source": llama_dir})
    recipe_task = {"instruction": "Is it a man?", "join": None, "shortcut": "classify_sex_file"}
    instructions = {"asr": "Transcribe.", "sex": recipe_task}
    write_inference_folder(tmp_path / "run", model, instructions=instructions)
    shared = export_portable(tmp_path / "run", tmp_path / "shared")
    written = YAML().load((shared / "inference.yaml").read_text())
    assert dict(written["answers"]["sex"]) == recipe_task
    card = (shared / "README.md").read_text()
    assert "| sex | Is it a man? |" in card and "model.classify_sex_file(" in card
