"""The inference folder that training leaves next to its results.

At the end of :func:`speechbrain_mowe.training.train_and_evaluate`, once
the best checkpoint is loaded and tested, :func:`write_inference_folder`
writes into the recipe's ``output_folder``::

    inference.yaml             rebuilds the model and loads model.ckpt
    model.ckpt                 the model's trained parameters
    sources/<digest>/<key>/    every local source of the model (the converted
                               Whisper, pre-trained encoders, the LLM's initial
                               weights and tokenizer), hard-linked or copied,
                               each file pinned by its SHA-256 in inference.yaml

The folder is sealed: it answers as tested wherever it is moved or copied, and
whatever happens to the files it was made from, or refuses to load in one
line naming the file that is missing or changed (see
:mod:`speechbrain_mowe.sealing`). Hub sources are pinned by their revision.
:class:`speechbrain_mowe.inference.PretrainedAudioLLM` loads the folder with
``PretrainedAudioLLM.from_hparams(source=<output_folder>)``.
``inference.yaml`` is a HyperPyYAML file in SpeechBrain's layout::

    format: 3                          # this layout (2: unsealed, still read)
    model_family: tiny_mowe            # where the family came from (a name or a path)
    model_sources:                     # relative: inside this folder; else a hub id
        whisper_source: sources/5d1c0a93e2b4/whisper_source
        llm_source: meta-llama/Llama-3.2-1B-Instruct
    source_checksums:                  # per local source, the SHA-256 of each file
        whisper_source: {config.json: 9f2c..., model.safetensors: 41ab...}
    hub_revisions: {llm_source: 4e20de362430cd3b72f300e6b0f18e50e7166e08}
    source_origins:                    # what made each local source (its prepared.json)
        whisper_source: {kind: whisper_tiny_en, options: {package: ..., licence: ...}}
    model_settings: {weak_dim: 32, top_k: 2, aux_weight: 0.1, long_audio: refuse}
    tasks: [asr, ast, er, aac]         # the router's task ids, in order
    answers:                           # per tested task, what inference needs
        asr: {instruction: Transcribe the speech., join: ' ', shortcut: transcribe_file}
        er: {instruction: 'Which emotion ...: neutral, happy, angry, sad.', join: null, ...}
    training_data: {asr: 1000, er: 1000}  # training examples per source
    max_new_tokens: 200                # decoding
    num_beams: 1
    precision: bf16                    # the training's eval_precision
    max_audio_seconds: 30.0            # longest audio read at once
    long_audio: refuse                 # or chunk, for longer audio
    lora_scale: 1.0                    # factor of the LoRA scale (as tested)
    merged_lora: False                 # True: llm_source holds the LoRA merged in
    trained_in_stage: instruction_tuning  # with training stages: the stage of the model
    model_folder: !PLACEHOLDER         # the folder itself (from_hparams gives it)
    model: !apply:speechbrain_mowe.families.load_family
        name: !ref <model_family>
        sources: !apply:speechbrain_mowe.sealing.open_sources
            folder: !ref <model_folder>
            sources: !ref <model_sources>
            ...
        text: |                        # the family file as it was when training built the model
            whisper_source: !PLACEHOLDER
            ...
    modules: {model: !ref <model>}
    pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
        loadables: {model: !ref <model>}

SpeechBrain's ``Pretrainer`` loads ``model.ckpt`` through the hooks of
:class:`~speechbrain_mowe.checkpointing.TrainableStateMixin`, which check that
every trainable parameter is there.
"""

import io
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

from ruamel.yaml import YAML
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook

from speechbrain_mowe.artifacts import artifact_record
from speechbrain_mowe.checkpointing import written_whole
from speechbrain_mowe.lobes.mowe import MoWEEncoder
from speechbrain_mowe.model import Decoding, MoWEAudioLLM
from speechbrain_mowe.sealing import remove_stale_sources, seal_sources
from speechbrain_mowe.tasks import get_task

logger = logging.getLogger(__name__)

