"""The benchmark scripts: each answers --help, and runs at its smallest shapes,
printing its table and writing its JSON (the figures themselves are not
asserted: they are measurements, published in the README)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "timing.py")


def _run(script, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                          text=True, timeout=600, cwd=BENCHMARKS)  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    done = _run(script, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


@pytest.mark.parametrize("script, args, rows", [
    ("encoder_cost.py", ["--repeats=1", "--batch=2", "--seconds=1"], 8),
    ("loss_memory.py", ["--vocab=2000", "--repeats=1", "--audio_frames=50"], 2),
    ("whisper_padding.py", ["--repeats=1", "--seconds", "1", "2"], 2),
    ("generation.py", ["--repeats=1", "--batch", "1", "2", "--tokens=5"], 6),
    ("gpu.py", ["--smallest"], 38),  # 7 tables: 9 + 6 + 2 + 3 + 4 + 6 + 2 rows, 6 more headers
    ("feature_cache.py", ["--repeats=1", "--clips=8", "--seconds=1"], 4),
    ("merged_decoding.py", ["--repeats=1", "--tokens=5"], 4),
    ("training_step.py", ["--repeats=1", "--batch", "1", "2", "--seconds=1"], 10),
])  # fmt: skip
def test_a_small_run_prints_its_table_and_writes_json(tmp_path, script, args, rows):
    done = _run(script, *args, f"--json={tmp_path / 'out.json'}")
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == rows + 1  # the header and a row per figure
    data = json.loads((tmp_path / "out.json").read_text())
    assert set(data) == {"machine", "arguments", "results"}
