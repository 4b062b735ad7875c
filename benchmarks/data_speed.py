"""Prints how fast the data side runs: preparation, mixing, batching, decoding.

Usage::

    python benchmarks/data_speed.py --utterances 5000

It writes a LibriSpeech-shaped tree of short flac files to a temporary folder,
prepares it twice (the second run should do nothing), draws a LibriSpeech +
CoVoST + IEMOCAP + Clotho sized mixture, batches it by duration, and times
reading the same 5 s clip from wav, flac and mp3.
"""

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speechbrain_mowe.dataio import DurationBatchSampler, WeightedMixtureSampler, load_audio

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def prepare_speed(folder: Path, utterances: int) -> None:
    spec = importlib.util.spec_from_file_location(
        "librispeech_prepare", RECIPES / "LibriSpeech" / "librispeech_prepare.py"
    )
    librispeech = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(librispeech)
    root = folder / "LibriSpeech"
    clip = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype("float32")
    chapters = {}
    for i in range(utterances):
        speaker, chapter = 100 + i // 500, 10 + (i // 100) % 5
        utt_id = f"{speaker}-{chapter}-{i:04d}"
        path = root / "train-clean-100" / str(speaker) / str(chapter)
        path.mkdir(parents=True, exist_ok=True)
        sf.write(path / f"{utt_id}.flac", clip, 16000)
        chapters.setdefault(path / f"{speaker}-{chapter}.trans.txt", []).append(f"{utt_id} A B C")
    for path, lines in chapters.items():
        path.write_text("\n".join(lines) + "\n")

    def prepare():
        return librispeech.prepare_librispeech(root, folder / "out", splits=["train-clean-100"])

    _, first = timed(prepare)
    _, second = timed(prepare)
    print(f"prepare {utterances} utterances: {first:.2f} s ({utterances / first:.0f} per s)")
    print(f"prepare again (nothing to do): {second * 1000:.1f} ms")


def mixing_speed() -> None:
    sizes = {"asr": 281_241, "ast": 289_430, "er": 4_500, "aac": 19_195}
    groups, start = {}, 0
    for name, size in sizes.items():
        groups[name] = range(start, start + size)
        start += size
    weights = {"asr": 0.4, "ast": 0.3, "er": 0.1, "aac": 0.2}
    mixture = WeightedMixtureSampler(groups, weights, seed=0, epoch=3)
    draws, seconds = timed(lambda: list(mixture))
    print(f"mix one epoch of {len(draws)} draws: {seconds:.2f} s")
    durations = np.random.default_rng(0).uniform(1, 30, start)
    batches = DurationBatchSampler(mixture, durations, max_batch_duration=300, buffer_size=5000)
    count, seconds = timed(lambda: len(batches))
    print(f"batch them by duration into {count} batches: {seconds:.2f} s")


def decode_speed(folder: Path, repeats: int = 20) -> None:
    signal = (np.random.default_rng(0).standard_normal(5 * 48000) * 0.1).astype("float32")
    for suffix, kwargs in (("wav", {}), ("flac", {}), ("mp3", {"format": "MP3"})):
        path = folder / f"clip.{suffix}"
        sf.write(path, signal, 48000, **kwargs)
        _, seconds = timed(lambda path=path: [load_audio(path) for _ in range(repeats)])
        print(f"read a 5 s 48 kHz {suffix} as 16 kHz mono: {seconds / repeats * 1000:.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepare_speed(Path(tmp), args.utterances)
        mixing_speed()
        decode_speed(Path(tmp))


if __name__ == "__main__":
    main()