INFERENCE_YAML = "inference.yaml"
MODEL_CHECKPOINT = "model.ckpt"
#: The layout written here (sealed sources).
FOLDER_FORMAT = 3
#: Layouts still read: 2 read its sources where they were, unpinned.
READ_FORMATS = (2, 3)
#: Longest audio read at once when no encoder has a window and no training
#: clip tells (Whisper's window).
DEFAULT_MAX_AUDIO_SECONDS = 30.0

_MODEL = """
model_folder: !PLACEHOLDER  # this folder: PretrainedAudioLLM.from_hparams gives it
model: !apply:speechbrain_mowe.families.load_family
    name: !ref <model_family>
    sources: !apply:speechbrain_mowe.sealing.open_sources
        folder: !ref <model_folder>
        sources: !ref <model_sources>
        checksums: !ref <source_checksums>
        revisions: !ref <hub_revisions>
    tasks: !ref <tasks>
    settings: !ref <model_settings>
    merged_lora: !ref <merged_lora>
    # The family file as it was when training built the model:
    text: |
{text}
modules:
    model: !ref <model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        model: !ref <model>
"""


def window_seconds(mowe_encoder: MoWEEncoder, train_durations: Iterable[float] = ()) -> float:
    """The longest audio a model reads at once.

    The smallest window (``max_seconds``) of its encoders that refuse longer
    audio; when every encoder takes any length (it has no window, or it
    encodes long audio in consecutive windows), the longest training clip
    rounded up to a second (the model never learnt from longer audio);
    without training clips, :data:`DEFAULT_MAX_AUDIO_SECONDS`.

    Example
    -------
    >>> from speechbrain_mowe.lobes import TinyConvEncoder
    >>> mowe = MoWEEncoder(TinyConvEncoder())
    >>> window_seconds(mowe, [3.2, 14.05]), window_seconds(mowe)
    (15.0, 30.0)
    """
    encoders = [mowe_encoder.base, *mowe_encoder.weak_pool]
    windows = [e.max_seconds for e in encoders if e.max_seconds and e.long_audio == "refuse"]
    if windows:
        return float(min(windows))
    longest = max(train_durations, default=0.0)
    return float(math.ceil(longest)) if longest > 0 else DEFAULT_MAX_AUDIO_SECONDS


def evaluation_instructions(
    test_sets: Iterable[DynamicItemDataset], tasks: Sequence[str]
) -> Dict[str, str]:
    """The instruction of the first test row of each task, in ``tasks`` order.

    Evaluation splits hold one fixed instruction per task (with its fields,
    such as AST's languages or ER's label list, filled in), so this is the
    prompt the trainer decoded its test sets with. Tasks without test rows
    are left out.
    """
    found = {}
    for dataset in test_sets:
        for utt_id in dataset.data_ids:
            row = dataset.data[utt_id]
            found.setdefault(row["task"], row["instruction"])
    return {task: found[task] for task in tasks if task in found}


def _dump(data: Mapping) -> str:
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.width = 4096
    stream = io.StringIO()
    yaml.dump(dict(data), stream)
    return stream.getvalue()


