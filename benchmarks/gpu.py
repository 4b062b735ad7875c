"""The GPU path at real shapes, in one run: the matrix-product peak, the training
step of MoWE-Audio-shaped models, what the pool costs over the base alone, the
LLM's model FLOP utilisation, attention kernels and KV-cached generation.

Usage::

    python benchmarks/gpu.py                         # a GPU at real shapes, ~3-4 min on an H200
    python benchmarks/gpu.py --smallest              # tiny shapes, a CPU, well under 1 min
    python benchmarks/gpu.py --sections machine train_1b --json gpu.json

On the lent GPU machine (which has torch, transformers and peft, but not
speechbrain, hyperpyyaml or ruamel.yaml), from the repository root. Once, here,
make the wheels (``.whl/`` is kept out of git)::

    grep -q '^/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \\
        -d .whl speechbrain==1.1.2 hyperpyyaml==1.2.3 ruamel.yaml==0.18.17 \\
        ruamel.yaml.clib==0.2.15

then run there, from the repository root with ``.whl`` copied along (under
2 MB), the wrapper::

    bash benchmarks/gpu_machine.sh           # extra arguments are passed on to this script

It installs the wheels into ``/tmp/site``, puts it and the repository on
``PYTHONPATH``, and writes ``$OUT/gpu.json`` and ``$OUT/gpu.log`` (``OUT`` is
set there). To try it on a CPU, with another Python and a fresh folder::

    OUT=/tmp/gpuout SITE=/tmp/gpusite PYTHON=.venv/bin/python \\
        bash benchmarks/gpu_machine.sh --smallest

Every model has random weights at the shape of a real one: its source folder
holds the config (and tokenizer or feature extractor) only, and while the
lobes are built, the auto classes' ``from_pretrained`` builds the model from
that config directly on ``--device`` in the dtype asked for
(:func:`random_weights`), so an 8B model is never made on the CPU first, and
the lobes are otherwise built as users build them. Sections (``--sections``),
each in its own ``try``: an error is printed and recorded, and the run goes on;
the JSON is rewritten after every figure, and the exit status is 1 if any
error was recorded.

- ``machine``: the GPU, versions, and the measured bf16 and fp32 matrix-product
  throughput (8192^3, after a warm-up) used as the MFU ceilings.
- ``train_1b``: a training step (forward, loss, backward, AdamW step) of
  :class:`~speechbrain_mowe.model.MoWEAudioLLM` on 8 clips of 10 to 20 s
  (the router's four tasks in turn, short instructions and answers) at
  MoWE-Audio's shapes: a
  Whisper-large-v3-shaped base (frozen, variable length), a pool of two
  Whisper-tiny- and two HuBERT-base-shaped experts (frozen, their projections
  trained), a hybrid top-1 router, a sequence CNN projector (x8), and a
  Llama-3.2-1B-shaped LLM frozen with LoRA (r 8, alpha 32, q/v); ``bf16`` (LLM
  weights in bf16, everything under bf16 autocast, as the ``mowe_paper``
  family) and ``fp32`` (no autocast, TF32 as torch's default). Beside it: the
  base-only model (empty pool, no router) at the same shapes, and the LLM
  alone on the cached audio embeddings (the LLM part's time, for its MFU).
- ``attention``: the 1B bf16 MoWE step with the LLM's ``sdpa`` and ``eager``
  attention (and ``flash_attention_2`` if ``flash_attn`` imports).
- ``generate``: greedy tokens/s with the 1B-shaped LLM in bf16 at batch 1 and
  16: ours (``LanguageModel.generate``, KV cache, ``min_new_tokens`` holding
  random weights to the length) against SpeechBrain's
  ``S2SHuggingFaceLLMGreedySearcher``, built as ``generation.py`` builds them.
- ``train_8b``: ``train_1b`` with a Llama-3.1-8B-shaped LLM (bf16; fp32 only if
  it fits in the free GPU memory).

Timed variants take turns in each repetition (``--warmup``, ``--repeats``);
the tables give the median with the lowest and highest, and ratios are paired
per repetition. Peak memory is ``torch.cuda.max_memory_allocated`` over one
step after a reset: every tensor then resident (the weights of all models
built at that point, optimizer states) plus the step's; ``step GB`` is the
part above what was allocated before the step. Prints a Markdown table per
section and writes ``--json``.
"""

import argparse
import contextlib
import gc
import importlib.util
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from generation import _HuggingFaceLLM, decoders
from speechbrain.decoders.seq2seq import S2SHuggingFaceLLMGreedySearcher
from timing import interleaved, ratio, shown, summary, table, write_json

