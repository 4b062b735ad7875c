"""Peak memory and time of a training step's loss at a large vocabulary, with the
output layer computed at every position or at the answer positions only
(``LanguageModel(answer_logits_only=...)``).

Usage::

    python benchmarks/loss_memory.py                              # 32k vocabulary, ~1 min
    python benchmarks/loss_memory.py --vocab 128000 --batch 8 --audio_frames 400

Each variant runs in its own process (forward, loss, backward of a small random
Llama whose vocabulary is ``--vocab``, batches of ``--batch`` examples with
``--audio_frames`` audio embeddings and answers of about ten tokens), so that
its peak resident memory is its own: the figure is the peak minus the
process's memory before the first step. Time is the median of ``--repeats``
steps. Prints a table and writes ``--json``.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import span, summary, table, write_json


def make_llm(folder: Path, vocab: int, hidden: int) -> str:
    """A random Llama with a ``vocab``-row output layer (and the tiny tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from speechbrain_mowe.tiny import make_tiny_llm

    make_tiny_llm(str(folder), hidden_size=hidden, num_layers=2)
    config = AutoConfig.from_pretrained(folder)
    config.vocab_size = vocab
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return str(folder)


def step_memory(folder: str, only: bool, batch: int, audio_frames: int, repeats: int) -> dict:
    """In this process: peak memory over a step beyond the memory before it, and time."""
    from speechbrain_mowe.lobes import LanguageModel
    from speechbrain_mowe.lobes.language_model import answer_token_losses

    llm = LanguageModel(folder, lora_rank=0, freeze_llm=False, answer_logits_only=only)
    prefix, suffix = llm.tokenize_prompts(["transcribe the audio ."] * batch)
    answer = llm.tokenize_answers(["the quick brown fox jumps over the lazy dog"] * batch)
    audio = torch.randn(batch, audio_frames, llm.embedding_dim)
    lens = torch.ones(batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = llm(audio, lens, prefix, suffix, answer)
        sums, counts = answer_token_losses(out.logits, out.labels)
        (sums.sum() / counts.sum()).backward()
        llm.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
        del out, sums
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_mb": (peak - before) / 1024,
        "seconds": summary(seconds),
        "logit_positions": int(llm(audio, lens, prefix, suffix, answer).logits.shape[1]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000, help="rows of the output layer")
    parser.add_argument("--hidden", type=int, default=256, help="width of the LLM")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--audio_frames", type=int, default=200, help="audio embeddings per example"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<folder>,<0|1>": one variant
    args = parser.parse_args(argv)
    if args.child:
        folder, only = args.child.split(",")
        result = step_memory(folder, only == "1", args.batch, args.audio_frames, args.repeats)
        print(json.dumps(result))
        return
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        make_llm(Path(folder), args.vocab, args.hidden)
        for name, only in (("every position", 0), ("answer positions", 1)):
            command = [
                sys.executable,
                __file__,
                f"--child={folder},{only}",
                f"--batch={args.batch}",
                f"--audio_frames={args.audio_frames}",
                f"--repeats={args.repeats}",
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [
        [
            name,
            r["logit_positions"],
            f"{r['peak_mb']:.0f}",
            f"{r['seconds']['median']:.3f}",
            span(r["seconds"]),
        ]
        for name, r in results.items()
    ]
    print(
        f"Loss memory: vocabulary {args.vocab}, batch {args.batch}, {args.audio_frames} audio "
        f"frames, width {args.hidden}, {args.repeats} steps per variant"
    )
    print(table(["logits at", "positions", "peak MB over the step", "median s", "min-max s"], rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
