"""Training in stages: a sequence of trainings of one model, each with its own
data mix, schedule and trained parts (as SALMONN and WavLLM are trained).

A recipe declares them in its YAML; each stage is a mapping of hyperparameters
that replace the recipe's own for that stage, plus its ``name`` and the parts
it trains::

    stages:
        - name: pretraining
          trainable: [projector, lora]          # see PARTS; null: the family's
          train_weights: {librispeech: 1, clotho: 1, covost2: 0, iemocap: 0}
          epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
              limit: 2
          opt_class: !name:torch.optim.AdamW
              lr: 0.0001
          lr_annealing: !new:speechbrain.nnet.schedulers.WarmAndExpDecayLRSchedule
              lr: 0.0001
              n_warmup_steps: 500
              total_steps: 20000
        - name: instruction_tuning
          ...
    run_stages: null   # or the names of the stages to run (default: all)

or ``stages: hparams/salmonn_stages.yaml``, a file whose ``stages`` is that list
(``--stages=<file>`` on the command line).
    init_from: null    # a folder with the model.ckpt the first stage run starts from

Stage ``k`` (from 1) trains in ``<output_folder>/stages/<k>-<name>/``: its
checkpoints in ``save/``, and when it ends, its best checkpoint (by validation
loss) as an inference folder there (``inference.yaml`` says
``trained_in_stage``). The next stage starts from that folder's ``model.ckpt``
(also within one run, so that a stage started by a rerun starts from the very
same parameters) with the random generators seeded by ``seed + k``; a stage
whose inference folder exists is done and skipped, so a run interrupted in
stage ``k`` resumes in stage ``k`` from its latest checkpoint, at the same
batch. After the last stage run, the test sets are scored and the inference
folder written into ``output_folder``, as for a single training. Each log line
of ``train_log.txt`` names its stage.

Each stage gives its own object for every recoverable of the recipe's
``checkpointer`` (the recipes': ``epoch_counter`` and ``lr_annealing``), whose
state is the stage's; a stage that does not is refused by name.
"""

import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mowe.checkpointing import CrashSafeCheckpointer
from speechbrain_mowe.export import INFERENCE_YAML, MODEL_CHECKPOINT
from speechbrain_mowe.model import MoWEAudioLLM

logger = logging.getLogger(__name__)


def _in_llm(name: str, lora: bool) -> bool:
    return name.startswith("llm.") and ("lora_" in name) == lora


#: The parts a stage may train: name -> which parameters of a MoWEAudioLLM are in it.
PARTS: Dict[str, Callable[[str], bool]] = {
    "base_encoder": lambda name: name.startswith("mowe_encoder.base."),
    "weak_encoders": lambda name: name.startswith("mowe_encoder.weak_pool."),
    "router": lambda name: name.startswith("mowe_encoder.router."),
    # The projector, with the projections of the weak encoders and the norms.
    "projector": lambda name: name.startswith(
        (
            "projector.",
            "mowe_encoder.projections.",
            "mowe_encoder.base_norm.",
            "mowe_encoder.weak_norm.",
        )
    ),  # fmt: skip
    "lora": lambda name: _in_llm(name, lora=True),
    "prompt_adapter": lambda name: name.startswith("llm.prompt_adapter."),  # WavLLM's
    "llm": lambda name: _in_llm(name, lora=False),
}


def part_of(name: str) -> str:
    """The part (of :data:`PARTS`) a parameter of a MoWEAudioLLM belongs to.

    Example
    -------
    >>> part_of("llm.model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")
    'lora'
    >>> part_of("mowe_encoder.router.dependent.net.weight")
    'router'
    >>> part_of("decoder.weight")
    Traceback (most recent call last):
     ...
    ValueError: parameter 'decoder.weight' is in none of the parts base_encoder, ...
    """
    for part, contains in PARTS.items():
        if contains(name):
            return part
    raise ValueError(f"parameter '{name}' is in none of the parts {', '.join(PARTS)}")


def set_trainable_parts(model: MoWEAudioLLM, parts: Optional[Sequence[str]]) -> None:
    """Trains the ``parts`` of ``model`` and freezes the rest (None: leave it be).

    Parameters trained before (or loaded from a checkpoint) and frozen now stay
    in the model's checkpoints (:attr:`~speechbrain_mowe.checkpointing.
    TrainableStateMixin.kept_frozen`), so that nothing trained is lost.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.families import load_family
    >>> from speechbrain_mowe.tiny import make_tiny_llm, make_tiny_whisper
    >>> tmp = tempfile.mkdtemp()
    >>> model = load_family("tiny_mowe", {"whisper_source": make_tiny_whisper(f"{tmp}/w"),
    ...                                   "llm_source": make_tiny_llm(f"{tmp}/llm")})
    >>> set_trainable_parts(model, ["projector"])
    >>> sorted({part_of(n) for n, p in model.named_parameters() if p.requires_grad})
    ['projector']
    >>> sorted({part_of(n) for n in model.trainable_state_dict() if "extra" not in n})
    ['lora', 'projector', 'router', 'weak_encoders']
    """
    if parts is None:
        return
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(
            f"Unknown part(s) {', '.join(unknown)} in trainable; the parts are {', '.join(PARTS)}"
        )
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    trained |= set(model.kept_frozen)
    for name, param in model.named_parameters():
        param.requires_grad_(part_of(name) in parts)
    model.kept_frozen = frozenset(
        name for name, p in model.named_parameters() if name in trained and not p.requires_grad
    )
    mowe = model.mowe_encoder
    mowe.freeze_base = "base_encoder" not in parts
    mowe.freeze_weak = "weak_encoders" not in parts
    model.train(model.training)  # frozen encoders in eval mode


