"""Errors a user causes, seen from the command line: the LibriSpeech recipe's
``train.py`` and preparation script exit with status 1 and one line naming the
key, file, row or column, before anything is built where that is possible;
training on data it cannot read stops and writes no inference folder."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_runs import RECIPES, prepared_short_librispeech, tiny_overrides

from speechbrain_mowe.errors import DEBUG_VARIABLE

TRAIN = RECIPES / "LibriSpeech" / "ASR" / "train.py"
YAML = RECIPES / "LibriSpeech" / "ASR" / "hparams" / "mowe.yaml"
PREPARE = RECIPES / "LibriSpeech" / "librispeech_prepare.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_short_librispeech(tmp_path_factory.mktemp("ls"))


def _run(script, *args, debug=False):
    env = {key: value for key, value in os.environ.items() if key != DEBUG_VARIABLE}
    if debug:
        env[DEBUG_VARIABLE] = "1"
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


def _train(tmp_path, corpus, whisper_dir, llama_dir, *extra, manifests=None, debug=False):
    """``train.py`` on the short corpus with the tiny model; ``extra``
    overrides (``--key=value``) replace the defaults of the same key."""
    data, prepared = corpus
    options = {"data_folder": data, "train_splits": "[train-clean-100]",
               "valid_splits": "[test-clean]", "test_splits": "[test-clean]",
               "skip_prep": True, "manifest_folder": manifests or prepared}  # fmt: skip
    options.update(arg[2:].split("=", 1) for arg in extra)
    args = tiny_overrides(tmp_path / "out", whisper_dir, llama_dir, epochs=1, **options)
    return _run(TRAIN, YAML, *args, debug=debug)


def _one_line(done) -> str:
    """The error line of a failed run, checked to stand alone (no traceback)."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert ": error: " in line and f"{DEBUG_VARIABLE}=1 shows the traceback" in line
    return line


def _copy_manifests(corpus, folder: Path, edit) -> Path:
    """The prepared manifests, with ``edit(rows)`` applied to train-clean-100's."""
    _, prepared = corpus
    folder.mkdir()
    for path in prepared.glob("*.csv"):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if path.stem == "train-clean-100":
            rows = edit(rows)
        with open(folder / path.name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.mark.parametrize("override, expected", [
    ("--lr=abc", "--lr=abc: expected a number (mowe.yaml has lr: 0.0001)"),
    ("--number_of_epochs=", "--number_of_epochs=: expected a number"),
    ("--lowercase=maybe", "--lowercase=maybe: expected true or false"),
    ("--train_splits=train-clean-100", "--train_splits=train-clean-100: expected a list"),
])  # fmt: skip
def test_a_malformed_override_names_the_key_before_anything_is_built(
    tmp_path, corpus, whisper_dir, llama_dir, override, expected
):
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, override)
    assert expected in _one_line(done)
    assert not (tmp_path / "out").exists()


def test_the_traceback_is_shown_on_request(tmp_path, corpus, whisper_dir, llama_dir):
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, "--lr=abc", debug=True)
    assert done.returncode == 1 and "Traceback" in done.stderr and "OverrideError" in done.stderr


def test_an_unknown_model_family_is_one_line(tmp_path, corpus, whisper_dir, llama_dir):
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, "--model_family=nope")
    assert "nope" in _one_line(done)


def test_training_on_clips_it_cannot_read_stops_and_writes_no_model(
    tmp_path, corpus, whisper_dir, llama_dir
):
    missing = tmp_path / "moved_away"
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, f"--data_folder={missing}")
    line = _one_line(done)
    manifest = corpus[1] / "train-clean-100.csv"
    assert "Epoch 1 could not read 7 of its 7 clips (100%, more than max_skipped_share=0.5)" in line
    assert f"manifests {manifest}" in line and f"data_root {missing}" in line
    assert f"{missing}/train-clean-100/" in line and "(file not found)" in line
    assert not (tmp_path / "out" / "inference.yaml").exists()


@pytest.mark.parametrize("edit, expected", [
    (lambda rows: [{k: v for k, v in r.items() if k != "answer"} for r in rows],
     "train-clean-100.csv: no 'answer' column; a manifest for training needs"),
    (lambda rows: [{**r, "answer": "" if i == 2 else r["answer"]} for i, r in enumerate(rows)],
     "train-clean-100.csv, line 4 (id '2-20-0000'), column 'answer': empty answer"),
    (lambda rows: [{**r, "task": "xyz" if i == 0 else r["task"]} for i, r in enumerate(rows)],
     "train-clean-100.csv, line 2 (id '1-10-0000'), column 'task': unknown task 'xyz'"),
])  # fmt: skip
def test_a_bad_training_manifest_is_refused_by_file_row_and_column(
    tmp_path, corpus, whisper_dir, llama_dir, edit, expected
):
    manifests = _copy_manifests(corpus, tmp_path / "manifests", edit)
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, manifests=manifests)
    assert expected in _one_line(done)
    assert "Trainable Parameters" not in done.stdout + done.stderr  # before the model was built


def test_rows_with_empty_answers_are_skipped_and_counted_when_asked(
    tmp_path, corpus, whisper_dir, llama_dir
):
    edit = lambda rows: [{**r, "answer": "" if i < 2 else r["answer"]} for i, r in enumerate(rows)]  # noqa: E731
    manifests = _copy_manifests(corpus, tmp_path / "manifests", edit)
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, "--invalid_rows=skip",
                  manifests=manifests)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    logged = done.stdout + done.stderr
    assert "train-clean-100.csv: 2 unusable rows skipped, e.g." in logged
    assert "line 2 (id '1-10-0000'), column 'answer': empty answer" in logged
    assert (tmp_path / "out" / "inference.yaml").exists()


def test_a_missing_corpus_folder_is_one_line_from_the_preparation(tmp_path):
    done = _run(PREPARE, "--data_folder", tmp_path / "nowhere", "--save_folder", tmp_path / "m",
                "--splits", "dev-clean")  # fmt: skip
    assert str(tmp_path / "nowhere") in _one_line(done)


def test_a_missing_corpus_folder_is_one_line_from_train(tmp_path, corpus, whisper_dir, llama_dir):
    done = _train(tmp_path, corpus, whisper_dir, llama_dir, f"--data_folder={tmp_path / 'x'}",
                  "--skip_prep=False", f"--manifest_folder={tmp_path / 'm'}")  # fmt: skip
    assert str(tmp_path / "x") in _one_line(done)
