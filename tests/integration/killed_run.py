"""Trains the LibriSpeech recipe with the tiny model, and SIGKILLs itself at a
chosen point of a checkpoint write.

Run by ``test_checkpoint_kills.py`` in a subprocess::

    python killed_run.py RECORD CORPUS MANIFESTS WHISPER LLM OUTPUT [KILL]

Each training step's loss is appended to ``RECORD`` (JSON lines, flushed) with
its epoch and step. ``KILL`` is ``<point>:<n>``, the n-th time this process
reaches the point in its checkpoint folder:

- ``file``: writing a file (``torch.save`` or a text file): half of its bytes
  are written, then the process kills itself;
- ``rename``: just before a folder is renamed;
- ``delete``: during the removal of a folder, after its first file went.
"""

import builtins
import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from recipe_runs import RECIPES, tiny_overrides  # noqa: E402

from speechbrain_mowe.training import (  # noqa: E402
    MoWEBrain,
    setup_experiment,
    train_and_evaluate,
)

YAML = RECIPES / "LibriSpeech" / "ASR" / "hparams" / "mowe.yaml"


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class HalfWriter:
    """A file whose first write stops halfway, and kills the process."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        die()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


class KillSwitch:
    """Counts the events of one point inside ``folder`` and kills at the n-th."""

    def __init__(self, folder: Path, point: str, n: int):
        self.folder, self.point, self.n, self.seen = str(folder), point, n, 0

    def due(self, point: str, path) -> bool:
        if point != self.point or not str(path).startswith(self.folder):
            return False
        self.seen += 1
        return self.seen == self.n

    def install(self):
        save, open_, replace, rmtree = torch.save, builtins.open, os.replace, shutil.rmtree

        def half_save(obj, f, *args, **kwargs):
            if not (isinstance(f, (str, Path)) and self.due("file", f)):
                return save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            with open_(f, "wb") as out:
                out.write(buffer.getvalue()[: buffer.tell() // 2])
            die()

        def half_open(file, mode="r", *args, **kwargs):
            handle = open_(file, mode, *args, **kwargs)
            if "w" in mode and self.due("file", file):
                return HalfWriter(handle)
            return handle

        def killed_replace(src, dst, *args, **kwargs):
            if self.due("rename", src):
                die()
            return replace(src, dst, *args, **kwargs)

        def killed_rmtree(path, *args, **kwargs):
            if Path(path).is_dir() and self.due("delete", path):
                first = next(p for p in Path(path).iterdir() if p.is_file())
                first.unlink()
                die()
            return rmtree(path, *args, **kwargs)

        torch.save, builtins.open, os.replace, shutil.rmtree = (
            half_save, half_open, killed_replace, killed_rmtree
        )  # fmt: skip


def main(record, corpus, manifests, whisper, llm, output, kill=None):
    argv = [str(YAML), f"--data_folder={corpus}", "--train_splits=[train-clean-100]"]
    argv += ["--valid_splits=[test-clean]", "--test_splits=[test-clean]", "--lowercase=True"]
    argv += ["--skip_prep=True", f"--manifest_folder={manifests}"]
    argv += tiny_overrides(output, whisper, llm, max_batch_duration=2.0, ckpt_interval_steps=1)
    hparams, run_opts, _ = setup_experiment(argv)
    if kill:
        point, n = kill.split(":")
        KillSwitch(Path(hparams["save_folder"]), point, int(n)).install()

    class Recording(MoWEBrain):
        def on_fit_batch_end(self, batch, outputs, loss, should_step):
            super().on_fit_batch_end(batch, outputs, loss, should_step)
            step = {"epoch": self.hparams.epoch_counter.current, "step": self.step,
                    "loss": float(loss.detach())}  # fmt: skip
            with open(record, "a", encoding="utf-8") as f:
                f.write(json.dumps(step) + "\n")

    train_and_evaluate(hparams, run_opts, Recording)


if __name__ == "__main__":
    main(*sys.argv[1:])
