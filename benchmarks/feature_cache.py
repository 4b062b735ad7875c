"""An epoch of a frozen encoder's features: encoded online, or read from the
feature cache (the first epoch writes it; later ones read it from disk, or from
memory with ``feature_cache_in_memory``).

Usage::

    python benchmarks/feature_cache.py                              # test shapes, ~1 min
    python benchmarks/feature_cache.py --shape tiny --clips 128 --seconds 4

A random Whisper (``--shape``: ``test`` or a real one's shape, variable length)
encodes ``--clips`` clips of ``--seconds`` in batches of ``--batch``. Each
repetition times, in turn: the online epoch; then, in a new cache folder, the
first cached epoch (encode and write), an epoch read from disk (a fresh cache
object) and an epoch read from memory. Prints the median seconds per epoch, the
spread and the ratio to the online epoch (per repetition), and writes ``--json``.
"""

import argparse
import tempfile
import time

import torch
from timing import SHAPES, random_whispers, ratio, span, summary, table, write_json

from speechbrain_mowe.dataio import FeatureCache

EPOCHS = ("online", "cache: first epoch (writes)", "cache: from disk", "cache: from memory")


def epoch_seconds(encode, batches) -> float:
    """Seconds to run ``encode(ids, wavs, lens)`` over every batch."""
    start = time.perf_counter()
    with torch.no_grad():
        for ids, wavs in batches:
            encode(ids, wavs, torch.ones(len(wavs)))
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="test")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    encoder = random_whispers(args.shape)["variable"]
    wavs = 0.1 * torch.randn(args.clips, int(args.seconds * 16000))
    batches = [
        ([f"clip{i}" for i in range(start, start + args.batch)], wavs[start : start + args.batch])
        for start in range(0, args.clips, args.batch)
    ]
    seconds = {name: [] for name in EPOCHS}
    for _ in range(args.repeats):
        seconds["online"].append(epoch_seconds(lambda ids, w, lens: encoder(w, lens), batches))
        with tempfile.TemporaryDirectory() as folder:
            cache = FeatureCache(folder, encoder, keep_in_memory=True)
            seconds[EPOCHS[1]].append(epoch_seconds(cache.encode, batches))
            from_disk = FeatureCache(folder, encoder)
            seconds[EPOCHS[2]].append(epoch_seconds(from_disk.encode, batches))
            assert from_disk.hits == args.clips and from_disk.misses == 0
            seconds[EPOCHS[3]].append(epoch_seconds(cache.encode, batches))
    results, rows = {}, []
    for name in EPOCHS:
        times, change = summary(seconds[name]), ratio(seconds[name], seconds["online"])
        results[name] = {"seconds": times, "ratio_to_online": change}
        rows.append(
            [
                name,
                f"{times['median']:.3f}",
                span(times),
                f"{change['median']:.3f}",
            ]
        )
    print(
        f"Feature cache: Whisper shape '{args.shape}', {args.clips} clips of {args.seconds:g} s, "
        f"batch {args.batch}, {args.repeats} repetitions, {torch.get_num_threads()} threads"
    )
    print(table(["epoch", "median s", "min-max s", "x online"], rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
