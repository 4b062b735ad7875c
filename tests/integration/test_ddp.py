"""Two CPU processes (gloo) train and evaluate like one: no hang on a dataset
that does not split evenly, and gathered metrics equal a single process's."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from recipe_runs import (  # noqa: E402
    RECIPES,
    SHORT_UTTERANCES,
    load_train_script,
    make_short_librispeech,
    read_metrics,
    tiny_overrides,
)

SCRIPT = RECIPES / "LibriSpeech" / "ASR" / "train.py"
YAML = RECIPES / "LibriSpeech" / "ASR" / "hparams" / "mowe.yaml"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_processes_match_one(tmp_path, whisper_dir, llama_dir):
    corpus = make_short_librispeech(tmp_path / "data")
    out = tmp_path / "ddp"
    args = [str(YAML), f"--data_folder={corpus}", "--train_splits=[train-clean-100]"]
    args += ["--test_splits=[test-clean]"]
    args += tiny_overrides(out, whisper_dir, llama_dir, max_batch_duration=2.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={_free_port()}", str(SCRIPT), *args,
               "--distributed_backend=gloo"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    assert "epoch: 2" in log and "valid dev-clean/asr/WER" in log
    ddp = read_metrics(out, "test-clean")
    hypotheses = (out / "test_results" / "test-clean" / "hypotheses.jsonl").read_text()
    assert sorted(json.loads(line)["id"] for line in hypotheses.splitlines()) == sorted(
        SHORT_UTTERANCES
    )

    # One process scores the same checkpoint.
    single = tmp_path / "single"
    shutil.copytree(out, single, ignore=shutil.ignore_patterns("test_results"))
    script = load_train_script("LibriSpeech/ASR/train.py")
    args[args.index(f"--output_folder={out}")] = f"--output_folder={single}"
    script.main(args + ["--test_only"])
    alone = read_metrics(single, "test-clean")
    assert alone.loss == pytest.approx(ddp.loss, abs=1e-5)
    assert (alone.groups, alone.routing) == (ddp.groups, ddp.routing)