from speechbrain_mowe.lobes import (
    HuBERTEncoder,
    LanguageModel,
    MoWEEncoder,
    SequenceCNNProjector,
    WhisperEncoder,
    build_router,
)
from speechbrain_mowe.lobes.language_model import answer_token_losses
from speechbrain_mowe.lobes.sequence import to_absolute
from speechbrain_mowe.model import MoWEAudioLLM
from speechbrain_mowe.tiny import HUBERT_BASE_SHAPE, WHISPER_SHAPES, make_tiny_tokenizer, ssl_config

SECTIONS = ("machine", "train_1b", "attention", "generate", "train_8b")
#: The router's tasks, with an instruction and an answer each (a batch cycles through them).
TASKS = {
    "asr": (
        "transcribe the audio .",
        "the quick brown fox jumps over the lazy dog . one two three four five six seven",
    ),
    "ast": ("translate the speech into german .", "der schnelle braune fuchs springt ."),
    "er": ("what emotion does the speaker express ?", "neutral"),
    "aac": ("describe the sound .", "a bird chirps while a dog barks in the distance"),
}
#: Keyword arguments of :func:`llm_source` for the shapes of real Llamas.
LLAMA_1B = {
    "hidden_size": 2048,
    "num_layers": 16,
    "intermediate_size": 8192,
    "heads": 32,
    "kv_heads": 8,
    "vocab_size": 128256,
    "tie_embeddings": True,
}
LLAMA_8B = {
    "hidden_size": 4096,
    "num_layers": 32,
    "intermediate_size": 14336,
    "heads": 32,
    "kv_heads": 8,
    "vocab_size": 128256,
    "tie_embeddings": False,
}
FLOP_FORMULA = (
    "LLM FLOP per step = 4*N*T + 4*V*d*b*K + 12*L*d*b*S^2: the frozen LLM with LoRA does a "
    "forward (2*N*T) and a backward of the activations only (2*N*T, no weight gradients); "
    "N = non-embedding parameters, b x S = T positions computed (left padding included), "
    "K = positions given the output layer (V x d), L layers of width d; attention's QK^T "
    "and AV counted without causal discount, their backward as twice the forward; LoRA "
    "and norms neglected. MFU = that / time / the measured matmul peak of the precision."
)


@dataclass(frozen=True)
class Shapes:
    """Every size of a run.

    Arguments
    ---------
    name : str
        ``paper`` or ``smallest``.
    base, whisper_expert, hubert_expert : dict
        Keyword arguments of :func:`whisper_source` and :func:`hubert_source`.
    llms : dict
        ``{"1b": ..., "8b": ...}`` keyword arguments of :func:`llm_source`.
    weak_dim : int
        Width each expert is projected to.
    batch : int
        Clips per training batch.
    seconds : (float, float)
        The shortest and longest clip (the batch spreads evenly between them).
    generation_batches : tuple of int
        Batch sizes of ``generate``.
    new_tokens : int
        Tokens generated per example.
    audio_frames : int
        Audio embeddings before each generated answer.
    matmul_size : int
        Side of the square matrices of the peak.
    """

    name: str
    base: Dict
    whisper_expert: Dict
    hubert_expert: Dict
    llms: Dict[str, Dict]
    weak_dim: int
    batch: int
    seconds: Tuple[float, float]
    generation_batches: Tuple[int, ...]
    new_tokens: int
    audio_frames: int
    matmul_size: int


PAPER = Shapes(
    name="paper",
    base=WHISPER_SHAPES["large-v3"],
    whisper_expert=WHISPER_SHAPES["tiny"],
    hubert_expert=HUBERT_BASE_SHAPE,
    llms={"1b": LLAMA_1B, "8b": LLAMA_8B},
    weak_dim=1024,
    batch=8,
    seconds=(10.0, 20.0),
    generation_batches=(1, 16),
    new_tokens=64,
    audio_frames=94,  # 15 s of Whisper frames (50/s), x8 downsampled
    matmul_size=8192,
)
SMALLEST = Shapes(
    name="smallest",
    base={"d_model": 64, "num_layers": 2, "heads": 4, "ffn_dim": 128, "n_mels": 128},
    whisper_expert={"d_model": 32, "num_layers": 1, "heads": 2, "ffn_dim": 64},
    hubert_expert={
        "hidden_size": 32,
        "num_layers": 1,
        "heads": 2,
        "ffn_dim": 64,
        "conv_channels": 16,
    },
    llms={
        "1b": {
            "hidden_size": 64,
            "num_layers": 2,
            "intermediate_size": 128,
            "heads": 4,
            "kv_heads": 2,
            "vocab_size": 512,
            "tie_embeddings": True,
        },
        "8b": {
            "hidden_size": 96,
            "num_layers": 2,
            "intermediate_size": 192,
            "heads": 4,
            "kv_heads": 2,
            "vocab_size": 512,
            "tie_embeddings": False,
        },
    },
    weak_dim=32,
    batch=2,
    seconds=(0.5, 1.0),
    generation_batches=(1, 2),
    new_tokens=4,
    audio_frames=10,
    matmul_size=256,
)
LLM_NAMES = {"1b": "Llama-3.2-1B", "8b": "Llama-3.1-8B"}


