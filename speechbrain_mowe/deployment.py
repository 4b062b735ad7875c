"""Copies of an inference folder to deploy or share.

:func:`export_portable` writes a self-contained copy for a model hub or a
server: every source copied (never linked) and pinned, the test metrics, and a
model card (``README.md``) that says what the model was trained on, how it
scored and where each of its parts comes from, with its licence::

    <target>/inference.yaml    as in the trained folder (relative sources)
    <target>/model.ckpt
    <target>/sources/<digest>/ the sources, copied, checked on every load
    <target>/test_metrics.json the test sets' metrics.json
    <target>/README.md         the model card

:func:`export_merged` reads an inference folder (a training run's
``output_folder``), merges the LLM's LoRA adapters into its weights at the
folder's ``lora_scale`` (peft's ``merge_and_unload``) and writes a new inference
folder::

    <target>/inference.yaml   the same family, tasks and decoding; merged_lora: True
    <target>/model.ckpt       the trained parameters but LoRA's (projector, router, ...)
    <target>/llm/             the merged LLM and its tokenizer (save_pretrained)

:class:`~speechbrain_mowe.inference.PretrainedAudioLLM` loads it like any
other; its answers are the unmerged model's, and its LLM computes no LoRA
branch. Models with WavLLM's prompt-aware LoRA cannot be merged (each example
weights the branches by its own prompt).
"""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import torch

from speechbrain_mowe import __version__
from speechbrain_mowe.artifacts import artifact_record
from speechbrain_mowe.export import MODEL_CHECKPOINT, write_inference_folder
from speechbrain_mowe.inference import PretrainedAudioLLM

#: The portable export's copy of the test sets' metrics.
TEST_METRICS = "test_metrics.json"


def export_merged(source, target, **kwargs) -> Path:
    """Writes the merged copy of the inference folder ``source`` into ``target``.

    Arguments
    ---------
    source : str or Path
        An inference folder (``inference.yaml`` and ``model.ckpt``).
    target : str or Path
        Where to write (created; the LLM goes to ``<target>/llm``).
    **kwargs
        Passed to :meth:`PretrainedAudioLLM.from_hparams` (e.g. ``overrides``).

    Returns
    -------
    Path
        The ``inference.yaml`` written.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.families import load_family
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = Path(tempfile.mkdtemp())
    >>> sources = {"whisper_source": make_tiny_whisper(tmp / "whisper"),
    ...            "llm_source": make_tiny_llm(tmp / "llm")}
    >>> model = load_family("tiny_mowe", sources, tasks=["asr"])
    >>> _ = write_inference_folder(tmp / "run", model, instructions={"asr": "Transcribe."})
    >>> export_merged(tmp / "run", tmp / "merged").name
    'inference.yaml'
    >>> merged = PretrainedAudioLLM.from_hparams(source=tmp / "merged")
    >>> merged.mods.model.llm._lora_layers()
    []
    """
    target = Path(target)
    loaded = PretrainedAudioLLM.from_hparams(source=source, **kwargs)
    model = loaded.mods.model
    model.llm.merge_lora()  # at the folder's lora_scale
    llm_folder = (target / "llm").resolve()
    model.llm.model.save_pretrained(llm_folder)
    model.llm.tokenizer.save_pretrained(llm_folder)
    return _rewrite(loaded, source, target, {"llm_source": str(llm_folder)}, merged_lora=True)