def write_inference_folder(
    folder,
    model: MoWEAudioLLM,
    *,
    instructions: Mapping[str, Any],
    decoding: Decoding = Decoding(),
    precision: str = "fp32",
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    stage: Optional[str] = None,
    lora_scale: float = 1.0,
    merged_lora: bool = False,
    training_data: Optional[Mapping[str, int]] = None,
    seal: str = "link",
    source_origins: Optional[Mapping[str, Mapping]] = None,
) -> Optional[Path]:
    """Writes ``inference.yaml``, ``model.ckpt`` and the sealed sources.

    Arguments
    ---------
    folder : str or Path
        Where to write (created if needed).
    model : MoWEAudioLLM
        Built by :func:`~speechbrain_mowe.families.load_family` (which
        records how); a model built otherwise cannot be rebuilt, so nothing
        is written and a warning says why.
    instructions : mapping
        The evaluation instruction of each task the model answers (how its
        long answers join and its shortcut come from the task's registration),
        or its whole entry as an inference folder's ``answers`` holds it
        (``instruction``, ``join``, ``shortcut``: needs no registration).
    decoding : Decoding
        The decoding settings.
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` autocast at inference.
    max_audio_seconds : float
        Longest audio read at once (see :func:`window_seconds`). What
        inference does with longer audio by default follows the encoders'
        policy: ``chunk`` when one of them chunks long audio, else ``refuse``.
    stage : str, optional
        The training stage that produced the model (``trained_in_stage``).
    lora_scale : float
        The factor of the LoRA scale inference uses (the one tested with).
    merged_lora : bool
        The model's ``llm_source`` holds the LoRA weights merged in.
    training_data : mapping, optional
        The number of training examples of each training source (the model card's).
    seal : str
        How local sources enter the folder: ``link`` (hard links where the
        file system allows, else copies) or ``copy``.
    source_origins : mapping, optional
        What made each source, where its files no longer tell (a folder being
        exported again); a source made by
        :func:`~speechbrain_mowe.artifacts.prepared_artifact` tells by itself.

    Returns
    -------
    Path or None
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
    >>> path = write_inference_folder(
    ...     tmp / "model", model, instructions={"asr": "Transcribe the speech."})
    >>> sorted(p.name for p in path.parent.iterdir())
    ['inference.yaml', 'model.ckpt', 'sources']
    """
    spec = model.built_from
    if spec is None:
        logger.warning(
            "No %s written to %s: the model was not built by a model family "
            "(speechbrain_mowe.families.load_family), so it cannot be rebuilt; its trained "
            "parameters are in the training checkpoints",
            INFERENCE_YAML,
            folder,
        )
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save = get_default_hook(model, DEFAULT_SAVE_HOOKS)
    # Each file replaced whole: a kill while exporting leaves the previous export.
    with written_whole(folder / MODEL_CHECKPOINT) as temporary:
        save(model, temporary)
    origins = dict(source_origins or {})  # what made each local source, for the model card
    for key, value in spec.sources.items():
        if isinstance(value, str) and os.path.exists(value) and artifact_record(value):
            origins[key] = artifact_record(value)
    named, checksums, revisions = seal_sources(folder, spec.sources, seal)
    answers = {}
    for task, instruction in instructions.items():
        if isinstance(instruction, Mapping):  # as an inference folder holds it
            answers[task] = {key: instruction[key] for key in ("instruction", "join", "shortcut")}
        else:
            known = get_task(task)
            answers[task] = {
                "instruction": instruction,
                "join": known.join,
                "shortcut": known.shortcut,
            }
    encoders = [model.mowe_encoder.base, *model.mowe_encoder.weak_pool]
    long_audio = "chunk" if any(e.long_audio == "chunk" for e in encoders) else "refuse"
    settings = {
        "format": FOLDER_FORMAT,
        "model_family": spec.family,
        "model_sources": named,
        "source_checksums": checksums,
        "hub_revisions": revisions,
        "source_origins": origins,
        "model_settings": dict(spec.settings),
        "tasks": list(spec.tasks),
        "answers": answers,
        **asdict(decoding),
        "precision": precision,
        "max_audio_seconds": float(max_audio_seconds),
        "long_audio": long_audio,
        "lora_scale": float(lora_scale),
        "merged_lora": merged_lora,
        "training_data": dict(training_data or {}),
    }
    if stage is not None:
        settings["trained_in_stage"] = stage
    text = (
        "# The trained model of this folder, for speechbrain_mowe.inference.PretrainedAudioLLM:\n"
        "#   PretrainedAudioLLM.from_hparams(source=<this folder>)\n"
        "# or `speechbrain-mowe <this folder> --task asr audio.wav --output out.jsonl`.\n"
        f"# {MODEL_CHECKPOINT} holds the trained parameters; the frozen ones are read from\n"
        "# model_sources, inside this folder and checked against source_checksums.\n"
        + _dump(settings)
        + _MODEL.format(text="\n".join(" " * 8 + line for line in spec.text.splitlines()))
    )
    path = folder / INFERENCE_YAML
    with written_whole(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    remove_stale_sources(folder, named)
    logger.info("Model for inference written to %s", path)
    return path
