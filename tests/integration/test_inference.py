"""Inference with a trained model: the folder training writes, PretrainedAudioLLM,
long audio and the ``speechbrain-mowe`` command, on the multi-task recipe
trained for two epochs on the fixture corpora."""

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from speechbrain.utils.data_utils import batch_pad_right
from speechbrain.utils.parameter_transfer import Pretrainer

sys.path.insert(0, str(Path(__file__).parent))
from recipe_runs import (  # noqa: E402
    load_train_script,
    make_corpora,
    multitask_arguments,
    tiny_overrides,
)

import speechbrain_mowe.inference as inference  # noqa: E402
from speechbrain_mowe.cli import main  # noqa: E402
from speechbrain_mowe.dataio import load_audio, load_manifest, save_audio  # noqa: E402
from speechbrain_mowe.inference import LongAudioError, PretrainedAudioLLM  # noqa: E402

#: Test set -> (its manifest in the run's manifest folder, its corpus).
TEST_SETS = {
    "librispeech": ("librispeech/test-clean.csv", "librispeech"),
    "covost2": ("covost2/en_de_test.csv", "covost"),
    "iemocap": ("iemocap/fold_2/test.csv", "iemocap"),
    "clotho": ("clotho/evaluation.csv", "clotho"),
}
#: Pauses of the 70 s file, in seconds.
PAUSES = [(27.0, 27.6), (52.0, 52.6)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, whisper_dir, llama_dir):
    """The multi-task recipe trained two epochs: its output folder and corpora."""
    root = tmp_path_factory.mktemp("multitask")
    corpora = make_corpora(root / "corpora")
    script = load_train_script("MultiTask/train.py")
    argv = [str(Path(script.__file__).parent / "hparams" / "mowe.yaml")]
    argv += multitask_arguments(corpora)
    script.main(argv + tiny_overrides(root / "out", whisper_dir, llama_dir))
    return root / "out", corpora


@pytest.fixture(scope="module")
def model(run):
    return PretrainedAudioLLM.from_hparams(source=run[0])


def _rows(run, test_set):
    out, corpora = run
    manifest, corpus = TEST_SETS[test_set]
    return load_manifest(out / "manifests" / manifest, corpora[corpus])


def _hypotheses(out, test_set):
    path = out / "test_results" / test_set / "hypotheses.jsonl"
    return {r["id"]: r["hypothesis"] for r in map(json.loads, path.read_text().splitlines())}


def _records(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """70 s of noise with two pauses."""
    gen = torch.Generator().manual_seed(3)
    wav = 0.1 * torch.randn(70 * 16000, generator=gen)
    for start, end in PAUSES:
        wav[int(start * 16000) : int(end * 16000)] = 0.0
    path = tmp_path_factory.mktemp("long") / "talk.wav"
    save_audio(path, wav, 16000)
    return path


def test_training_writes_the_inference_folder(run):
    out, _ = run
    assert {"inference.yaml", "model.ckpt"} <= {p.name for p in out.iterdir()}
    assert "librispeech_folder" in (out / "hyperparams.yaml").read_text()  # the training copy
    text = (out / "inference.yaml").read_text()
    assert "!apply:speechbrain_mowe.families.load_family" in text
    assert "speechbrain.utils.parameter_transfer.Pretrainer" in text
    first = {}
    for test_set in TEST_SETS:
        for row in _rows(run, test_set).values():
            first.setdefault(row["task"], row["instruction"])
    assert "Answer with one of: neutral, happy, angry, sad." in first["er"]
    assert "German" in first["ast"]
    model = PretrainedAudioLLM.from_hparams(source=out)
    assert {task: a["instruction"] for task, a in model.hparams.answers.items()} == first
    assert model.hparams.answers["er"]["join"] is None  # a long file's label: most seconds
    assert model.hparams.tasks == ["asr", "ast", "er", "aac"]
    assert model.hparams.max_audio_seconds == 30.0  # the tiny Whisper's window
    assert (model.hparams.max_new_tokens, model.hparams.num_beams) == (8, 1)
    assert model.hparams.precision == "fp32" and model.hparams.long_audio == "refuse"
    assert isinstance(model.hparams.pretrainer, Pretrainer)


SUBPROCESS = """
import json, sys
from speechbrain.utils.data_utils import batch_pad_right
from speechbrain_mowe.dataio import load_audio, load_manifest
from speechbrain_mowe.inference import PretrainedAudioLLM

folder, manifests = sys.argv[1], json.loads(sys.argv[2])
model = PretrainedAudioLLM.from_hparams(source=folder)
answers = {}
for path, root in manifests:
    rows = load_manifest(path, root)
    wavs, lens = batch_pad_right([load_audio(row["wav"]) for row in rows.values()])
    texts = model.generate_batch(
        wavs, lens, [r["instruction"] for r in rows.values()], [r["task"] for r in rows.values()]
    )
    answers.update(zip(rows, texts))
print(json.dumps(answers))
"""


def test_a_fresh_process_gives_the_trainers_hypotheses(run):
    out, corpora = run
    manifests = [
        (str(out / "manifests" / manifest), str(corpora[corpus]))
        for manifest, corpus in TEST_SETS.values()
    ]
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(out), json.dumps(manifests)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.splitlines()[-1])
    expected = {}
    for test_set in TEST_SETS:
        expected.update(_hypotheses(out, test_set))
    assert len(expected) == 15
    assert answers == expected


