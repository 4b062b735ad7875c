"""Greedy decoding with the LoRA adapters merged into the LLM's weights
(``LanguageModel.merge_lora``, what ``speechbrain-mowe --export_merged`` writes)
against the same model with its adapters, in tokens per second.

Usage::

    python benchmarks/merged_decoding.py                               # test shapes, ~1 min
    python benchmarks/merged_decoding.py --hidden 512 --layers 8 --batch 1 8 --tokens 100 \\
        --targets q_proj k_proj v_proj o_proj gate_proj up_proj down_proj

A random Llama (``--hidden``, ``--layers``) with random LoRA weights (rank 8 on
``--targets``) answers ``--batch`` examples of ``--audio_frames`` audio
embeddings with ``--tokens`` new tokens (``min_new_tokens`` holds both to that
length). The table gives the share of the merged model's tokens equal to the
unmerged one's, each answer up to its first difference: merging changes the
float rounding, which can flip a near-tie of a random model's logits. The two
take turns within each repetition.
"""

import argparse
import copy
import functools
import tempfile

import torch
from timing import interleaved, ratio, shown, summary, table, write_json

from speechbrain_mowe.lobes import LanguageModel
from speechbrain_mowe.tiny import make_tiny_llm


def models(hidden: int, layers: int, targets):
    """The LLM with random LoRA weights, and its merged copy."""
    with tempfile.TemporaryDirectory() as folder:
        make_tiny_llm(folder, hidden_size=hidden, num_layers=layers)
        torch.manual_seed(0)
        llm = LanguageModel(folder, lora_rank=8, lora_dropout=0.0, lora_target_modules=targets)
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.05)
    merged = copy.deepcopy(llm)
    merged.merge_lora()
    return llm.eval(), merged.eval()


def identical_share(tokens, reference) -> float:
    """The share of generated positions equal to the reference's, each row up to
    its first difference (greedy decoding runs on from there on another path)."""
    same = 0
    for row, expected in zip(tokens, reference):
        first = next((i for i, (a, b) in enumerate(zip(row, expected)) if a != b), len(row))
        same += first
    return same / max(sum(len(row) for row in reference), 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128, help="width of the random Llama")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"],
                        help="the layers with LoRA adapters")  # fmt: skip
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--audio_frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    unmerged, merged = models(args.hidden, args.layers, args.targets)
    options = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "num_beams": 1}
    results, rows = {}, []
    for batch in args.batch:
        inputs = (
            torch.randn(batch, args.audio_frames, unmerged.embedding_dim),
            torch.ones(batch),
            *unmerged.tokenize_prompts(["transcribe the audio ."] * batch),
        )
        decoders = {
            name: functools.partial(llm.generate, *inputs, **options)
            for name, llm in (("with adapters", unmerged), ("merged", merged))
        }
        same = identical_share(decoders["merged"](), decoders["with adapters"]())
        seconds = interleaved(decoders, args.repeats)
        speed_up = ratio(seconds["with adapters"], seconds["merged"])
        results[batch] = {name: summary(values) for name, values in seconds.items()}
        results[batch]["speed_up"] = speed_up
        results[batch]["identical_tokens"] = same
        for name in decoders:
            median = results[batch][name]["median"]
            gain = shown(speed_up, 2) if name == "merged" else "1.00"
            rows.append([batch, name, f"{batch * args.tokens / median:.0f}",
                         shown(results[batch][name]), gain, f"{same:.1%}"])  # fmt: skip
    print(
        f"Merged decoding: Llama width {args.hidden} x {args.layers} layers, LoRA rank 8 on "
        f"{', '.join(args.targets)}, {args.tokens} new tokens"
    )
    header = ["batch", "LLM", "tokens/s", "median s (min-max)", "speed-up", "tokens as unmerged"]
    print(table(header, rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
