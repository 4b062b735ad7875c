"""What a MoWE encoder costs next to its base alone, forward and forward+backward.

Usage::

    python benchmarks/encoder_cost.py                       # test shapes, about 1 min
    python benchmarks/encoder_cost.py --shapes demo         # the built-in experiment's
    python benchmarks/encoder_cost.py --shapes paper --batch 4 --seconds 5 --repeats 3

Shapes (random weights, except Resemblyzer's GE2E in ``demo``):

- ``test``: a 2-layer Whisper of width 64; a pool of two 1-layer Whispers and two
  tiny HuBERTs;
- ``demo``: the built-in experiment's: a Whisper tiny.en-shaped base; GE2E and two
  ~70k-parameter convolutional encoders;
- ``paper``: MoWE-Audio's: a Whisper-large-v3-shaped base; a pool of two
  Whisper-tiny-shaped and two HuBERT-base-shaped encoders.

Variants, each timed in turn within every repetition (interleaved), as in
training (the base frozen, the pool and router trainable):

- ``base``: the base encoder alone;
- ``mowe_balanced``: top-1 routing spreading the batch over the experts;
- ``mowe_skewed``: top-1 routing sending every example to expert 0;
- ``all_experts``: every expert on every example (the pool without a router).

It prints the median seconds, the spread, and each variant's ratio to ``base``
(per repetition, then the median), and writes them to ``--json``.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from timing import interleaved, ratio, shown, span, summary, table, write_json

from speechbrain_mowe.lobes import (
    GE2EEncoder,
    HuBERTEncoder,
    MoWEEncoder,
    TinyConvEncoder,
    WhisperEncoder,
    build_router,
)
from speechbrain_mowe.tiny import (
    HUBERT_BASE_SHAPE,
    WHISPER_SHAPES,
    make_tiny_ssl,
    make_tiny_whisper,
)

VARIANTS = ("base", "mowe_balanced", "mowe_skewed", "all_experts")


def build_encoders(shapes: str, folder: Path):
    """The base and the pool of ``shapes``."""
    if shapes == "test":
        base = WhisperEncoder(make_tiny_whisper(folder / "base", d_model=64, num_layers=2))
        whispers = [
            make_tiny_whisper(folder / f"w{i}", d_model=32, num_layers=1, seed=i) for i in range(2)
        ]
        hubert = {"hidden_size": 32, "num_layers": 1, "heads": 2, "ffn_dim": 64}
        huberts = [make_tiny_ssl(folder / f"h{i}", seed=i, **hubert) for i in range(2)]
        return base, [*map(WhisperEncoder, whispers), *map(HuBERTEncoder, huberts)]
    if shapes == "demo":
        base = WhisperEncoder(make_tiny_whisper(folder / "base", **WHISPER_SHAPES["tiny"]))
        return base, [
            GE2EEncoder(),
            TinyConvEncoder(n_mels=40, channels=[64, 80, 80], strides=[2, 2, 1]),
            TinyConvEncoder(n_mels=64, channels=[64, 64, 64], strides=[2, 2, 1]),
        ]
    base = WhisperEncoder(make_tiny_whisper(folder / "base", **WHISPER_SHAPES["large-v3"]))
    whispers = [
        make_tiny_whisper(folder / f"w{i}", seed=i, **WHISPER_SHAPES["tiny"]) for i in range(2)
    ]
    huberts = [make_tiny_ssl(folder / f"h{i}", seed=i, **HUBERT_BASE_SHAPE) for i in range(2)]
    return base, [*map(WhisperEncoder, whispers), *map(HuBERTEncoder, huberts)]


def build_variants(base, pool, weak_dim: int):
    """``{variant: (encoder, task ids for a batch)}``: routed by one-hot task
    logits, so that task ``t`` goes to expert ``t``."""
    experts = len(pool)
    router = build_router(
        "independent", base.output_dim, experts, num_tasks=experts, top_k=1, noise_std=0.0
    )
    with torch.no_grad():
        router.task_logits.copy_(10.0 * torch.eye(experts))
    routed = MoWEEncoder(base, pool, router, weak_dim)
    dense = MoWEEncoder(base, pool, None, weak_dim, weak_fusion="concat")
    return {
        "base": (MoWEEncoder(base), None),
        "mowe_balanced": (routed, lambda batch: torch.arange(batch) % experts),
        "mowe_skewed": (routed, lambda batch: torch.zeros(batch, dtype=torch.long)),
        "all_experts": (dense, None),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=["test", "demo", "paper"], default="test")
    parser.add_argument("--batch", type=int, default=4, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each clip")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions")
    parser.add_argument("--weak_dim", type=int, default=64, help="channels of the weak block")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        base, pool = build_encoders(args.shapes, Path(folder))
        variants = build_variants(base, pool, args.weak_dim)
    wavs = 0.1 * torch.randn(args.batch, int(args.seconds * 16000))
    lens = torch.ones(args.batch)

    def forward(encoder, tasks):
        encoder.eval()
        with torch.no_grad():
            encoder(wavs, lens, None if tasks is None else tasks(args.batch))

    def forward_backward(encoder, tasks):
        encoder.train()
        encoder.zero_grad(set_to_none=True)
        out = encoder(wavs, lens, None if tasks is None else tasks(args.batch))
        loss = out.feats.square().mean() + (out.aux_loss if out.aux_loss is not None else 0)
        if loss.requires_grad:
            loss.backward()

    results, rows = {}, []
    for step, run in (("forward", forward), ("forward+backward", forward_backward)):
        seconds = interleaved(
            {name: (lambda e=e, t=t, run=run: run(e, t)) for name, (e, t) in variants.items()},
            args.repeats,
        )
        results[step] = {}
        for name in VARIANTS:
            times, ratios = summary(seconds[name]), ratio(seconds[name], seconds["base"])
            results[step][name] = {"seconds": times, "ratio_to_base": ratios}
            rows.append(
                [
                    step,
                    name,
                    f"{times['median']:.3f}",
                    span(times),
                    shown(ratios, 2),
                ]
            )
    print(
        f"Encoder cost, shapes '{args.shapes}', {args.batch} x {args.seconds:g} s clips, "
        f"{args.repeats} interleaved repetitions, {torch.get_num_threads()} threads"
    )
    print(table(["step", "variant", "median s", "min-max s", "x base (min-max)"], rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