def test_loading_writes_nothing_and_uses_the_strict_hooks(run, tmp_path):
    out, _ = run

    def files():  # log.txt is the training's log, still open in this process
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "log.txt"}

    before = files()
    PretrainedAudioLLM.from_hparams(source=out)
    assert files() == before
    # A copy of the folder with a checkpoint that lacks the trained weights:
    # SpeechBrain's Pretrainer loads it through TrainableStateMixin's hook, which refuses it.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(out / "inference.yaml", copy / "inference.yaml")
    shutil.copytree(out / "sources", copy / "sources")
    torch.save({}, copy / "model.ckpt")
    with pytest.raises(KeyError, match="lacks .* trainable entries of MoWEAudioLLM"):
        PretrainedAudioLLM.from_hparams(source=copy)
    # With a savedir, the files are linked there, and a second load reuses the links.
    for _ in range(2):
        PretrainedAudioLLM.from_hparams(source=out, savedir=tmp_path / "links")
    assert (tmp_path / "links" / "model.ckpt").resolve() == (out / "model.ckpt").resolve()


def test_batched_answers_equal_one_at_a_time(run, model):
    rows = list(_rows(run, "iemocap").values())[:4] + list(_rows(run, "covost2").values())
    assert len({row["duration"] for row in rows}) >= 3
    wavs, lens = batch_pad_right([load_audio(row["wav"]) for row in rows])
    instructions = [row["instruction"] for row in rows]
    tasks = [row["task"] for row in rows]
    batched = model.generate_batch(wavs, lens, instructions, tasks)
    alone = [model.generate_file(row["wav"], row["instruction"], task=row["task"]) for row in rows]
    assert batched == alone
    assert model.translate_file(rows[-1]["wav"]) == alone[-1]  # the stored instruction


