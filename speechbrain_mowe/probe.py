"""Linear probes of frozen encoders: what each one's features hold about a task.

Before a pool is trained behind a router, it pays to know what each encoder can
tell: a weak encoder is worth its cost where it holds what the base lacks. For
each classification task (manifests whose ``answer`` column, or another, is the
label) and each encoder, the probe pools the encoder's frames of every clip
(mean and standard deviation over the valid frames: an example's features do
not depend on its batch) and fits a linear classifier on the training split:
features standardised with the training statistics, multinomial logistic
regression with an L2 penalty, a fixed budget of L-BFGS steps from zero, the
penalty chosen on the validation split; the test accuracy is reported. The
base concatenated with each weak encoder shows what that encoder adds over
the base. Nothing is random but the optional subsampling (``seed``).

A trained model is probed the same way at the point where its LLM reads the
audio (``--model <trained folder>``: the projector's output, routed for each
task as the model routes it, :class:`WhatTheLLMReads`). Where the frozen
encoders hold a task and those embeddings do not, the front end lost it in
training; where the embeddings hold it and the model's answers do not, the
LLM does not read it.

From the command line (``speechbrain-mowe probe`` or ``python -m speechbrain_mowe.probe``)::

    python -m speechbrain_mowe.probe --family whisper_mowe \\
        --sources "{whisper_source: ..., prosody_checkpoint: ..., events_checkpoint: ...,
                    llm_source: ...}" \\
        --folder results/Synthetic/1986/corpus/synthetic-466df24a7b7c --tasks er speaker_sex \\
        --output probe.json

    python -m speechbrain_mowe.probe --encoder base=whisper:{"source": "/models/whisper"} \\
        --encoder ge2e=ge2e --encoder prosody=encoders/prosody-1a2b/encoder.ckpt --base base \\
        --manifest er:train=er_train.csv --manifest er:valid=er_valid.csv \\
        --manifest er:test=er_test.csv --data_root /data --output probe.json

    python -m speechbrain_mowe.probe --model results/Synthetic/1986/base_only/seed_1 \
        --folder results/Synthetic/1986/corpus/synthetic-466df24a7b7c --tasks er speaker_sex

prints a Markdown table (test accuracy %, per task and encoder, with chance)
and writes it with every figure to ``--output`` (JSON) and ``<output>.md``.

Shape legend: ``b`` batch, ``s`` samples, ``t`` frames, ``d`` channels.
"""

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import torch
from speechbrain.utils.data_utils import batch_pad_right
from tqdm import tqdm