def start_from(model: MoWEAudioLLM, folder) -> None:
    """Loads the ``model.ckpt`` of ``folder`` (a stage's or any inference folder);
    what it holds stays in the model's checkpoints."""
    path = Path(folder) / MODEL_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from '{folder}' has no {MODEL_CHECKPOINT}: give the folder of a finished "
            "stage (<output_folder>/stages/<k>-<name>) or of a finished training"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_trainable_state_dict(state, source=str(path))
    names = {name for name, _ in model.named_parameters()}
    model.kept_frozen = frozenset(set(model.kept_frozen) | (names & set(state)))


def load_stages(stages) -> List[Dict]:
    """The stages: a list as is, or the ``stages`` of a YAML file's path."""
    if not isinstance(stages, (str, os.PathLike)):
        return list(stages)
    path = Path(stages)
    if not path.is_file():
        raise FileNotFoundError(f"stages file '{stages}' does not exist")
    with open(path, encoding="utf-8") as f:
        loaded = load_hyperpyyaml(f)
    if not isinstance(loaded, Mapping) or not isinstance(loaded.get("stages"), list):
        raise ValueError(f"stages file '{stages}' has no list 'stages'")
    return loaded["stages"]


def check_stages(stages: Sequence[Mapping], run_stages: Optional[Sequence[str]]) -> None:
    """Refuses stages without distinct names, and unknown names in ``run_stages``."""
    names = [stage.get("name") for stage in stages]
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"every stage needs a distinct name; got {names}")
    unknown = sorted(set(run_stages or ()) - set(names))
    if unknown:
        raise ValueError(
            f"run_stages names unknown stage(s) {', '.join(unknown)}; the stages are "
            f"{', '.join(names)}"
        )


def stage_folder(hparams: Mapping, index: int, name: str) -> Path:
    """``<output_folder>/stages/<index>-<name>``, where stage ``index`` (from 1) trains."""
    return Path(hparams["output_folder"]) / "stages" / f"{index}-{name}"


def stage_hparams(hparams: Mapping, stage: Mapping, index: int) -> Dict:
    """The recipe's hyperparameters with the stage's in place, and the stage's
    checkpointer in its folder (the recipe's recoverables, with those the stage
    replaces replaced)."""
    merged = {**hparams, **{k: v for k, v in stage.items() if k not in ("name", "trainable")}}
    merged["stage_name"] = stage["name"]
    folder = stage_folder(hparams, index, stage["name"])
    recoverables = {}
    for key, obj in hparams["checkpointer"].recoverables.items():
        if key == "model":
            continue  # added when the stage's Brain is built
        names = [k for k, v in hparams.items() if v is obj]
        replaced = [k for k in names if k in stage]
        if not replaced:
            raise ValueError(
                f"stage '{stage['name']}' must give its own {names[0] if names else key}: the "
                "checkpointer saves its state, which would run on from the stage before"
            )
        recoverables[key] = merged[replaced[0]]
    merged["checkpointer"] = CrashSafeCheckpointer(folder / "save", recoverables=recoverables)
    return merged


def run_stages(hparams: Dict, fit: Callable, finish: Callable):
    """Runs the recipe's stages in order (see the module docstring).

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters, with ``stages``.
    fit : callable
        ``fit(stage_hparams) -> (brain, data)``: trains the model in one stage.
    finish : callable
        ``finish(stage_hparams, brain, data, folder)``: loads the best
        checkpoint and writes the inference folder into ``folder``; with
        ``folder`` None, scores the test sets and writes into ``output_folder``.

    Returns
    -------
    The brain of the last stage run.
    """
    stages = load_stages(hparams["stages"])
    run = hparams.get("run_stages")
    check_stages(stages, run)
    model = hparams["model"]
    previous = hparams.get("init_from")
    chosen = [i for i, s in enumerate(stages, 1) if run is None or s["name"] in run]
    brain = None
    for index in chosen:
        stage = stages[index - 1]
        folder = stage_folder(hparams, index, stage["name"])
        if (folder / INFERENCE_YAML).is_file():
            logger.info("Stage %d '%s' is done (%s); skipped", index, stage["name"], folder)
            previous = folder
            continue
        logger.info("Stage %d/%d '%s' trains %s in %s", index, len(stages), stage["name"],
                    stage.get("trainable") or "the family's trainable parts", folder)  # fmt: skip
        if previous is not None:
            start_from(model, previous)
        set_trainable_parts(model, stage.get("trainable"))
        sb.utils.seed.seed_everything(hparams.get("seed", 0) + index)
        merged = stage_hparams(hparams, stage, index)
        brain, data = fit(merged)
        finish(merged, brain, data, folder)
        previous = folder
    if brain is None:  # every stage chosen was done: score the last one
        merged = stage_hparams(hparams, stages[chosen[-1] - 1], chosen[-1])
        start_from(model, previous)
        brain, data = fit(merged)
    finish(merged, brain, data, None)
    return brain
