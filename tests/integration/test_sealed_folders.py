"""A trained model stays what it was tested as, all in fresh processes: the
synthetic recipe (fast configuration) is trained; its folder is exported for
sharing; preparation runs again in the same experiment folder with other
options; then the trained folder, the export and a copy of the folder answer
every test clip exactly as the trainer's hypotheses say, after the files they
were made from are deleted; and a tampered source file stops loading in one
line naming the file and its pinned checksum."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_runs import RECIPES
from ruamel.yaml import YAML as Yaml

from speechbrain_mowe.errors import DEBUG_VARIABLE

TRAIN = RECIPES / "Synthetic" / "MultiTask" / "train.py"
YAML = RECIPES / "Synthetic" / "MultiTask" / "hparams" / "conv.yaml"
BASE = (
    "{objective: ctc, tasks: [asr], encoder: {name: tiny_conv, config: {n_mels: 40, "
    "channels: [32, 32], strides: [2, 2]}}, training: {number_of_epochs: 1, lr: 0.002, "
    "max_batch_duration: 60}}"
)
SMALL = [
    "--valid_size=2",
    "--test_size=4",
    f"--pretrained_encoders={{base: {BASE}}}",
    "--noprogressbar",
]


def _run(*args, cwd=None):
    env = {key: value for key, value in os.environ.items() if key != DEBUG_VARIABLE}
    command = [sys.executable, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=cwd)


def _train(experiment: Path, *extra):
    done = _run(TRAIN, YAML, f"--experiment_folder={experiment}", *SMALL, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _test_manifest(corpus: Path, path: Path) -> Path:
    """The test rows of every task in one manifest."""
    rows = []
    for manifest in sorted(corpus.glob("*_test.csv")):
        with open(manifest, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    with open(path, "w", newline="", encoding="utf-8") as f:
        columns = ["ID", "duration", "wav", "task", "instruction", "answer"]
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _answers(folder: Path, manifest: Path, corpus: Path, output: Path):
    """The answers of ``speechbrain-mowe`` (a fresh process) to the manifest's rows."""
    done = _run("-m", "speechbrain_mowe", folder, "--manifest", manifest, "--data_root", corpus,
                "--output", output, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["id"]: r["answer"] for r in map(json.loads, output.read_text().splitlines())}


def _files(folder: Path):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("sealed")
    _train(root / "experiment", "--train_size=24", "--number_of_epochs=2")
    return root


def test_a_trained_folder_answers_as_tested_after_its_sources_are_made_again(experiment):
    root, folder = experiment, experiment / "experiment" / "conv_mowe" / "seed_1986"
    (corpus,) = (root / "experiment" / "corpus").iterdir()
    manifest = _test_manifest(corpus, root / "test.csv")
    lines = (folder / "test_results" / "test" / "hypotheses.jsonl").read_text().splitlines()
    tested = {r["id"]: r["hypothesis"] for r in map(json.loads, lines)}
    assert len(tested) == 16  # 4 tasks x 4 clips

    done = _run("-m", "speechbrain_mowe", folder, "--export", root / "shared")
    assert done.returncode == 0, done.stderr[-3000:]
    card = (root / "shared" / "README.md").read_text()
    assert "## Training data" in card and "| asr | 24 |" in card
    assert "| test | asr | asr | 4 | WER |" in card and "CIDEr_D" in card
    assert "made by the preparation step `llm`" in card

    made = {kind: _files(root / "experiment" / kind) for kind in ("llm", "encoders")}
    # Preparation again in the same experiment folder, with another corpus size:
    # another corpus, encoder and LLM (its tokenizer learns from other texts).
    _train(root / "experiment", "--train_size=28", "--system=other", "--number_of_epochs=1")
    for kind in ("corpus", "llm", "encoders"):
        assert len(list((root / "experiment" / kind).iterdir())) == 2, kind
    for kind, files in made.items():  # nothing made earlier was written over
        assert {k: v for k, v in _files(root / "experiment" / kind).items() if k in files} == files

    shutil.copytree(folder, root / "copied" / "model")
    for kind in ("llm", "encoders"):  # the originals gone: the folders hold their own
        shutil.rmtree(root / "experiment" / kind)
    for name in ("copied/model", "shared"):
        assert _answers(root / name, manifest, corpus, root / f"{name[:6]}.jsonl") == tested
    assert _answers(folder, manifest, corpus, root / "original.jsonl") == tested

    written = Yaml().load((root / "copied" / "model" / "inference.yaml").read_text())
    llm = root / "copied" / "model" / written["model_sources"]["llm_source"]
    pinned = written["source_checksums"]["llm_source"]["model.safetensors"]
    data = bytearray((llm / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 1
    (llm / "model.safetensors").write_bytes(bytes(data))
    clip = next(corpus.glob("wavs/test/asr/*.wav"))
    done = _run("-m", "speechbrain_mowe", root / "copied" / "model", "--task", "asr", clip,
                "--output", root / "tampered.jsonl")  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert f"{llm / 'model.safetensors'} has changed since the model was trained" in line
    assert f"inference.yaml pins {pinned}" in line


def test_skip_prep_names_what_was_never_made_and_a_task_no_encoder_learns_from(experiment):
    done = _run(TRAIN, YAML, f"--experiment_folder={experiment / 'experiment'}", *SMALL,
                "--train_size=20", "--skip_prep=True")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "was never made (skip_prep is True)" in line, line
    done = _run(TRAIN, YAML, f"--experiment_folder={experiment / 'alone'}", *SMALL,
                "--train_size=20", "--tasks=[speaker_sex]")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert (
        "The pre-trained encoder 'base' (base_checkpoint) learns from the clips of ['asr'], "
        "none of which is in tasks ['speaker_sex']" in line
    ), line
    assert not (experiment / "alone" / "corpus").exists()  # refused before any work