def _rewrite(
    loaded: PretrainedAudioLLM,
    source,
    target: Path,
    sources: Optional[Mapping[str, str]] = None,
    merged_lora: bool = False,
    seal: str = "link",
) -> Path:
    """Writes the loaded model of the folder ``source`` as a new inference
    folder in ``target``, with some of its sources replaced."""
    hparams, model = loaded.hparams, loaded.mods.model
    # Loading froze every parameter: what model.ckpt held (but the LLM's, when
    # merged into the LLM) is what the new model.ckpt holds.
    trained = torch.load(Path(source) / MODEL_CHECKPOINT, map_location="cpu", weights_only=True)
    model.kept_frozen = frozenset(name for name, _ in model.named_parameters() if name in trained)
    spec = model.built_from
    model.built_from = replace(spec, sources={**spec.sources, **(sources or {})})
    return write_inference_folder(
        target,
        model,
        instructions=dict(hparams.answers),  # a recipe's own tasks need no registration
        decoding=loaded.decoding,
        precision=getattr(hparams, "precision", "fp32"),
        max_audio_seconds=hparams.max_audio_seconds,
        stage=getattr(hparams, "trained_in_stage", None),
        lora_scale=1.0 if merged_lora else loaded.lora_scale,  # merged: no adapters left
        merged_lora=merged_lora or getattr(hparams, "merged_lora", False),
        training_data=getattr(hparams, "training_data", None),
        seal=seal,
        source_origins={  # a replaced source is no longer what made the old one
            key: made
            for key, made in (getattr(hparams, "source_origins", None) or {}).items()
            if key not in (sources or {})
        },
    )


def folder_metrics(folder) -> Dict[str, Dict]:
    """The ``metrics.json`` of each test set a training run scored in ``folder``
    (``test_results/<name>/``), or those a portable export kept."""
    folder = Path(folder)
    if (folder / TEST_METRICS).is_file():
        return json.loads((folder / TEST_METRICS).read_text(encoding="utf-8"))
    return {
        path.parent.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(folder.glob("test_results/*/metrics.json"))
    }


def _origin(key: str, value, folder: Path, hparams) -> List[str]:
    """What the model card says of a source: where it came from and its licence
    (what ``inference.yaml`` recorded, or the record a sealed folder holds)."""
    revision = (getattr(hparams, "hub_revisions", None) or {}).get(key)
    if revision:
        return [f"hub repository `{value}` at revision `{revision}`", "see its own model card"]
    sealed = folder / str(value)
    made = (getattr(hparams, "source_origins", None) or {}).get(key) or (
        artifact_record(sealed) if sealed.exists() else None
    )
    if made:
        options = made.get("options", {})
        described = ", ".join(
            f"{k}: {v}" for k, v in options.items() if k in ("package", "sha256", "objective")
        )
        origin = f"made by the preparation step `{made.get('kind')}`" + (
            f" ({described})" if described else ""
        )
        licence = options.get("licence") or "made by the recipe: this project's (Apache-2.0)"
        return [origin, licence]
    return [f"`{Path(str(value)).name}`", "not recorded: check where it came from"]