#: The file that marks a source without weights (SpeechBrain's lobes look for a
#: ``.safetensors``, ``.bin`` or ``.ckpt`` file in a local source; it is empty).
RANDOM_WEIGHTS = "random_weights.safetensors"


def mark_random(folder: Path) -> str:
    """Marks ``folder`` as a source that :func:`random_weights` builds."""
    (Path(folder) / RANDOM_WEIGHTS).touch()
    return str(folder)


def whisper_source(
    folder: Path, d_model: int, num_layers: int, heads: int, ffn_dim: int, n_mels: int = 80
) -> str:
    """A Whisper source without weights: config and feature extractor (as
    :func:`speechbrain_mowe.tiny.make_tiny_whisper` writes them, 30 s window)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor

    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=num_layers,
        decoder_layers=1,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    config.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=n_mels, chunk_length=30).save_pretrained(folder)
    return mark_random(folder)


def hubert_source(
    folder: Path, hidden_size: int, num_layers: int, heads: int, ffn_dim: int, conv_channels: int
) -> str:
    """A HuBERT source without weights (as :func:`speechbrain_mowe.tiny.make_tiny_ssl`)."""
    from transformers import Wav2Vec2FeatureExtractor

    config = ssl_config("Hubert", hidden_size, num_layers, heads, ffn_dim, conv_channels)
    config.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return mark_random(folder)


def llm_source(
    folder: Path,
    hidden_size: int,
    num_layers: int,
    intermediate_size: int,
    heads: int,
    kv_heads: int,
    vocab_size: int,
    tie_embeddings: bool,
) -> str:
    """A Llama source without weights: config and the tiny chat tokenizer of
    :func:`speechbrain_mowe.tiny.make_tiny_tokenizer` (its ids are a few hundred;
    the embedding and output layers have the full ``vocab_size``)."""
    from transformers import LlamaConfig

    tokenizer = make_tiny_tokenizer(str(folder))
    config = LlamaConfig(
        vocab_size=max(vocab_size, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_embeddings,
    )
    config.save_pretrained(folder)
    return mark_random(folder)


@contextlib.contextmanager
def random_weights(device: torch.device):
    """While open, ``AutoModel.from_pretrained`` and
    ``AutoModelForCausalLM.from_pretrained`` (what SpeechBrain's lobes and
    :class:`~speechbrain_mowe.lobes.LanguageModel` call) build the model of a
    source marked by :func:`mark_random` from its config, randomly
    initialised, directly on ``device``, in the ``dtype`` and with the
    ``attn_implementation`` they are given, in eval mode as
    ``from_pretrained`` returns it; other sources load as usual."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    classes = (AutoModel, AutoModelForCausalLM)
    saved = {cls: cls.__dict__.get("from_pretrained") for cls in classes}
    loaders = {cls: cls.from_pretrained for cls in classes}

    def from_config(
        cls, source, *args, config=None, dtype=None, attn_implementation=None, **kwargs
    ):
        if not (Path(str(source)) / RANDOM_WEIGHTS).exists():
            if dtype is not None:
                kwargs["dtype"] = dtype
            if attn_implementation is not None:
                kwargs["attn_implementation"] = attn_implementation
            return loaders[cls](source, *args, config=config, **kwargs)
        config = config if config is not None else AutoConfig.from_pretrained(source)
        options = {"dtype": dtype or torch.get_default_dtype()}
        if attn_implementation is not None:
            options["attn_implementation"] = attn_implementation
        with torch.device(device):
            return cls.from_config(config, **options).eval()

    for cls in classes:
        cls.from_pretrained = classmethod(from_config)
    try:
        yield
    finally:
        for cls, method in saved.items():
            if method is None:
                del cls.from_pretrained
            else:
                cls.from_pretrained = method


