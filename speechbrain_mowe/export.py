"""The inference folder that training leaves next to its results.

At the end of :func:`speechbrain_mowe.experiment.train_and_evaluate`, once
the best checkpoint is loaded and tested, :func:`save_for_inference` writes
into the recipe's ``output_folder``::

    inference.yaml      rebuilds the model and loads the three files below
    mowe_encoder.ckpt   each module as SpeechBrain's Checkpointer saves it:
    projector.ckpt      trainable parameters only where the module is a
    llm.ckpt            TrainableStateMixin; the frozen parts (base encoder,
                        LLM weights, ...) come from the model's sources

:class:`speechbrain_mowe.inference.MoWEAudioLLM` loads the folder with
``MoWEAudioLLM.from_hparams(source=<output_folder>)``. ``inference.yaml`` is
a HyperPyYAML file in SpeechBrain's layout::

    model_family: tiny_mowe            # a family name, or an absolute YAML path
    model_sources:                     # local paths made absolute, hub names kept
        whisper_source: /models/whisper
        llm_source: meta-llama/Llama-3.2-1B-Instruct
    tasks: [asr, ast, er, aac]         # the router's task ids, in order
    instructions:                      # the evaluation instruction of each tested task
        asr: Transcribe the speech.
        er: 'Which emotion does the speaker express? Answer with one of: ...'
    emotion_labels: [...]              # only when the recipe set them
    max_new_tokens: 200
    num_beams: 1
    precision: bf16                    # the training's eval_precision
    max_audio_seconds: 30.0            # longest audio read at once
    long_audio: refuse                 # or chunk, for longer audio
    model: !apply:speechbrain_mowe.experiment.load_family
        name: !ref <model_family>
        sources: !ref <model_sources>
        num_tasks: 4                   # then the recipe's model_settings, if any
    modules:
        mowe_encoder: !apply:operator.getitem [!ref <model>, mowe_encoder]
        ...
    pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
        loadables:
            mowe_encoder: !ref <modules[mowe_encoder]>
            ...

SpeechBrain's ``Pretrainer`` loads the ``.ckpt`` files through the same
hooks: those of :class:`~speechbrain_mowe.checkpointing.TrainableStateMixin`
check that every trainable parameter is there.
"""

import io
import logging
import math
import os
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence

from ruamel.yaml import YAML
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import DEFAULT_SAVE_HOOKS, get_default_hook
from speechbrain.utils.distributed import run_on_main
from torch import nn

from speechbrain_mowe.dataio import durations
from speechbrain_mowe.experiment import MODEL_PARTS, ExperimentData

logger = logging.getLogger(__name__)

INFERENCE_YAML = "inference.yaml"
#: Longest audio read at once when no encoder has a window and no training
#: clip tells (Whisper's window).
DEFAULT_MAX_AUDIO_SECONDS = 30.0

_OBJECTS = """\
modules:
{modules}
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
{loadables}
"""


def window_seconds(mowe_encoder, train_durations: Iterable[float] = ()) -> float:
    """The longest audio a model reads at once.

    The smallest window (``max_seconds``) of its base and weak encoders;
    without any, the longest training clip rounded up to a second (the model
    never learnt from longer audio); without training clips,
    :data:`DEFAULT_MAX_AUDIO_SECONDS`.

    Example
    -------
    >>> from speechbrain_mowe.lobes import MoWEEncoder, TinyConvEncoder
    >>> mowe = MoWEEncoder(TinyConvEncoder())
    >>> window_seconds(mowe, [3.2, 14.05]), window_seconds(mowe)
    (15.0, 30.0)
    """
    encoders = [mowe_encoder.base, *mowe_encoder.weak_pool]
    windows = [e.max_seconds for e in encoders if e.max_seconds]
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


def _local_path(value):
    """An existing local path made absolute; anything else (a hub name) as is."""
    if isinstance(value, (str, os.PathLike)) and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _family(name: str) -> str:
    """A family YAML path made absolute; a family name as is."""
    path = Path(name)
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") else name


def _dump(data: Mapping, indent: str = "") -> str:
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    yaml.width = 4096
    stream = io.StringIO()
    yaml.dump(dict(data), stream)
    return "".join(indent + line for line in stream.getvalue().splitlines(keepends=True))


