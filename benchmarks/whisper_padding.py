"""Whisper's two input modes side by side: padded to the 30 s window, as
Whisper was trained (``pad30``), or encoded at the clip's own length
(``variable``), for clips of several lengths; the encoder, then the sequence-CNN
projector on its output (downstream).

Usage::

    python benchmarks/whisper_padding.py                          # test shapes, ~1 min
    python benchmarks/whisper_padding.py --shape tiny --seconds 2 5 10 20

The encoder's output is trimmed to the batch's longest clip in both modes
(``AudioEncoder.forward``), so what follows it costs the same; the table gives
the frames each mode hands downstream, the median seconds of each mode (and
their spread), and the ratio pad30 / variable per repetition (median, min-max),
the modes timed in turn within each repetition.
"""

import argparse

import torch
from timing import (
    SHAPES,
    interleaved,
    random_whispers,
    ratio,
    shown,
    summary,
    table,
    write_json,
)

from speechbrain_mowe.lobes import SequenceCNNProjector


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="test",
                        help="test: width 64, 2 layers; else a real Whisper's shape")  # fmt: skip
    parser.add_argument("--seconds", type=float, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    encoders = random_whispers(args.shape, ("pad30", "variable"))
    projector = SequenceCNNProjector(encoders["pad30"].output_dim, 256, downsample=8).eval()
    results, rows = {}, []
    for seconds in args.seconds:
        wavs = 0.1 * torch.randn(args.batch, int(seconds * 16000))
        frames = {}

        def run(mode, wavs=wavs, frames=frames):
            with torch.no_grad():
                feats, lens = encoders[mode](wavs)
                projector(feats, lens)
            frames[mode] = feats.shape[1]

        times = interleaved({mode: (lambda m=mode: run(m)) for mode in encoders}, args.repeats)
        change = ratio(times["pad30"], times["variable"])
        results[seconds] = {mode: {"seconds": summary(t), "frames": frames[mode]}
                            for mode, t in times.items()}  # fmt: skip
        results[seconds]["pad30_over_variable"] = change
        spreads = [shown(summary(times[mode]), 3) for mode in ("pad30", "variable")]
        rows.append([f"{seconds:g}", frames["variable"], *spreads, shown(change, 2)])
    print(f"Whisper input modes, shape '{args.shape}', batch {args.batch}, "
          f"{args.repeats} interleaved repetitions, {torch.get_num_threads()} threads")  # fmt: skip
    header = ["clip s", "frames downstream", "pad30 s", "variable s", "pad30 / variable"]
    print(table(header, rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
