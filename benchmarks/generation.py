"""Greedy generation of answers after audio: ours batched (one left-padded batch,
transformers' ``generate`` with its key-value cache), ours one example at a
time, and SpeechBrain's ``S2SHuggingFaceLLMGreedySearcher`` (which runs the LLM
over the whole sequence again at every step), in tokens per second.

Usage::

    python benchmarks/generation.py                                   # test shapes, ~1 min
    python benchmarks/generation.py --hidden 512 --layers 8 --batch 1 4 16 --tokens 20 100

A random Llama (``--hidden``, ``--layers``) answers ``--batch`` examples of
``--audio_frames`` audio embeddings with ``--tokens`` new tokens
(``min_new_tokens`` holds ours to that length; the searcher is given as many
steps). Before timing, the batched answers are checked identical to the
one-at-a-time ones. The three are timed in turn within each repetition.
"""

import argparse
import tempfile

import torch
from speechbrain.decoders.seq2seq import S2SHuggingFaceLLMGreedySearcher
from timing import interleaved, summary, table, write_json
from torch import nn

from speechbrain_mowe.lobes import LanguageModel
from speechbrain_mowe.tiny import make_tiny_llm


class _HuggingFaceLLM(nn.Module):
    """What SpeechBrain's searcher calls: ``.model`` and ``(inputs_embeds, attention_mask)``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **kwargs):
        return self.model(**kwargs)


def decoders(llm, searcher, batch: int, tokens: int, audio_frames: int):
    """The three ways to answer one random batch, as callables."""
    audio = torch.randn(batch, audio_frames, llm.embedding_dim)
    lens = torch.ones(batch)
    prefix, suffix = llm.tokenize_prompts(["transcribe the audio ."] * batch)
    options = {"max_new_tokens": tokens, "num_beams": 1, "min_new_tokens": tokens}
    embeds, mask, _, _ = llm._assemble(audio, lens, prefix, suffix, None, left_pad=True)

    def row(tokens_, i):
        return tokens_[0][i : i + 1], tokens_[1][i : i + 1]

    def one_at_a_time():
        return [
            llm.generate(
                audio[i : i + 1], lens[i : i + 1], row(prefix, i), row(suffix, i), **options
            )[0]
            for i in range(batch)
        ]

    def speechbrain():
        searcher.max_decode_ratio = tokens / embeds.shape[1]
        with torch.no_grad():
            return searcher(embeds, torch.ones(batch), attention_mask=mask.bool())

    return {
        "ours, batched": lambda: llm.generate(audio, lens, prefix, suffix, **options),
        "ours, one at a time": one_at_a_time,
        "SpeechBrain searcher": speechbrain,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128, help="width of the random Llama")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tokens", type=int, nargs="+", default=[20])
    parser.add_argument("--audio_frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        make_tiny_llm(folder, hidden_size=args.hidden, num_layers=args.layers, init_std=0.02)
        llm = LanguageModel(folder, lora_rank=0).eval()
    searcher = S2SHuggingFaceLLMGreedySearcher(
        _HuggingFaceLLM(llm.model),
        temperature=0.0,
        bos_index=llm.tokenizer.bos_token_id,
        eos_index=llm.end_token_id,
        min_decode_ratio=0.0,
        max_decode_ratio=1.0,
    )
    results, rows = {}, []
    for batch in args.batch:
        for tokens in args.tokens:
            runs = decoders(llm, searcher, batch, tokens, args.audio_frames)
            with torch.no_grad():
                answers = runs["ours, batched"]()
                assert answers == runs["ours, one at a time"](), "batched != one at a time"
                made = {
                    "ours, batched": sum(map(len, answers)),
                    "ours, one at a time": sum(map(len, answers)),
                    "SpeechBrain searcher": sum(map(len, runs["SpeechBrain searcher"]()[0])),
                }
            seconds = interleaved(runs, args.repeats)
            entry = {
                name: {
                    "seconds": summary(t),
                    "tokens": made[name],
                    "tokens_per_s": made[name] / summary(t)["median"],
                }
                for name, t in seconds.items()
            }
            results[f"batch {batch}, {tokens} tokens"] = entry
            reference = entry["SpeechBrain searcher"]["tokens_per_s"]
            for name, figures in entry.items():
                rows.append(
                    [
                        batch,
                        tokens,
                        name,
                        figures["tokens"],
                        f"{figures['tokens_per_s']:.0f}",
                        f"{figures['seconds']['median']:.3f}",
                        f"{figures['tokens_per_s'] / reference:.1f}",
                    ]
                )
    print(
        f"Greedy generation: Llama width {args.hidden}, {args.layers} layers, "
        f"{args.audio_frames} audio frames, {args.repeats} interleaved repetitions, "
        f"{torch.get_num_threads()} threads; answers identical batched and one by one"
    )
    header = [
        "batch",
        "new tokens",
        "decoder",
        "tokens made",
        "tokens/s",
        "median s",
        "speed x SpeechBrain's",
    ]
    print(table(header, rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
