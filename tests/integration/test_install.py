"""A non-editable install: the package built as a wheel and installed into a
fresh virtual environment trains a recipe from the checkout with a model family
it ships, then loads the inference folder and answers a file."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipe_runs import RECIPES, make_short_librispeech, tiny_overrides  # noqa: E402

ROOT = RECIPES.parent


def _run(command, cwd, **kwargs):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_a_wheel_in_a_fresh_venv_trains_loads_and_answers(tmp_path, whisper_dir, llama_dir):
    # Built from a copy: a build leaves build/ and *.egg-info next to the sources,
    # whose stale files a later build of the checkout could ship.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "build", "*.egg-info", "__pycache__"))  # fmt: skip
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist"), str(source)], cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("speechbrain_mowe-*.whl")
    # A new environment whose dependencies (torch, speechbrain, ...) are this one's
    # packages, read through a .pth file; this one's editable install is not among them.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = str(venv / ("Scripts" if os.name == "nt" else "bin") / "python")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
         cwd=tmp_path)  # fmt: skip
    where = _run([python, "-c", "import speechbrain_mowe; print(speechbrain_mowe.__file__)"],
                 cwd=tmp_path)  # fmt: skip
    assert Path(where.strip()).is_relative_to(site)

    corpus = make_short_librispeech(tmp_path / "data")
    out = tmp_path / "run"
    recipe = RECIPES / "LibriSpeech" / "ASR"
    argv = [str(recipe / "hparams" / "mowe.yaml"), f"--data_folder={corpus}",
            "--train_splits=[train-clean-100]", "--valid_splits=[dev-clean]",
            "--test_splits=[test-clean]", "--lowercase=True"]  # fmt: skip
    argv += tiny_overrides(out, whisper_dir, llama_dir, max_batch_duration=3.0)
    _run([python, str(recipe / "train.py"), *argv], cwd=tmp_path)
    (hypothesis,) = [
        json.loads(line)
        for line in (out / "test_results" / "test-clean" / "hypotheses.jsonl").open()
        if json.loads(line)["id"] == "1-10-0000"
    ]
    audio = next(corpus.glob("test-clean/*/*/1-10-0000.flac"))
    answers = tmp_path / "answers.jsonl"
    _run([python, "-m", "speechbrain_mowe", str(out), "--task", "asr", str(audio),
          "--output", str(answers)], cwd=tmp_path)  # fmt: skip
    (record,) = [json.loads(line) for line in answers.read_text().splitlines()]
    assert record["answer"] == hypothesis["hypothesis"]