def model_card(folder, name: Optional[str] = None) -> str:
    """The model card (Markdown) of an inference folder: the tasks and the
    instructions they were tested with, the training data, the test metrics,
    the family and its settings, and the sources with their licences."""
    loaded = PretrainedAudioLLM.from_hparams(source=folder)
    hparams, model = loaded.hparams, loaded.mods.model
    spec = model.built_from
    name = name or "/".join(Path(folder).resolve().parts[-2:])
    lines = [
        f"# {name}",
        "",
        f"A multi-task audio LLM with a Mixture of Weak Encoders, trained with "
        f"speechbrain-mowe {__version__} (model family `{Path(spec.family).stem}`).",
        "",
        "```python",
        "from speechbrain_mowe.inference import PretrainedAudioLLM",
        "",
        'model = PretrainedAudioLLM.from_hparams(source="<this folder or hub repository>")',
    ]
    for task, answer in hparams.answers.items():
        if answer.get("shortcut"):
            lines.append(f'print(model.{answer["shortcut"]}("audio.wav"))  # {task}')
    lines += ["```", "", "## Tasks", "", "| task | instruction it was tested with |", "|---|---|"]
    lines += [f"| {task} | {a['instruction']} |" for task, a in hparams.answers.items()]
    data = getattr(hparams, "training_data", None) or {}
    lines += ["", "## Training data", ""]
    if data:
        lines += ["| source | training examples |", "|---|---:|"]
        lines += [f"| {source} | {count} |" for source, count in data.items()]
    else:
        lines.append("Not recorded in this folder.")
    lines += ["", "## Test results", ""]
    results = folder_metrics(folder)
    if results:
        lines += [
            "| test set | dataset | task | examples | metric | value |",
            "|---|---|---|---:|---|---:|",
        ]
        for test_set, result in results.items():
            for group in result.get("groups", []):
                for metric, value in group.get("metrics", {}).items():
                    lines.append(
                        f"| {test_set} | {group['dataset']} | {group['task']} | "
                        f"{group.get('examples', '')} | {metric} | {value:.4g} |"
                    )
    else:
        lines.append("No test results were found next to the model.")
    checkpoint = torch.load(Path(folder) / MODEL_CHECKPOINT, map_location="cpu", weights_only=True)
    trained = sum(value.numel() for value in checkpoint.values() if torch.is_tensor(value))
    total = sum(p.numel() for p in model.parameters())
    lines += [
        "",
        "## Model",
        "",
        f"Family `{Path(spec.family).stem}`, router tasks {list(spec.tasks)}; decoding: at "
        f"most {loaded.decoding.max_new_tokens} new tokens, {loaded.decoding.num_beams} "
        f"beam(s); audio up to {hparams.max_audio_seconds:g} s at once (longer: "
        f"{hparams.long_audio}); {trained:,} trained parameters in {MODEL_CHECKPOINT}, "
        f"{total:,} in all.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in spec.settings.items()]
    lines += ["", "## Sources and licences", "", "| source | origin | licence |", "|---|---|---|"]
    for key, value in hparams.model_sources.items():
        origin, licence = _origin(key, value, Path(folder), hparams)
        lines.append(f"| {key} | {origin} | {licence} |")
    for module in model.modules():  # weights the family reads from installed packages
        if getattr(module, "weights_origin", None):
            origin, licence = module.weights_origin.rsplit(", ", 1)
            lines.append(f"| {type(module).__name__} (in the family) | {origin} | {licence} |")
    lines += [
        "",
        "Every source file is pinned by its SHA-256 in `inference.yaml`: a missing or changed "
        "file stops the model from loading, with the file named.",
    ]
    return "\n".join(lines) + "\n"


def export_portable(source, target, name: Optional[str] = None) -> Path:
    """Writes a self-contained copy of an inference folder, with a model card.

    The copy holds every file the model reads (sources copied, never linked,
    each pinned by its SHA-256), its test metrics and ``README.md``; it loads
    with ``PretrainedAudioLLM.from_hparams`` wherever it is put. It is written
    in a hidden folder next to ``target`` and renamed once complete.

    Arguments
    ---------
    source : str or Path
        An inference folder (a training run's ``output_folder``).
    target : str or Path
        A new folder (an existing non-empty one is refused).
    name : str, optional
        The model card's title (default: the source folder's last two names,
        e.g. ``mowe_hybrid/seed_1``).

    Returns
    -------
    Path
        ``target``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.families import load_family
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = Path(tempfile.mkdtemp())
    >>> sources = {"whisper_source": make_tiny_whisper(tmp / "whisper"),
    ...            "llm_source": make_tiny_llm(tmp / "llm")}
    >>> model = load_family("tiny_mowe", sources, tasks=["asr"])
    >>> _ = write_inference_folder(tmp / "run", model, instructions={"asr": "Transcribe."})
    >>> shared = export_portable(tmp / "run", tmp / "shared")
    >>> sorted(p.name for p in shared.iterdir())
    ['README.md', 'inference.yaml', 'model.ckpt', 'sources', 'test_metrics.json']
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty: export into a new folder")
    loaded = PretrainedAudioLLM.from_hparams(source=source)  # every source checked
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _rewrite(loaded, source, partial, seal="copy")
        metrics = folder_metrics(source)
        (partial / TEST_METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        card = model_card(partial, name or "/".join(Path(source).resolve().parts[-2:]))
        (partial / "README.md").write_text(card, encoding="utf-8")
        if target.exists():
            target.rmdir()
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