def write_inference_folder(
    folder,
    modules: Mapping[str, nn.Module],
    *,
    model_family: str,
    model_sources: Mapping[str, str],
    tasks: Sequence[str],
    instructions: Mapping[str, str],
    model_settings: Optional[Mapping] = None,
    emotion_labels: Optional[Sequence[str]] = None,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    precision: str = "fp32",
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    long_audio: str = "refuse",
) -> Path:
    """Writes ``inference.yaml`` and a checkpoint of each module.

    Arguments
    ---------
    folder : str or Path
        Where to write (created if needed).
    modules : mapping
        ``mowe_encoder``, ``projector`` and ``llm``, as built by the family.
    model_family : str
        The family's name or YAML path (see
        :func:`~speechbrain_mowe.experiment.load_family`).
    model_sources : mapping
        The family's model paths; existing local paths are written absolute.
    tasks : sequence of str
        The router's task ids, in order (``num_tasks`` is their count).
    instructions : mapping
        The evaluation instruction of each task the model answers.
    model_settings : mapping, optional
        Further keyword arguments of ``load_family`` the model was built with.
    emotion_labels : sequence of str, optional
        The emotion label set, when the recipe fixed one.
    max_new_tokens, num_beams : int
        Decoding settings.
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` autocast at inference.
    max_audio_seconds : float
        Longest audio read at once (see :func:`window_seconds`).
    long_audio : str
        What inference does with longer audio by default: ``refuse`` or ``chunk``.

    Returns
    -------
    Path
        The ``inference.yaml`` written.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.experiment import load_family
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = Path(tempfile.mkdtemp())
    >>> sources = {"whisper_source": make_tiny_whisper(tmp / "whisper"),
    ...            "llm_source": make_tiny_llm(tmp / "llm")}
    >>> model = load_family("tiny_mowe", sources, num_tasks=1)
    >>> path = write_inference_folder(
    ...     tmp / "model", {name: model[name] for name in MODEL_PARTS},
    ...     model_family="tiny_mowe", model_sources=sources, tasks=["asr"],
    ...     instructions={"asr": "Transcribe the speech."})
    >>> sorted(p.name for p in path.parent.iterdir())
    ['inference.yaml', 'llm.ckpt', 'mowe_encoder.ckpt', 'projector.ckpt']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_PARTS:
        save = get_default_hook(modules[name], DEFAULT_SAVE_HOOKS)
        save(modules[name], folder / f"{name}.ckpt")
    settings = {
        "model_family": _family(model_family),
        "model_sources": {key: _local_path(value) for key, value in model_sources.items()},
        "tasks": list(tasks),
        "instructions": dict(instructions),
        **({"emotion_labels": list(emotion_labels)} if emotion_labels else {}),
        "max_new_tokens": max_new_tokens,
        "num_beams": num_beams,
        "precision": precision,
        "max_audio_seconds": float(max_audio_seconds),
        "long_audio": long_audio,
    }
    arguments = {"num_tasks": len(tasks), **(model_settings or {})}
    text = (
        "# The trained model of this folder, for speechbrain_mowe.inference.MoWEAudioLLM:\n"
        "#   MoWEAudioLLM.from_hparams(source=<this folder>)\n"
        "# or `speechbrain-mowe <this folder> --task asr audio.wav --output out.jsonl`.\n"
        "# The .ckpt files hold the trained parameters; the frozen ones are read from\n"
        "# model_sources (override them if those have moved).\n"
        + _dump(settings)
        + "\nmodel: !apply:speechbrain_mowe.experiment.load_family\n"
        "    name: !ref <model_family>\n"
        "    sources: !ref <model_sources>\n"
        + _dump(arguments, indent="    ")
        + _OBJECTS.format(
            modules="\n".join(
                f"    {name}: !apply:operator.getitem [!ref <model>, {name}]"
                for name in MODEL_PARTS
            ),
            loadables="\n".join(f"        {name}: !ref <modules[{name}]>" for name in MODEL_PARTS),
        )
    )
    path = folder / INFERENCE_YAML
    path.write_text(text, encoding="utf-8")
    return path


def save_for_inference(brain, hparams: Dict, data: ExperimentData) -> Optional[Path]:
    """Writes the inference folder of a trained recipe (on the main process only).

    Called by :func:`~speechbrain_mowe.experiment.train_and_evaluate` after
    testing, when the brain holds the best checkpoint. The recipe must name
    its model with ``model_family`` and ``model_sources`` (and may add
    ``model_settings``); otherwise nothing is written and a warning says why.

    Arguments
    ---------
    brain : speechbrain_mowe.brain.MoWEBrain
        The trained brain.
    hparams : dict
        The recipe's hyperparameters.
    data : ExperimentData
        The recipe's data: the training clips' durations and the test sets'
        instructions are read from it.

    Returns
    -------
    Path or None
        The ``inference.yaml`` written (None on other processes or when the
        recipe does not say how to rebuild its model).
    """
    missing = [key for key in ("model_family", "model_sources") if key not in hparams]
    if missing:
        logger.warning(
            "No %s written to %s: the recipe's hyperparameters lack %s, so the model cannot "
            "be rebuilt from a model family; the trained weights are in the checkpoints of %s",
            INFERENCE_YAML,
            hparams["output_folder"],
            " and ".join(missing),
            hparams.get("save_folder", "save/"),
        )
        return None
    written = []

    def write():
        written.append(
            write_inference_folder(
                hparams["output_folder"],
                {name: getattr(brain, name) for name in MODEL_PARTS},
                model_family=hparams["model_family"],
                model_sources=hparams["model_sources"],
                model_settings=hparams.get("model_settings"),
                tasks=hparams["tasks"],
                instructions=evaluation_instructions(
                    (dataset for dataset, _ in data.tests.values()), hparams["tasks"]
                ),
                emotion_labels=hparams.get("emotion_labels"),
                precision=brain.eval_precision,
                max_audio_seconds=window_seconds(brain.mowe_encoder, durations(data.train)),
                **brain.decoding_options(),
            )
        )
        logger.info("Model for inference written to %s", written[0])

    run_on_main(write)
    return written[0] if written else None