def free() -> None:
    """Returns the memory of deleted models to the GPU."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(device: torch.device, run: Callable[[], object]) -> float:
    """Seconds of ``run`` (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def matmul_tflops(device: torch.device, size: int, dtype: torch.dtype, repeats: int = 10) -> float:
    """TFLOP/s of ``size``-cubed matrix products, after three warm-ups."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)
    for _ in range(3):
        torch.matmul(a, b, out=out)

    def products():
        for _ in range(repeats):
            torch.matmul(a, b, out=out)

    return 2 * size**3 * repeats / timed(device, products) / 1e12


def peak_memory(device: torch.device, step: Callable[[], object]) -> Dict[str, Optional[float]]:
    """GB allocated at the peak of one ``step``, and the part above what was
    allocated before it (None on a CPU)."""
    if device.type != "cuda":
        return {"peak_gb": None, "step_gb": None}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_gb": peak / 1e9, "step_gb": (peak - before) / 1e9}


def gb(value: Optional[float]) -> str:
    """A table cell of GB."""
    return "-" if value is None else f"{value:.1f}"


@dataclass
class Batch:
    """A training batch on the device, as the Brain gives it to the model.

    Arguments
    ---------
    wavs, lens : torch.Tensor
        ``[b, s]`` waveforms and relative lengths.
    prefix, suffix, answer : (torch.Tensor, torch.Tensor)
        Prompt and answer tokens with relative lengths.
    task_ids : torch.Tensor
        The router's task of each clip.
    audio_seconds : float
        Seconds of audio in the batch.
    """

    wavs: torch.Tensor
    lens: torch.Tensor
    prefix: Tuple[torch.Tensor, torch.Tensor]
    suffix: Tuple[torch.Tensor, torch.Tensor]
    answer: Tuple[torch.Tensor, torch.Tensor]
    task_ids: torch.Tensor
    audio_seconds: float


class Run:
    """What the sections share: arguments, shapes, sources, figures, built parts.

    Arguments
    ---------
    args : argparse.Namespace
        The command line.
    sources : dict
        Source folders made by :func:`write_sources`.
    """

    def __init__(self, args: argparse.Namespace, sources: Dict[str, str]):
        self.args = args
        self.device = torch.device(args.device)
        self.shapes = SMALLEST if args.smallest else PAPER
        self.sources = sources
        self.results: Dict = {"flop_formula": FLOP_FORMULA, "errors": [], "skipped": []}
        self.started = time.perf_counter()
        self.audio: Optional[Tuple[WhisperEncoder, List]] = None
        self.kept: Dict[str, Dict] = {}
        self.peaks: Dict[str, float] = {}
        self.tables: Dict[str, List[List]] = {}
        self.repeats = args.repeats or (1 if args.smallest else 5)
        self.warmup = args.warmup or (1 if args.smallest else 2)

    def log(self, message: str) -> None:
        """A progress line (not a table row)."""
        print(f"[{time.perf_counter() - self.started:6.1f} s] {message}", flush=True)

    def save(self) -> None:
        """Writes the figures so far to ``--json``."""
        self.results["seconds_so_far"] = time.perf_counter() - self.started
        write_json(self.args.json, {"arguments": vars(self.args), "results": self.results})

    def attempt(self, where: str, run: Callable, *args):
        """``run(*args)``, or None after printing and recording its error."""
        try:
            return run(*args)
        except Exception as error:  # the run goes on
            trace = traceback.format_exc()
            print(f"ERROR in {where}: {type(error).__name__}: {error}", flush=True)
            print(trace, file=sys.stderr, flush=True)
            self.results["errors"].append({"where": where, "error": repr(error), "trace": trace})
            return None
        finally:
            free()
            self.save()

    def over_budget(self, what: str) -> bool:
        """Whether ``--budget`` seconds are spent (then ``what`` is skipped, said so)."""
        if time.perf_counter() - self.started <= self.args.budget:
            return False
        self.log(f"skipped {what}: the {self.args.budget:g} s budget is spent")
        self.results["skipped"].append(what)
        return True

    def peak(self, precision: str) -> float:
        """The measured matmul TFLOP/s of ``precision`` (``bf16`` or ``fp32``)."""
        if precision not in self.peaks:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            self.peaks[precision] = matmul_tflops(self.device, self.shapes.matmul_size, dtype)
        return self.peaks[precision]

    def audio_parts(self) -> Tuple[WhisperEncoder, List]:
        """The base encoder and the pool, built once and shared by every model."""
        if self.audio is None:
            start = time.perf_counter()
            with random_weights(self.device):
                base = WhisperEncoder(self.sources["base"], mode="variable")
                pool = [WhisperEncoder(self.sources["whisper"], mode="variable") for _ in "ab"]
                pool += [HuBERTEncoder(self.sources["hubert"]) for _ in "ab"]
            self.audio = (base.to(self.device), [expert.to(self.device) for expert in pool])
            self.log(f"built the base and the pool in {time.perf_counter() - start:.1f} s")
        return self.audio

    def llm(self, size: str, dtype: torch.dtype, attention: str = "sdpa", lora: bool = True):
        """A random LLM of ``size`` (``1b``/``8b``), LoRA r 8 alpha 32 on q/v."""
        start = time.perf_counter()
        with random_weights(self.device):
            llm = LanguageModel(
                self.sources[size],
                lora_rank=8 if lora else 0,
                lora_alpha=32,
                lora_target_modules=("q_proj", "v_proj"),
                dtype=dtype,
                attn_implementation=attention,
            )
        self.log(
            f"built the {size} LLM ({dtype}, {attention}, LoRA {lora}) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        return llm.to(self.device)

    def models(self, llm: LanguageModel) -> Dict[str, MoWEAudioLLM]:
        """The MoWE model and the base-only model around one LLM (and one base)."""
        base, pool = self.audio_parts()
        with torch.device(self.device):
            # As the mowe_paper family: hybrid top-1 router, gate = the expert's probability.
            router = build_router(
                "hybrid",
                base.output_dim,
                len(pool),
                num_tasks=len(TASKS),
                top_k=1,
                renormalize=False,
                noise_std=0.1,
            )
            encoders = {
                "MoWE": MoWEEncoder(
                    base,
                    pool,
                    router,
                    self.shapes.weak_dim,
                    weak_fusion="sum",
                    freeze_base=True,
                    freeze_weak=True,
                ),
                "base-only": MoWEEncoder(base),
            }
            built = {
                name: MoWEAudioLLM(
                    encoder,
                    SequenceCNNProjector(encoder.output_dim, llm.embedding_dim, downsample=8),
                    llm,
                    tasks=list(TASKS),
                )
                for name, encoder in encoders.items()
            }
        return {name: model.to(self.device).train() for name, model in built.items()}

    def batch(self, model: MoWEAudioLLM) -> Batch:
        """``--batch`` clips evenly from the shortest to the longest, tasks in turn."""
        shapes, device = self.shapes, self.device
        seconds = torch.linspace(*shapes.seconds, shapes.batch)
        samples = (seconds * 16000).long()
        generator = torch.Generator().manual_seed(0)
        wavs = 0.1 * torch.randn(shapes.batch, int(samples.max()), generator=generator)
        wavs = wavs * (torch.arange(wavs.shape[1]) < samples[:, None])
        names = [list(TASKS)[i % len(TASKS)] for i in range(shapes.batch)]
        prefix, suffix = model.llm.tokenize_prompts([TASKS[name][0] for name in names])
        answer = model.llm.tokenize_answers([TASKS[name][1] for name in names])

        def on_device(tokens):
            return tokens[0].to(device), tokens[1].to(device)

        return Batch(
            wavs.to(device),
            (samples / samples.max()).to(device),
            on_device(prefix),
            on_device(suffix),
            on_device(answer),
            model.task_ids(names).to(device),
            float(seconds.sum()),
        )


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``bf16``, none for ``fp32``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_step(model: MoWEAudioLLM, batch: Batch, precision: str, device: torch.device):
    """One training step of ``model`` (forward, loss, backward, AdamW step) as a
    callable, and a dict that holds the routing of its last call."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    last = {}

    def step():
        with autocast(device, precision):
            out = model(
                batch.wavs, batch.lens, batch.prefix, batch.suffix, batch.answer, batch.task_ids
            )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        last["routing"] = out.audio.encoded.routing

    return step, last


def llm_alone_step(model: MoWEAudioLLM, batch: Batch, precision: str, device: torch.device):
    """The LLM's forward, answer loss and backward alone, on the audio
    embeddings of ``batch`` computed once, as a callable; and the padded
    sequence: ``(batch, length, positions given the output layer, real tokens)``."""
    llm = model.llm
    with torch.no_grad(), autocast(device, precision):
        audio = model.encode_audio(
            batch.wavs, batch.lens, batch.task_ids, prompt=(batch.prefix, batch.suffix)
        )
        _, mask, _, _ = llm._assemble(
            audio.embeds, audio.lens, batch.prefix, batch.suffix, batch.answer, left_pad=True
        )
    embeds = audio.embeds.detach().requires_grad_(True)
    lora = [p for p in llm.parameters() if p.requires_grad]
    keep = int(to_absolute(batch.answer[1], batch.answer[0].shape[1]).max()) + 1
    if not (llm.answer_logits_only and llm._keeps_some_logits):
        keep = mask.shape[1]

    def step():
        with autocast(device, precision):
            out = llm(embeds, audio.lens, batch.prefix, batch.suffix, batch.answer)
        sums, tokens = answer_token_losses(out.logits, out.labels)
        (sums.sum() / tokens.sum().clamp(min=1)).backward()
        embeds.grad = None
        for parameter in lora:
            parameter.grad = None

    return step, (mask.shape[0], mask.shape[1], keep, int(mask.sum()))


def llm_flops(llm: LanguageModel, batch: int, length: int, keep: int) -> Dict[str, float]:
    """The LLM's FLOP per training step (:data:`FLOP_FORMULA`)."""
    embed = llm.model.get_input_embeddings().weight
    output = llm.model.get_output_embeddings()
    vocab, width = embed.shape
    # named_parameters lists a tied output layer once, as the input embedding.
    weights = sum(p.numel() for name, p in llm.model.named_parameters() if "lora_" not in name)
    untied = output is not None and output.weight is not embed
    n = weights - embed.numel() - (output.weight.numel() if untied else 0)
    layers = llm.model.config.num_hidden_layers
    positions = batch * length
    flops = (
        4 * n * positions
        + 4 * vocab * width * batch * keep
        + 12 * layers * width * batch * length**2
    )
    return {"non_embedding_params": n, "positions": positions, "flop": flops}


def measure_training(run: Run, size: str, precision: str, llm: LanguageModel, keep: bool = False):
    """Times the MoWE model, the base-only model and the LLM alone; the rows go
    to ``run.tables``; returns the models when ``keep``."""
    section = f"train_{size}"
    models = run.models(llm)
    batch = run.batch(models["MoWE"])
    steps, last = {}, {}
    for name, model in models.items():
        steps[name], last[name] = train_step(model, batch, precision, run.device)
    steps["LLM alone"], (b, length, kept, tokens) = llm_alone_step(
        models["MoWE"], batch, precision, run.device
    )
    seconds = interleaved(steps, run.repeats, run.warmup)
    memory = {name: peak_memory(run.device, step) for name, step in steps.items()}
    routing = last["MoWE"]["routing"]
    chosen = routing.experts[:, 0].tolist() if routing is not None else []
    flops = llm_flops(llm, b, length, kept)
    peak = run.peak(precision)
    figures = {
        "audio_seconds": batch.audio_seconds,
        "llm_sequence": {"batch": b, "length": length, "output_positions": kept, "tokens": tokens},
        "routing_last_step": {"experts": chosen, "names": models["MoWE"].experts},
        "llm_flops": flops,
        "matmul_peak_tflops": peak,
        "variants": {},
    }
    label = f"{LLM_NAMES[size]}-shaped"
    for name in steps:
        times = summary(seconds[name])
        median = times["median"]
        entry = {
            "seconds": times,
            "x_base_only": ratio(seconds[name], seconds["base-only"]),
            **memory[name],
        }
        if name != "LLM alone":
            entry["audio_seconds_per_s"] = batch.audio_seconds / median
        entry["llm_tokens_per_s"] = tokens / median
        figures["variants"][name] = entry
        audio = f"{entry['audio_seconds_per_s']:.1f}" if "audio_seconds_per_s" in entry else "-"
        run.tables[section].append(
            [
                label,
                precision,
                name,
                shown(times),
                audio,
                f"{tokens / median:.0f}",
                shown(entry["x_base_only"], 2),
                gb(entry["peak_gb"]),
                gb(entry["step_gb"]),
            ]
        )
    llm_s = figures["variants"]["LLM alone"]["seconds"]["median"]
    mowe_s = figures["variants"]["MoWE"]["seconds"]["median"]
    figures["mfu_llm_alone"] = flops["flop"] / llm_s / 1e12 / peak
    figures["mfu_in_mowe_step"] = flops["flop"] / mowe_s / 1e12 / peak
    run.tables[f"{section} MFU"].append(
        [
            label,
            precision,
            f"{flops['non_embedding_params'] / 1e9:.3g}",
            f"{b} x {length}",
            f"{flops['flop'] / 1e12:.3g}",
            f"{llm_s:.4f}",
            f"{flops['flop'] / llm_s / 1e12:.3g}",
            f"{100 * figures['mfu_llm_alone']:.3g}",
            f"{100 * figures['mfu_in_mowe_step']:.3g}",
            f"{peak:.3g}",
        ]
    )
    run.results.setdefault(section, {})[precision] = figures
    run.log(
        f"{section} {precision}: MoWE {shown(figures['variants']['MoWE']['seconds'])} s, "
        f"x base-only {shown(figures['variants']['MoWE']['x_base_only'], 2)}, LLM alone "
        f"{llm_s:.4f} s, MFU {100 * figures['mfu_llm_alone']:.1f} %; experts chosen {chosen}"
    )
    return models if keep else None


TRAIN_HEADER = [
    "LLM",
    "precision",
    "model",
    "median s (min-max)",
    "audio s/s",
    "LLM tokens/s",
    "time x base-only (min-max)",
    "peak GB",
    "step GB",
]
MFU_HEADER = [
    "LLM",
    "precision",
    "N non-embedding (B)",
    "b x S",
    "TFLOP/step",
    "LLM alone s",
    "TFLOP/s",
    "MFU % LLM alone",
    "MFU % in MoWE step",
    "matmul peak TFLOP/s",
]


def print_training(run: Run, section: str) -> None:
    """The step table and the MFU table of a training section."""
    print(
        f"\nTraining step ({section}): {run.shapes.batch} clips of {run.shapes.seconds[0]:g}-"
        f"{run.shapes.seconds[1]:g} s, {run.repeats} interleaved repetitions after "
        f"{run.warmup} warm-up(s); LLM alone = on cached audio embeddings"
    )
    print(table(TRAIN_HEADER, run.tables[section]))
    print(f"\nLLM model FLOP utilisation ({section}). {FLOP_FORMULA}")
    print(table(MFU_HEADER, run.tables[f"{section} MFU"]))


def section_machine(run: Run) -> None:
    """The GPU, the versions and the matmul peaks."""
    import peft
    import speechbrain
    import transformers

    device = run.device
    cuda = device.type == "cuda"
    info = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "gpu_memory_gb": torch.cuda.get_device_properties(device).total_memory / 1e9
        if cuda
        else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "speechbrain": speechbrain.__version__,
        "speechbrain_path": str(Path(speechbrain.__file__).parent),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    run.results["machine"] = info
    run.save()
    for precision in ("bf16", "fp32"):
        info[f"{precision}_matmul_tflops"] = run.peak(precision)
    size = run.shapes.matmul_size
    rows = [
        ["device", info["device"]],
        ["GPU memory GB", gb(info["gpu_memory_gb"])],
        ["python", info["python"]],
        ["torch", info["torch"]],
        ["transformers", info["transformers"]],
        ["peft", info["peft"]],
        ["speechbrain", info["speechbrain"]],
        [f"bf16 matmul TFLOP/s ({size}^3)", f"{info['bf16_matmul_tflops']:.3g}"],
        [
            f"fp32 matmul TFLOP/s ({size}^3, TF32 {info['tf32_matmul']})",
            f"{info['fp32_matmul_tflops']:.3g}",
        ],
    ]
    print("\nMachine")
    print(table(["item", "value"], rows))


def section_train(run: Run, size: str) -> None:
    """``train_1b`` / ``train_8b``: bf16, then fp32 (for 8B, if it fits)."""
    section = f"train_{size}"
    run.tables[section], run.tables[f"{section} MFU"] = [], []
    label = f"{LLM_NAMES[size]}-shaped"

    def bf16():
        llm = run.llm(size, torch.bfloat16)
        models = measure_training(run, size, "bf16", llm, keep=size == "1b")
        if models is not None:
            run.kept["1b bf16"] = models

    def fp32():
        if size == "8b" and run.device.type == "cuda":
            need = parameter_count(run.sources[size]) * 4 * 1.2 + 8e9
            free_bytes = torch.cuda.mem_get_info(run.device)[0]
            if free_bytes < need:
                reason = f"needs ~{need / 1e9:.0f} GB, {free_bytes / 1e9:.0f} GB free"
                run.log(f"skipped {section} fp32: {reason}")
                run.results["skipped"].append(f"{section} fp32: {reason}")
                run.tables[section].append([label, "fp32", f"skipped: {reason}", *["-"] * 6])
                return
        measure_training(run, size, "fp32", run.llm(size, torch.float32))

    run.attempt(f"{section} bf16", bf16)
    if not run.over_budget(f"{section} fp32"):
        run.attempt(f"{section} fp32", fp32)
    print_training(run, section)


def succeeds(run: Callable[[], object]) -> bool:
    """Calls ``run``; True if it returned."""
    run()
    return True


def parameter_count(source: str) -> int:
    """Parameters of the causal LM at ``source``, counted on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    return sum(p.numel() for p in model.parameters())


def section_attention(run: Run) -> None:
    """The 1B bf16 MoWE step under each attention kernel of the LLM."""
    models = run.kept.get("1b bf16") or run.models(run.llm("1b", torch.bfloat16))
    sdpa = models["MoWE"]
    batch = run.batch(sdpa)
    kernels = {"sdpa": sdpa}
    rows, figures = [], {}
    for kernel in ("eager", "flash_attention_2"):
        if kernel == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            rows.append([kernel, "skipped: flash_attn is not importable", "-", "-", "-"])
            figures[kernel] = "skipped: flash_attn is not importable"
            continue

        def build(kernel=kernel):
            llm = run.llm("1b", torch.bfloat16, attention=kernel)
            model = MoWEAudioLLM(sdpa.mowe_encoder, sdpa.projector, llm, tasks=list(TASKS))
            return model.to(run.device).train()

        built = run.attempt(f"attention {kernel}", build)
        if built is None:
            rows.append([kernel, "failed (see the error above)", "-", "-", "-"])
        else:
            kernels[kernel] = built
    steps = {}
    for kernel, model in kernels.items():
        step, _ = train_step(model, batch, "bf16", run.device)
        if run.attempt(f"attention {kernel} first step", succeeds, step):
            steps[kernel] = step
        else:
            rows.append([kernel, "failed (see the error above)", "-", "-", "-"])
    seconds = interleaved(steps, run.repeats, run.warmup)
    for kernel, step in steps.items():
        times = summary(seconds[kernel])
        memory = peak_memory(run.device, step)
        figures[kernel] = {
            "seconds": times,
            "x_sdpa": ratio(seconds[kernel], seconds["sdpa"]),
            **memory,
        }
        rows.append(
            [
                kernel,
                shown(times),
                shown(figures[kernel]["x_sdpa"], 2),
                gb(memory["peak_gb"]),
                gb(memory["step_gb"]),
            ]
        )
    run.results["attention"] = figures
    order = {"sdpa": 0, "eager": 1, "flash_attention_2": 2}
    rows.sort(key=lambda row: order[row[0]])
    print(f"\nAttention kernels of the {LLM_NAMES['1b']}-shaped LLM: MoWE training step, bf16")
    print(
        table(["kernel", "median s (min-max)", "time x sdpa (min-max)", "peak GB", "step GB"], rows)
    )


def section_generate(run: Run) -> None:
    """Greedy tokens/s: ours with the KV cache against SpeechBrain's searcher."""
    shapes = run.shapes
    llm = run.llm("1b", torch.bfloat16, lora=False).eval()
    searcher = S2SHuggingFaceLLMGreedySearcher(
        _HuggingFaceLLM(llm.model),
        temperature=0.0,
        bos_index=llm.tokenizer.bos_token_id,
        eos_index=llm.end_token_id,
        min_decode_ratio=0.0,
        max_decode_ratio=1.0,
    )
    rows, figures = [], {}
    for batch in shapes.generation_batches:
        every = decoders(llm, searcher, batch, shapes.new_tokens, shapes.audio_frames)
        runs = {
            "ours (KV cache)": every["ours, batched"],
            "SpeechBrain searcher": every["SpeechBrain searcher"],
        }
        with torch.no_grad():
            made = {
                "ours (KV cache)": sum(map(len, runs["ours (KV cache)"]())),
                "SpeechBrain searcher": sum(map(len, runs["SpeechBrain searcher"]()[0])),
            }
        seconds = interleaved(runs, run.repeats, run.warmup)
        entry = {
            name: {
                "seconds": summary(t),
                "tokens": made[name],
                "tokens_per_s": made[name] / summary(t)["median"],
            }
            for name, t in seconds.items()
        }
        figures[f"batch {batch}"] = entry
        reference = entry["SpeechBrain searcher"]["tokens_per_s"]
        for name, e in entry.items():
            rows.append(
                [
                    batch,
                    shapes.new_tokens,
                    name,
                    e["tokens"],
                    f"{e['tokens_per_s']:.0f}",
                    shown(e["seconds"]),
                    f"{e['tokens_per_s'] / reference:.1f}",
                ]
            )
        run.log(
            f"generate batch {batch}: "
            + ", ".join(f"{name} {e['tokens_per_s']:.0f} tokens/s" for name, e in entry.items())
        )
    run.results["generate"] = figures
    print(
        f"\nGreedy generation, {LLM_NAMES['1b']}-shaped LLM in bf16, {shapes.audio_frames} "
        "audio embeddings, random weights (ours held to the length by min_new_tokens)"
    )
    header = [
        "batch",
        "new tokens",
        "decoder",
        "tokens made",
        "tokens/s",
        "median s (min-max)",
        "speed x SpeechBrain's",
    ]
    print(table(header, rows))


def write_sources(folder: Path, shapes: Shapes) -> Dict[str, str]:
    """Source folders (configs, tokenizers, feature extractors; no weights)."""
    return {
        "base": whisper_source(folder / "base", **shapes.base),
        "whisper": whisper_source(folder / "whisper", **shapes.whisper_expert),
        "hubert": hubert_source(folder / "hubert", **shapes.hubert_expert),
        **{size: llm_source(folder / size, **dims) for size, dims in shapes.llms.items()},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--smallest",
        action="store_true",
        help="tiny shapes (a CPU runs everything in well under a minute)",
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, help="timed repetitions (5; 1 with --smallest)")
    parser.add_argument("--warmup", type=int, help="warm-up repetitions (2; 1 with --smallest)")
    parser.add_argument(
        "--budget",
        type=float,
        default=330.0,
        help="seconds after which the sections not started are skipped",
    )
    parser.add_argument("--json", help="write the figures here (rewritten after each one)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        run = Run(args, {})
        run.log(f"device {run.device}, shapes '{run.shapes.name}', sections {args.sections}")
        run.sources = write_sources(Path(folder), run.shapes)
        run.save()
        sections = {
            "machine": lambda: section_machine(run),
            "train_1b": lambda: section_train(run, "1b"),
            "attention": lambda: section_attention(run),
            "generate": lambda: section_generate(run),
            "train_8b": lambda: section_train(run, "8b"),
        }
        for name in SECTIONS:
            if name not in args.sections or run.over_budget(name):
                continue
            if name in ("generate", "train_8b"):
                run.kept.clear()  # the 1B training models
            run.log(f"section {name}")
            run.attempt(name, sections[name])
        run.kept.clear()
        run.audio = None
        run.log(f"done, {len(run.results['errors'])} error(s)")
        run.save()
    return 1 if run.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
