"""Training-step throughput and peak memory of the whole model, ours against the
same shapes built from SpeechBrain's own speech-LLM parts.

Usage::

    python benchmarks/training_step.py                                  # test shapes, ~2 min
    python benchmarks/training_step.py --shape tiny --hidden 512 --layers 8 \\
        --batch 1 4 16 --seconds 10

Both builds share one random Whisper encoder (``--shape``) and one random Llama
(``--hidden``, ``--layers``), LoRA of rank 8 and alpha 32 on ``q_proj``/``v_proj``,
a frozen encoder and LLM, frames stacked by ``--stack`` and a two-layer MLP:

- ``speechbrain parts``: SpeechBrain's ``Whisper`` lobe (``encoder_only``, frozen:
  it pads every clip to Whisper's 30 s window), ``ConcatDownsampler``, its
  ``LLaMA`` lobe wrapped in ``AdaptedModel`` with SpeechBrain's ``LoRA``; the LLM
  reads ``[audio | prompt | answer]`` (audio past each clip masked, as in
  SpeechBrain's SpeechLLM recipe) and the loss takes the logits of every position;
- ``ours``: :class:`~speechbrain_mowe.model.MoWEAudioLLM` with a base-only
  ``MoWEEncoder`` (Whisper at variable length, output trimmed),
  ``FrameStackProjector`` and ``LanguageModel`` (peft LoRA, logits at the answer
  positions only), and the same model with each option of the recipes: fused
  AdamW, gradient checkpointing, eager attention instead of SDPA.

A step is the forward, the answer cross-entropy, the backward, an AdamW step and
zeroing the gradients, on ``--batch`` clips of ``--seconds`` seconds with a
ten-word answer. The variants take turns within each repetition. Peak memory is
measured in one process per variant (the batch sizes in increasing order; the
resident peak from the first step on, beyond the memory before it: weights
excluded, optimizer states and activations included). Prints a table
(examples/s, audio seconds per second, each variant's speed over SpeechBrain's)
and writes ``--json``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from speechbrain.integrations.huggingface.llama import LLaMA
from speechbrain.integrations.huggingface.whisper import Whisper
from speechbrain.lobes.downsampling import ConcatDownsampler
from speechbrain.nnet.adapters import AdaptedModel, LoRA
from timing import ResidentPeak, interleaved, ratio, shown, summary, table, write_json
from torch import nn

from speechbrain_mowe.lobes import FrameStackProjector, LanguageModel, MoWEEncoder, WhisperEncoder
from speechbrain_mowe.lobes.language_model import IGNORE_INDEX
from speechbrain_mowe.model import MoWEAudioLLM
from speechbrain_mowe.tiny import WHISPER_SHAPES, make_tiny_llm, make_tiny_whisper

INSTRUCTION = "transcribe the audio ."
ANSWER = "the quick brown fox jumps over the lazy dog again"
LORA = {"rank": 8, "alpha": 32}
#: Our variants: LanguageModel options, and whether AdamW is fused.
OURS = {
    "ours": ({}, False),
    "ours, fused AdamW": ({}, True),
    "ours, gradient checkpointing": ({"gradient_checkpointing": True}, False),
    "ours, eager attention": ({"attn_implementation": "eager"}, False),
}
VARIANTS = ("speechbrain parts", *OURS)


def make_sources(folder: Path, shape: str, hidden: int, layers: int):
    """A random Whisper and a random Llama, saved under ``folder``."""
    dims = {"d_model": 64, "num_layers": 2} if shape == "test" else WHISPER_SHAPES[shape]
    whisper = make_tiny_whisper(folder / "whisper", **dims)
    llm = make_tiny_llm(str(folder / "llm"), hidden_size=hidden, num_layers=layers)
    return whisper, llm


class SpeechBrainParts(nn.Module):
    """The same shapes from SpeechBrain's lobes, as its SpeechLLM recipe joins them."""

    def __init__(self, whisper: str, llm: str, stack: int):
        super().__init__()
        self.whisper = Whisper(whisper, save_path=whisper, encoder_only=True, freeze=True)
        lobe = LLaMA(
            llm,
            save_path=llm,
            freeze=True,
            torch_dtype=torch.float32,
            pad_token="<pad>",
            pad_to_multiple_of=1,
        )
        self.tokenizer = lobe.tokenizer
        self.llm = AdaptedModel(lobe, LoRA, target_layers=["*q_proj", "*v_proj"],
                                adapter_kwargs=LORA)  # fmt: skip
        width = self.whisper.model.config.d_model * stack
        dim = lobe.model.get_input_embeddings().embedding_dim
        self.downsample = ConcatDownsampler(stack)
        self.proj = nn.Sequential(nn.Linear(width, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.stack = stack

    def forward(self, wavs, wav_lens, text_ids, text_lens, labels):
        """The answer cross-entropy; ``labels`` cover the text, -100 on the prompt."""
        audio = self.proj(self.downsample(self.whisper(wavs)))
        text = self.llm.adapted_model.model.get_input_embeddings()(text_ids)
        embeds = torch.cat([audio, text], 1)
        mask = torch.zeros(embeds.shape[:2], dtype=torch.long)
        frames = audio.shape[1]
        seconds = wavs.shape[1] / 16000
        for i in range(len(wavs)):  # as SpeechBrain's recipe builds its mask
            mask[i, : int(wav_lens[i] * seconds * 50 / self.stack)] = 1
            mask[i, frames : frames + int(text_lens[i])] = 1
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask).logits
        targets = torch.cat([torch.full((len(wavs), frames), IGNORE_INDEX), labels], 1)
        return nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), targets[:, 1:], ignore_index=IGNORE_INDEX
        )


