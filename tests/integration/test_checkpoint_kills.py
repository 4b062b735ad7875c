"""Real SIGKILLs at many points of a checkpoint write: every rerun of the same
command resumes from the newest complete checkpoint and trains exactly as the
uninterrupted run did."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_runs import prepared_short_librispeech, read_metrics

SCRIPT = Path(__file__).with_name("killed_run.py")
#: Files a checkpoint of the recipe holds (its parameter files and CKPT.yaml).
FILES_PER_CHECKPOINT = 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_short_librispeech(tmp_path_factory.mktemp("ls"))


def _run(record, corpus, whisper_dir, llama_dir, output, kill=None):
    data, manifests = corpus
    args = [record, data, manifests, whisper_dir, llama_dir, output] + ([kill] if kill else [])
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _steps(record: Path):
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_every_rerun_after_a_kill_in_a_checkpoint_write_resumes_exactly(
    tmp_path, corpus, whisper_dir, llama_dir
):
    whole = tmp_path / "whole.jsonl"
    assert _run(whole, corpus, whisper_dir, llama_dir, tmp_path / "whole").returncode == 0
    expected = {(s["epoch"], s["step"]): s["loss"] for s in _steps(whole)}
    checkpoint = next((tmp_path / "whole" / "save").glob("CKPT+*"))
    assert len(list(checkpoint.iterdir())) == FILES_PER_CHECKPOINT

    # Three complete checkpoints first, then a kill inside every file of the
    # next write, before its rename, and while the previous one is removed;
    # each rerun is the same command, killed at the next point.
    kills = [f"file:{3 * FILES_PER_CHECKPOINT + 1}"]
    kills += [f"file:{n}" for n in range(1, FILES_PER_CHECKPOINT + 1)]
    kills += ["rename:1", "delete:1", "file:2"]
    output, record = tmp_path / "killed", tmp_path / "killed.jsonl"
    runs = []
    for kill in kills:
        done = _run(record, corpus, whisper_dir, llama_dir, output, kill)
        assert done.returncode == -signal.SIGKILL, (kill, done.stderr[-2000:])
        runs.append(len(_steps(record)))
    done = _run(record, corpus, whisper_dir, llama_dir, output)
    assert done.returncode == 0, done.stderr[-3000:]

    steps = _steps(record)
    # Every step any run trained, before or after a kill, has the loss of the
    # uninterrupted run at that point: each rerun resumed where the last
    # complete checkpoint left off.
    for step in steps:
        assert step["loss"] == pytest.approx(expected[step["epoch"], step["step"]], abs=1e-6), step
    assert {(s["epoch"], s["step"]) for s in steps} == set(expected)
    first_rerun = steps[runs[0]]
    assert (first_rerun["epoch"], first_rerun["step"]) != (1, 1)  # it did not start over
    assert read_metrics(output, "test-clean") == read_metrics(tmp_path / "whole", "test-clean")
    # The remains of the interrupted writes are gone after the next save.
    assert not [p.name for p in (output / "save").iterdir() if p.name.startswith(".")]
