"""Deployment copies of an inference folder: the LoRA adapters merged into the LLM.

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

from dataclasses import replace
from pathlib import Path

import torch

from speechbrain_mowe.export import MODEL_CHECKPOINT, write_inference_folder
from speechbrain_mowe.inference import PretrainedAudioLLM


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
    hparams, model = loaded.hparams, loaded.mods.model
    model.llm.merge_lora()  # at the folder's lora_scale
    # Loading froze every parameter: what model.ckpt held, but the LLM's (now
    # in the merged LLM), is what the new model.ckpt holds.
    trained = torch.load(Path(source) / MODEL_CHECKPOINT, map_location="cpu", weights_only=True)
    model.kept_frozen = frozenset(name for name, _ in model.named_parameters() if name in trained)
    llm_folder = (target / "llm").resolve()
    model.llm.model.save_pretrained(llm_folder)
    model.llm.tokenizer.save_pretrained(llm_folder)
    spec = model.built_from
    model.built_from = replace(spec, sources={**spec.sources, "llm_source": str(llm_folder)})
    return write_inference_folder(
        target,
        model,
        instructions={task: answer["instruction"] for task, answer in hparams.answers.items()},
        decoding=loaded.decoding,
        precision=getattr(hparams, "precision", "fp32"),
        max_audio_seconds=hparams.max_audio_seconds,
        stage=getattr(hparams, "trained_in_stage", None),
        merged_lora=True,
    )