def build(variant: str, whisper: str, llm: str, stack: int, seed: int = 0):
    """A variant's model and optimizer."""
    torch.manual_seed(seed)
    if variant == "speechbrain parts":
        model, fused = SpeechBrainParts(whisper, llm, stack), False
    else:
        options, fused = OURS[variant]
        language_model = LanguageModel(llm, lora_rank=LORA["rank"], lora_alpha=LORA["alpha"],
                                       lora_dropout=0.0, **options)  # fmt: skip
        base = WhisperEncoder(whisper, mode="variable")
        projector = FrameStackProjector(base.output_dim, language_model.embedding_dim, stack)
        model = MoWEAudioLLM(MoWEEncoder(base), projector, language_model, tasks=["asr"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model.train(), torch.optim.AdamW(trainable, lr=1e-4, fused=fused)


def step_function(variant, model, optimizer, batch: int, seconds: float):
    """One training step on a fixed random batch, as a callable."""
    wavs = torch.randn(batch, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    lens = torch.ones(batch)
    if variant == "speechbrain parts":
        tokenizer = model.tokenizer
        prompt = tokenizer(INSTRUCTION, add_special_tokens=False)["input_ids"]
        answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        text = torch.tensor([prompt + answer] * batch)
        labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + answer] * batch)
        text_lens = torch.full((batch,), text.shape[1])

        def loss():
            return model(wavs, lens, text, text_lens, labels)
    else:
        prefix, suffix = model.llm.tokenize_prompts([INSTRUCTION] * batch)
        answer = model.llm.tokenize_answers([ANSWER] * batch)

        def loss():
            return model(wavs, lens, prefix, suffix, answer).loss

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def peak_memory(variant, whisper, llm, args) -> dict:
    """In this process: the resident peak beyond the memory before the first step,
    after two steps at each batch size (in increasing order)."""
    model, optimizer = build(variant, whisper, llm, args.stack)
    peak, peaks = ResidentPeak(), {}
    for batch in sorted(args.batch):
        step = step_function(variant, model, optimizer, batch, args.seconds)
        step()
        step()
        peaks[batch] = peak.mb()
    return peaks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("test", *WHISPER_SHAPES), default="test",
                        help="the Whisper encoder's shape (test: width 64, 2 layers)")  # fmt: skip
    parser.add_argument("--hidden", type=int, default=128, help="width of the random Llama")
    parser.add_argument("--layers", type=int, default=2, help="layers of the random Llama")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of every clip")
    parser.add_argument("--stack", type=int, default=5, help="encoder frames per LLM embedding")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<whisper>,<llm>,<variant>"
    args = parser.parse_args(argv)
    if args.child:
        whisper, llm, variant = args.child.split(",", 2)
        print(json.dumps(peak_memory(variant, whisper, llm, args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        whisper, llm = make_sources(Path(folder), args.shape, args.hidden, args.layers)
        models = {name: build(name, whisper, llm, args.stack) for name in VARIANTS}
        results = {}
        for batch in args.batch:
            steps = {name: step_function(name, *models[name], batch, args.seconds)
                     for name in VARIANTS}  # fmt: skip
            seconds = interleaved(steps, args.repeats)
            results[batch] = {name: {"seconds": summary(seconds[name]),
                                     "speed_x_speechbrain": ratio(seconds["speechbrain parts"],
                                                                  seconds[name])}
                              for name in VARIANTS}  # fmt: skip
        if not args.no_memory:
            for name in VARIANTS:
                command = [sys.executable, __file__, f"--child={whisper},{llm},{name}",
                           "--batch", *map(str, args.batch), f"--seconds={args.seconds}",
                           f"--stack={args.stack}"]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                peaks = json.loads(done.stdout.strip().splitlines()[-1])
                for batch in args.batch:
                    results[batch][name]["peak_mb"] = peaks[str(batch)]
    rows = []
    for batch, figures in results.items():
        for name, r in figures.items():
            per_second = batch / r["seconds"]["median"]
            rows.append([batch, name, f"{per_second:.2f}", f"{per_second * args.seconds:.1f}",
                         shown(r["seconds"]), shown(r["speed_x_speechbrain"], 2),
                         f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-"])  # fmt: skip
    print(
        f"Training step: Whisper {args.shape}, Llama width {args.hidden} x {args.layers} layers, "
        f"clips of {args.seconds} s, {args.repeats} repetitions"
    )
    header = ["batch", "build", "examples/s", "audio s/s", "median s (min-max)",
              "speed x SpeechBrain parts", "peak MB"]  # fmt: skip
    print(table(header, rows))
    write_json(args.json, {"arguments": vars(args), "results": results})


if __name__ == "__main__":
    main()
