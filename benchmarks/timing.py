"""What the benchmarks share: interleaved repetitions, medians and spreads,
the table they print and the JSON they write, and random Whispers of a shape."""

import json
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence

import torch

from speechbrain_mowe.lobes import WhisperEncoder
from speechbrain_mowe.tiny import WHISPER_SHAPES, make_tiny_whisper

#: ``--shape`` choices of the Whisper benchmarks: the test shape or a real one's.
SHAPES = ("test", *WHISPER_SHAPES)


def machine() -> Dict[str, str]:
    """Where a figure was measured."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int,
                warmup: int = 1) -> Dict[str, List[float]]:  # fmt: skip
    """Seconds of each variant per repetition, the variants taking turns so
    that a machine's drift touches them all alike."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summary(values: Sequence[float]) -> Dict[str, float]:
    """Median, and the spread as the lowest and highest value."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def span(values: Mapping[str, float], digits: int = 3) -> str:
    """``min-max`` of a :func:`summary`."""
    return f"{values['min']:.{digits}f}-{values['max']:.{digits}f}"


def shown(values: Mapping[str, float], digits: int = 3) -> str:
    """``median (min-max)`` of a :func:`summary`."""
    return f"{values['median']:.{digits}f} ({span(values, digits)})"


def ratio(values: Sequence[float], reference: Sequence[float]) -> Dict[str, float]:
    """The ratio per repetition (paired: same turn), summarised."""
    return summary([v / r for v, r in zip(values, reference)])


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, data: Mapping) -> None:
    """The figures, with the machine they were measured on."""
    if path:
        Path(path).write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")


class ResidentPeak:
    """The peak resident memory of this process from now on, beyond its memory
    now (Linux: resets the kernel's high-water mark, ``/proc/self/clear_refs``).

    Example
    -------
    >>> peak = ResidentPeak()
    >>> block = bytearray(64 * 2**20)
    >>> peak.mb() >= 60
    True
    """

    def __init__(self):
        Path("/proc/self/clear_refs").write_text("5")
        self.start = self._kb("VmRSS")

    @staticmethod
    def _kb(field: str) -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))

    def mb(self) -> float:
        """Megabytes of the peak beyond the memory at the start."""
        return (self._kb("VmHWM") - self.start) / 1024


def random_whispers(shape: str, modes: Sequence[str] = ("variable",)) -> Dict[str, WhisperEncoder]:
    """Whisper encoders with the same random weights of ``shape`` (``test``:
    width 64, 2 layers; else :data:`speechbrain_mowe.tiny.WHISPER_SHAPES`),
    one per input mode, frozen, in eval mode."""
    dims = {"d_model": 64, "num_layers": 2} if shape == "test" else WHISPER_SHAPES[shape]
    with tempfile.TemporaryDirectory() as folder:
        make_tiny_whisper(folder, **dims)
        return {m: WhisperEncoder(folder, mode=m).requires_grad_(False).eval() for m in modes}