from speechbrain_mowe.dataio import FeatureCache, load_audio, load_manifest
from speechbrain_mowe.dataio.manifest import check_columns
from speechbrain_mowe.errors import run_main
from speechbrain_mowe.lobes.encoders import AudioEncoder, build_encoder, load_encoder
from speechbrain_mowe.lobes.sequence import length_mask, to_absolute

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: Inverse L2 strengths tried (the penalty is ``1 / (C * examples)``).
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def pooled(feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation over each example's valid frames.

    Arguments
    ---------
    feats : torch.Tensor
        ``[b, t, d]`` padded features.
    frames : torch.Tensor
        ``[b]`` valid frames of each example.

    Returns
    -------
    torch.Tensor
        ``[b, 2 d]``.

    Example
    -------
    >>> feats = torch.tensor([[[1.0], [3.0], [9.0]], [[2.0], [0.0], [0.0]]])
    >>> pooled(feats, torch.tensor([2, 1]))
    tensor([[2., 1.],
            [2., 0.]])
    """
    mask = length_mask(frames, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
    count = frames.clamp(min=1).to(feats.dtype)[:, None]
    mean = (feats * mask).sum(1) / count
    var = (((feats - mean[:, None]) * mask) ** 2).sum(1) / count
    return torch.cat([mean, var.sqrt()], dim=-1)


class Clips(NamedTuple):
    """The clips of one task and split: ids, audio files and labels."""

    ids: List[str]
    wavs: List[str]
    labels: List[str]


def read_clips(path, data_root, label_column: str = "answer") -> Clips:
    """The clips of a manifest with their labels.

    Raises
    ------
    ManifestError
        One line naming the file, when it lacks the label column.
    """
    check_columns(path, ["ID", "wav", label_column], f"probing on '{label_column}'")
    rows = load_manifest(path, data_root)
    return Clips(
        list(rows),
        [row["wav"] for row in rows.values()],
        [str(row[label_column]).strip() for row in rows.values()],
    )


@torch.no_grad()
def encode(
    encoder,
    clips: Clips,
    batch_size: int = 16,
    cache_folder=None,
    device: str = "cpu",
    desc: str = "",
) -> torch.Tensor:
    """Pooled features (:func:`pooled`) of every clip, in batches of similar
    length; with ``cache_folder``, through the feature cache (the training's
    cache of the same encoder is reused).

    Returns
    -------
    torch.Tensor
        ``[n, 2 d]``, in the order of ``clips``.
    """
    encoder = encoder.to(device).eval().requires_grad_(False)
    cache = None if cache_folder is None else FeatureCache(cache_folder, encoder)
    audio = [load_audio(path) for path in clips.wavs]
    order = sorted(range(len(audio)), key=lambda i: audio[i].shape[0])
    result = [None] * len(audio)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        rows = order[start : start + batch_size]
        wavs, lens = batch_pad_right([audio[i] for i in rows])
        wavs, lens = wavs.to(device), lens.to(device)
        if cache is None:
            feats, feat_lens = encoder(wavs, lens)
        else:
            feats, feat_lens = cache.encode([clips.ids[i] for i in rows], wavs, lens)
        frames = to_absolute(feat_lens, feats.shape[1])
        for row, vector in zip(rows, pooled(feats.float(), frames).cpu()):
            result[row] = vector
    return torch.stack(result)


class WhatTheLLMReads(torch.nn.Module):
    """A trained model's audio embeddings for one task, as its LLM reads them.

    An encoder for :func:`encode`: the MoWE encoder and the projector of
    ``model``, routed with ``task`` (and, for a router that reads the
    instruction, the task's evaluation instruction).

    Arguments
    ---------
    model : speechbrain_mowe.model.MoWEAudioLLM
        The trained model.
    task : str
        The task whose routing (and instruction) the embeddings get.
    instruction : str, optional
        The instruction, for a router that reads it.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.lobes import LanguageModel, MoWEEncoder, SequenceCNNProjector
    >>> from speechbrain_mowe.lobes import TinyConvEncoder
    >>> from speechbrain_mowe.model import MoWEAudioLLM
    >>> from speechbrain_mowe.tiny import make_tiny_llm
    >>> llm = LanguageModel(make_tiny_llm(tempfile.mkdtemp()))
    >>> model = MoWEAudioLLM(MoWEEncoder(TinyConvEncoder(), []),
    ...                      SequenceCNNProjector(64, llm.embedding_dim, 4), llm, tasks=["asr"])
    >>> reads = WhatTheLLMReads(model, "asr")
    >>> embeds, lens = reads(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> embeds.shape[0], embeds.shape[2] == llm.embedding_dim, [round(x, 2) for x in lens.tolist()]
    (2, True, [1.0, 0.57])
    """

    def __init__(self, model, task: str, instruction: Optional[str] = None):
        super().__init__()
        self.model = model
        self.task = task
        self.instruction = instruction

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor):
        """``[b, t, llm width]`` embeddings and their relative lengths."""
        count = wavs.shape[0]
        task_ids = self.model.task_ids([self.task] * count) if self.model.tasks else None
        prompt = None
        if self.model.mowe_encoder.reads_instruction:
            if self.instruction is None:
                raise ValueError(
                    f"this model's router reads the instruction: give the one of task {self.task}"
                )
            prompt = self.model.llm.tokenize_prompts([self.instruction] * count)
        audio = self.model.encode_audio(wavs, wav_lens, task_ids, prompt=prompt)
        return audio.embeds, audio.lens


class Probe(NamedTuple):
    """A fitted probe: its penalty and accuracies (%)."""

    c: float
    valid_accuracy: float
    test_accuracy: float


def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, c: float, steps: int) -> torch.nn.Linear:
    layer = torch.nn.Linear(x.shape[1], classes, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    penalty = 1.0 / (c * len(x))
    optimizer = torch.optim.LBFGS(
        layer.parameters(), max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y)
        loss = loss + 0.5 * penalty * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return layer


def fit_probe(
    features: Mapping[str, torch.Tensor],
    labels: Mapping[str, Sequence[str]],
    c_grid: Sequence[float] = C_GRID,
    steps: int = 100,
) -> Probe:
    """Fits a standardised, L2-penalised logistic regression on ``train``,
    chooses its penalty on ``valid`` and scores it on ``test``.

    Arguments
    ---------
    features : mapping
        Split -> ``[n, d]`` features (``train``, ``valid``, ``test``).
    labels : mapping
        Split -> the labels (strings); a label the training split lacks is
        never predicted.
    c_grid : sequence of float
        Inverse penalty strengths tried.
    steps : int
        L-BFGS iterations per fit (the budget).

    Example
    -------
    >>> x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    >>> y = ["high", "low"] * 30
    >>> x[::2, 0] += 4.0  # the label is in the first feature, and only there
    >>> split = {"train": slice(0, 40), "valid": slice(40, 50), "test": slice(50, 60)}
    >>> probe = fit_probe({k: x[s] for k, s in split.items()}, {k: y[s] for k, s in split.items()})
    >>> probe.test_accuracy
    100.0
    """
    classes = sorted(set(labels["train"]))
    index = {label: i for i, label in enumerate(classes)}
    train = features["train"].double()
    mean, std = train.mean(0), train.std(0).clamp(min=1e-8)

    def standard(split):
        return (features[split].double() - mean) / std

    def accuracy(layer, split):
        predicted = layer(standard(split)).argmax(-1).tolist()
        hits = [classes[p] == label for p, label in zip(predicted, labels[split])]
        return 100.0 * sum(hits) / max(len(hits), 1)

    targets = torch.tensor([index[label] for label in labels["train"]])
    best = None
    for c in c_grid:
        layer = _fit(standard("train"), targets, len(classes), c, steps)
        valid = accuracy(layer, "valid")
        if best is None or valid > best[1]:
            best = (c, valid, layer)
    c, valid, layer = best
    return Probe(c, valid, accuracy(layer, "test"))


def probe_encoders(
    encoders: Mapping[str, AudioEncoder],
    tasks: Mapping[str, Mapping[str, Clips]],
    base: Optional[str] = None,
    batch_size: int = 16,
    cache_folder=None,
    device: str = "cpu",
    steps: int = 100,
    task_encoders: Optional[Mapping[str, Callable[[str], torch.nn.Module]]] = None,
) -> Dict:
    """Probes every encoder (and the base with each other encoder) on every task.

    Arguments
    ---------
    encoders : mapping
        Name -> frozen encoder.
    tasks : mapping
        Task -> split (``train``, ``valid``, ``test``) -> :class:`Clips`.
    base : str, optional
        The name of the base encoder: each other encoder is also probed
        concatenated with it (``base+name``).
    batch_size, cache_folder, device
        How features are computed (see :func:`encode`).
    steps : int
        L-BFGS iterations per fit.
    task_encoders : mapping, optional
        Name -> a function of the task giving its encoder, for features that
        depend on the task (:class:`WhatTheLLMReads`); never cached, never
        concatenated with the base.

    Returns
    -------
    dict
        ``{"tasks": {task: {"chance": %, "majority": %, "examples": {...},
        "probes": {name: {"c", "valid", "test"}}}}, "encoders": [...]}``.
    """
    task_encoders = task_encoders or {}
    results = {"encoders": [*encoders, *task_encoders], "base": base, "tasks": {}}
    for task, splits in tasks.items():
        labels = {split: splits[split].labels for split in SPLITS}
        built = [(name, encoder, cache_folder) for name, encoder in encoders.items()]
        built += [(name, make(task), None) for name, make in task_encoders.items()]
        feats = {
            name: {
                split: encode(
                    encoder,
                    splits[split],
                    batch_size,
                    cache,
                    device,
                    desc=f"{task} {split}: {name}",
                )
                for split in SPLITS
            }
            for name, encoder, cache in built
        }
        if base is not None:
            for name in [n for n in encoders if n != base]:
                feats[f"{base}+{name}"] = {
                    split: torch.cat([feats[base][split], feats[name][split]], dim=-1)
                    for split in SPLITS
                }
        majority, _ = Counter(labels["train"]).most_common(1)[0]
        test = labels["test"]
        probes = {}
        for name, by_split in feats.items():
            probe = fit_probe(by_split, labels, steps=steps)
            probes[name] = {
                "c": probe.c,
                "valid": probe.valid_accuracy,
                "test": probe.test_accuracy,
            }
            logger.info("%s, %s: test accuracy %.1f%%", task, name, probe.test_accuracy)
        results["tasks"][task] = {
            "chance": 100.0 / len(set(labels["train"])),
            "majority": 100.0 * sum(label == majority for label in test) / max(len(test), 1),
            "examples": {split: len(labels[split]) for split in SPLITS},
            "probes": probes,
        }
    return results


def markdown(results: Mapping) -> str:
    """The test accuracies as a Markdown table: a row per task, a column per probe.

    Example
    -------
    >>> print(markdown({"tasks": {"er": {"chance": 25.0, "majority": 30.0, "examples": {},
    ...                                  "probes": {"base": {"test": 70.0}}}}}))
    | task | chance | majority | base |
    |---|---:|---:|---:|
    | er | 25.0 | 30.0 | 70.0 |
    """
    names = list(next(iter(results["tasks"].values()))["probes"]) if results["tasks"] else []
    lines = [
        "| task | chance | majority | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for task, result in results["tasks"].items():
        cells = [f"{result['probes'][name]['test']:.1f}" for name in names]
        lines.append(
            f"| {task} | {result['chance']:.1f} | {result['majority']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def _trained_model(folder: str) -> Dict[str, Callable[[str], torch.nn.Module]]:
    """``--model``: what a trained folder's LLM reads, per task."""
    from speechbrain_mowe.inference import PretrainedAudioLLM

    pretrained = PretrainedAudioLLM.from_hparams(source=folder)
    model = pretrained.mods.model

    def reads(task: str) -> WhatTheLLMReads:
        instruction = pretrained.instruction(task) if model.mowe_encoder.reads_instruction else None
        return WhatTheLLMReads(model, task, instruction)

    return {"model": reads}


def family_encoders(
    family: str,
    sources: Mapping[str, str],
    settings: Optional[Mapping] = None,
    frozen_only: bool = False,
) -> Dict[str, AudioEncoder]:
    """A model family's encoders, named as the model names them: ``base``,
    then each weak encoder ``<index>:<class>``
    (:attr:`MoWEAudioLLM.experts <speechbrain_mowe.model.MoWEAudioLLM.experts>`);
    with ``frozen_only``, only those training leaves as they are (what a probe
    tells of them holds for the trained model too)."""
    from speechbrain_mowe.families import load_family

    model = load_family(family, dict(sources), settings=settings)
    mowe = model.mowe_encoder
    encoders = {"base": mowe.base} if mowe.freeze_base or not frozen_only else {}
    if mowe.freeze_weak or not frozen_only:
        encoders.update(zip(model.experts, mowe.weak_pool))
    return encoders


def _encoders(args, parser) -> Dict[str, AudioEncoder]:
    """The encoders of the command line: a family's base and pool, and ``--encoder``s."""
    encoders = {}
    if args.family:
        sources = _yaml(args.sources, "--sources", parser) or {}
        settings = _yaml(args.settings, "--settings", parser)
        encoders.update(family_encoders(args.family, sources, settings))
    for given in args.encoder:
        name, _, spec = given.partition("=")
        if not name or not spec:
            parser.error(f"--encoder {given}: expected NAME=CHECKPOINT or NAME=REGISTERED[:JSON]")
        if Path(spec).is_file():
            encoders[name] = load_encoder(spec)
        else:
            registered, _, config = spec.partition(":")
            encoders[name] = build_encoder(registered, **(json.loads(config) if config else {}))
    if not encoders and not args.model:
        parser.error(
            "give encoders: --family (with --sources), --encoder NAME=... and/or --model FOLDER"
        )
    return encoders


def _yaml(text, option, parser):
    if not text:
        return None
    from ruamel.yaml import YAML

    try:
        return dict(YAML(typ="safe").load(text))
    except Exception as error:
        parser.error(f"{option} does not read as a YAML mapping: {' '.join(str(error).split())}")


def _tasks(args, parser) -> Dict[str, Dict[str, Clips]]:
    paths: Dict[str, Dict[str, Path]] = {}
    for task in args.tasks or []:
        if not args.folder:
            parser.error("--tasks reads <folder>/<task>_<split>.csv: give --folder")
        paths[task] = {split: Path(args.folder) / f"{task}_{split}.csv" for split in SPLITS}
    for given in args.manifest:
        key, _, path = given.partition("=")
        task, _, split = key.partition(":")
        if split not in SPLITS or not path:
            parser.error(f"--manifest {given}: expected TASK:SPLIT=PATH, SPLIT one of {SPLITS}")
        paths.setdefault(task, {})[split] = Path(path)
    if not paths:
        parser.error("give the tasks: --folder with --tasks, or --manifest TASK:SPLIT=PATH")
    data_root = args.data_root or args.folder or "."
    tasks = {}
    for task, splits in paths.items():
        missing = [split for split in SPLITS if split not in splits]
        if missing:
            parser.error(f"task {task} has no manifest for {missing}")
        tasks[task] = {
            split: read_clips(p, data_root, args.label_column) for split, p in splits.items()
        }
    return tasks


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    """Runs the probe command; returns the results."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_mowe.probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--family", help="a model family whose base and pool are probed")
    parser.add_argument("--sources", help="the family's sources, as a YAML mapping")
    parser.add_argument("--settings", help="the family's settings, as a YAML mapping")
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="an encoder: NAME=<save_encoder checkpoint> or "
        'NAME=<registered name>[:{"json": "config"}]',
    )
    parser.add_argument(
        "--model", help="a trained folder: probes what its LLM reads (the projector's output)"
    )
    parser.add_argument(
        "--base", help="the encoder concatenated with each other one (default with --family: base)"
    )
    parser.add_argument("--folder", help="a corpus folder with <task>_<split>.csv manifests")
    parser.add_argument("--tasks", nargs="+", help="the tasks of --folder")
    parser.add_argument("--manifest", action="append", default=[], metavar="TASK:SPLIT=PATH")
    parser.add_argument("--data_root", help="what $data_root stands for (default: --folder)")
    parser.add_argument("--label_column", default="answer", help="the label (default: answer)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS iterations per fit")
    parser.add_argument("--feature_cache", help="a feature cache folder to read and fill")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="JSON results (and <output>.md, the table)")
    args = parser.parse_args(argv)
    tasks = _tasks(args, parser)
    encoders = _encoders(args, parser)
    base = args.base or ("base" if args.family else None)
    if base is not None and base not in encoders:
        parser.error(f"--base {base} is not one of the encoders: {', '.join(encoders)}")
    task_encoders = _trained_model(args.model) if args.model else None
    results = probe_encoders(
        encoders,
        tasks,
        base,
        args.batch_size,
        args.feature_cache,
        args.device,
        args.steps,
        task_encoders,
    )
    table = markdown(results)
    print(table)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        output.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    return results


def run() -> int:
    """The probe command: :func:`main`, with an error the user caused in one line."""
    run_main(main, sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(run())