def test_long_audio_is_refused_or_answered_in_pieces_cut_at_pauses(model, long_file, monkeypatch):
    with pytest.raises(LongAudioError, match=r"talk.wav' is 70.0 s long, longer than the 30 s"):
        model.transcribe_file(long_file)

    bounds, answers = [], []
    boundaries, generate = inference.chunk_boundaries, model.generate_batch

    def spy_bounds(*args, **kwargs):
        bounds.extend(boundaries(*args, **kwargs))
        return list(bounds)

    def spy_generate(*args, **kwargs):
        answers.append(generate(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(inference, "chunk_boundaries", spy_bounds)
    monkeypatch.setattr(model, "generate_batch", spy_generate)
    text = model.transcribe_file(long_file, long_audio="chunk")

    assert len(bounds) == 3 and len(answers) == 1 and len(answers[0]) == 3  # one batch
    assert bounds[0][0] == 0 and bounds[-1][1] == 70 * 16000
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
    assert all(end - start <= 30 * 16000 for start, end in bounds)
    for (_, cut), (pause_start, pause_end) in zip(bounds, PAUSES):
        assert pause_start * 16000 < cut < pause_end * 16000
    assert text == " ".join(answer for answer in answers[0] if answer)


def test_chunk_boundaries_without_pauses_stay_in_the_window():
    wav = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    bounds = inference.chunk_boundaries(wav, window=16_000)
    assert bounds[0][0] == 0 and bounds[-1][1] == 100_000
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
    for start, end in bounds[:-1]:
        assert 0.8 * 16_000 <= end - start <= 16_000
    assert inference.chunk_boundaries(wav[:16_000], window=16_000) == [(0, 16_000)]


def test_errors_name_what_is_wrong(run, model, tmp_path, monkeypatch):
    out, _ = run
    with pytest.raises(FileNotFoundError, match="has no inference.yaml. Training writes it"):
        PretrainedAudioLLM.from_hparams(source=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        PretrainedAudioLLM.from_hparams(source=tmp_path / "moved")
    with pytest.raises(FileNotFoundError, match="reads llm_source from '/nowhere/llm'"):
        PretrainedAudioLLM.from_hparams(
            source=out, overrides={"model_sources": {"llm_source": "/nowhere/llm"}}
        )
    wav = load_audio(_rows(run, "librispeech")["1089-134686-0000"]["wav"])[None]
    with pytest.raises(ValueError, match="Unknown task.* speaker_sex: this model's tasks are asr"):
        model.generate_batch(wav, None, "Who speaks?", ["speaker_sex"])
    with pytest.raises(ValueError, match="router chooses its experts per task: pass tasks"):
        model.generate_batch(wav, None, "Who speaks?")
    # A model tested on ASR only (as the LibriSpeech recipe's):
    monkeypatch.setattr(model.hparams, "answers", {"asr": model.hparams.answers["asr"]})
    with pytest.raises(ValueError, match="not trained on task 'aac'; its tasks are: asr"):
        model.caption_file("any.wav")


def test_command_line_resumes_and_reports_errors(run, model, long_file, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out, _ = run
    rows = _rows(run, "librispeech") | _rows(run, "clotho")
    files = [row["wav"] for row in rows.values()]
    output = tmp_path / "out.jsonl"
    argv = [str(out), "--task", "asr", *files, "--output", str(output), "--batch_size", "1"]
    assert main(argv) == 0
    records = _records(output)
    assert [r["id"] for r in records] == files
    assert [r["answer"] for r in records] == [model.transcribe_file(f) for f in files]
    assert {r["instruction"] for r in records} == {"Transcribe the speech."}

    written = output.read_bytes()
    caplog.clear()
    assert main(argv) == 0
    assert output.read_bytes() == written
    assert "2 of 2 inputs already answered in" in caplog.text

    output.write_bytes(written[:-10])  # killed while writing the last line
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    argv[3:3] = [str(bad), str(long_file)]
    caplog.clear()
    assert main(argv) == 1
    assert "cut short" in caplog.text
    assert "1 answered, 1 skipped" in caplog.text and "2 failed" in caplog.text
    records = _records(output)
    assert [r["id"] for r in records] == [files[0], str(bad), str(long_file), files[1]]
    assert output.read_bytes().endswith(written.splitlines(keepends=True)[-1])
    assert "unreadable audio" in records[1]["error"] and "70.0 s long" in records[2]["error"]
    caplog.clear()
    assert main(argv + ["--long_audio", "chunk"]) == 1  # failed inputs are tried again
    assert "1 answered, 2 skipped" in caplog.text and "1 failed" in caplog.text
    records = _records(output)[4:]
    assert [r["id"] for r in records] == [str(bad), str(long_file)]
    assert "error" in records[0] and records[1]["answer"] == model.transcribe_file(
        long_file, long_audio="chunk"
    )


def test_command_line_answers_a_manifest_with_its_rows_tasks(run, tmp_path):
    out, corpora = run
    output = tmp_path / "out.jsonl"
    manifest = out / "manifests" / "iemocap" / "fold_2" / "test.csv"
    argv = [str(out), "--manifest", str(manifest), "--data_root", str(corpora["iemocap"])]
    assert main(argv + ["--output", str(output)]) == 0
    records = _records(output)
    assert {r["id"]: r["answer"] for r in records} == _hypotheses(out, "iemocap")
    rows = _rows(run, "iemocap")
    assert all(r["task"] == "er" and r["instruction"] == rows[r["id"]]["instruction"]
               for r in records)  # fmt: skip
    assert all(r["wav"] == rows[r["id"]]["wav"] for r in records)


def _write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_command_line_keeps_going_past_rows_it_cannot_answer(run, tmp_path):
    out, corpora = run
    with open(out / "manifests" / "iemocap" / "fold_2" / "test.csv", newline="") as f:
        first, second = list(csv.DictReader(f))[:2]
    rows = [first, {**first, "ID": "unknown_task", "task": "xyz"},
            {**first, "ID": "missing", "wav": "$data_root/nowhere.wav"},
            {**first, "ID": "folder", "wav": "$data_root"}, second]  # fmt: skip
    _write_rows(tmp_path / "m.csv", rows)
    output = tmp_path / "out.jsonl"
    argv = [str(out), "--manifest", str(tmp_path / "m.csv"), "--data_root",
            str(corpora["iemocap"]), "--batch_size", "8", "--output", str(output)]  # fmt: skip
    assert main(argv) == 1  # one batch: its good rows answered, then status 1
    records = {r["id"]: r for r in _records(output)}
    assert list(records) == [row["ID"] for row in rows]
    expected = _hypotheses(out, "iemocap")
    assert [records[row["ID"]]["answer"] for row in (first, second)] == [
        expected[first["ID"]],
        expected[second["ID"]],
    ]
    assert records["unknown_task"]["error"].startswith("unknown task 'xyz' (the model's tasks:")
    assert records["missing"]["error"].startswith("file not found: ")
    assert records["folder"]["error"].startswith("a folder, not an audio file: ")


def test_command_line_refuses_a_manifest_without_a_column_in_one_line(run, tmp_path):
    out, corpora = run
    with open(out / "manifests" / "iemocap" / "fold_2" / "test.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "task"} for row in csv.DictReader(f)]
    _write_rows(tmp_path / "m.csv", rows)
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_mowe", str(out), "--manifest", str(tmp_path / "m.csv"),
         "--data_root", str(corpora["iemocap"]), "--output", str(tmp_path / "o.jsonl")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"speechbrain-mowe: error: {tmp_path / 'm.csv'}: no 'task' column; a manifest for "
            "inference needs ID, wav, task, instruction (it has ID, duration, wav, instruction, "
        )
    )
    assert not (tmp_path / "o.jsonl").exists()


def test_python_m_help():
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_mowe", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--long_audio" in done.stdout


def test_lora_scale_is_the_tested_one_and_set_by_the_api_and_the_command_line(run, tmp_path):
    out, corpora = run
    assert "lora_scale: 1.0" in (out / "inference.yaml").read_text()
    manifest = out / "manifests" / "iemocap" / "fold_2" / "test.csv"
    argv = [str(out), "--manifest", str(manifest), "--data_root", str(corpora["iemocap"])]
    assert main(argv + ["--output", str(tmp_path / "zero.jsonl"), "--lora_scale", "0"]) == 0
    bare = PretrainedAudioLLM.from_hparams(source=out)
    assert bare.lora_scale == 1.0
    bare.lora_scale = 0.0
    assert bare.mods.model.llm.lora_scale == 0.0
    rows = list(_rows(run, "iemocap").values())
    wavs, lens = batch_pad_right([load_audio(row["wav"]) for row in rows])
    answers = bare.generate_batch(wavs, lens, [r["instruction"] for r in rows], "er")
    expected = dict(zip(_rows(run, "iemocap"), answers))
    assert {r["id"]: r["answer"] for r in _records(tmp_path / "zero.jsonl")} == expected
    assert expected != _hypotheses(out, "iemocap")  # the trained LoRA's answers


def test_the_merged_folder_gives_the_same_answers_without_lora(run, model, tmp_path):
    out, corpora = run
    merged_folder = tmp_path / "merged"
    assert main([str(out), "--export_merged", str(merged_folder)]) == 0
    text = (merged_folder / "inference.yaml").read_text()
    assert "merged_lora: true" in text and "    llm_source: llm\n" in text  # inside the folder
    saved = torch.load(merged_folder / "model.ckpt", weights_only=True)
    assert saved and not any("lora_" in key for key in saved)
    merged = PretrainedAudioLLM.from_hparams(source=merged_folder)
    assert merged.mods.model.llm._lora_layers() == [] and model.mods.model.llm._lora_layers()
    rows = list(_rows(run, "librispeech").values()) + list(_rows(run, "clotho").values())
    wavs, lens = batch_pad_right([load_audio(row["wav"]) for row in rows])
    instructions = [row["instruction"] for row in rows]
    tasks = [row["task"] for row in rows]
    assert merged.generate_batch(wavs, lens, instructions, tasks) == model.generate_batch(
        wavs, lens, instructions, tasks
    )


def test_command_line_writes_a_harness_predictions_file(run, tmp_path):
    out, corpora = run
    rows = _rows(run, "clotho")
    items = [{"id": utt, "audio_id": row["wav"], "question": "What do you hear?",
              "choices": ["rain", "birds"], "answer": "rain", "dataset": "clotho",
              "task": "sound"} for utt, row in rows.items()]  # fmt: skip
    (tmp_path / "mmau.json").write_text(json.dumps(items), encoding="utf-8")
    argv = [str(out), "--benchmark", "mmau", "--manifest", str(tmp_path / "mmau.json"),
            "--data_root", "/", "--task", "aac", "--output", str(tmp_path / "answers.jsonl"),
            "--benchmark_output", str(tmp_path / "predictions.json")]  # fmt: skip
    assert main(argv) == 0
    answers = {r["id"]: r["answer"] for r in _records(tmp_path / "answers.jsonl")}
    written = json.loads((tmp_path / "predictions.json").read_text())
    assert [{k: v for k, v in w.items() if k != "model_prediction"} for w in written] == items
    assert [w["model_prediction"] for w in written] == [answers[item["id"]] for item in items]
    assert all(r["instruction"] == "What do you hear? Choose one of: rain; birds."
               for r in _records(tmp_path / "answers.jsonl"))  # fmt: skip
