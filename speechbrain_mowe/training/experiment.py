"""What every recipe's ``train.py`` does around its own data preparation.

A recipe parses its command line with :func:`setup_experiment`, prepares its
corpus, and hands over to :func:`train_and_evaluate`, which builds the data
(:func:`dataio_prepare`) and the :class:`~speechbrain_mowe.training.MoWEBrain`,
trains, tests, and writes the inference folder. The model is the recipe's
``model`` (see :func:`speechbrain_mowe.families.load_family`), so one line of
the recipe's YAML (or ``--model_family=...``) switches between families.

The data part of a recipe's YAML::

    tasks: [asr, ast, er, aac]      # the router's task ids, in order
    data_root: /data/LibriSpeech    # or a mapping source -> folder
    train_data: {train-clean-100: manifests/train-clean-100.csv}
    train_weights: null             # or source -> weight (multi-task mixing)
    valid_data: {dev-clean: manifests/dev-clean.csv}
    test_data: {test-clean: manifests/test-clean.csv}
    max_batch_duration: 200         # padded seconds per training batch
    max_batch_size: 32
    eval_max_batch_duration: 200    # the same for validation and test batches
    eval_max_batch_size: 32
"""

import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.distributed import ddp_init_group, is_distributed_initialized, run_on_main

from speechbrain_mowe.dataio import (
    DurationBatchSampler,
    WeightedMixtureSampler,
    audio_pipeline,
    check_manifest,
    collate_audio,
    durations,
    load_manifests,
    prompt_pipeline,
)
from speechbrain_mowe.export import evaluation_instructions, window_seconds, write_inference_folder
from speechbrain_mowe.model import MoWEAudioLLM
from speechbrain_mowe.tasks import get_task, registered_tasks
from speechbrain_mowe.training.brain import MoWEBrain
from speechbrain_mowe.training.overrides import check_overrides, merge_into_null
from speechbrain_mowe.training.stages import run_stages

logger = logging.getLogger(__name__)

#: Columns every batch carries (and the option columns of its tasks).
OUTPUT_KEYS = [
    "id",
    "sig",
    "task",
    "task_id",
    "source",
    "prefix",
    "suffix",
    "answer_tokens",
    "answer",
    "references",
    "wav",
    "instruction",
]


def setup_experiment(
    argv: Sequence[str], folder_key: str = "output_folder"
) -> Tuple[Dict, Dict, str]:
    """Parses a recipe's command line, loads its YAML and prepares the run.

    Initialises DDP when launched by ``torchrun`` (once per process) and
    creates the experiment folder ``hparams[folder_key]`` (with a copy of the
    YAML and the overrides), as SpeechBrain recipes do.

    Returns
    -------
    hparams : dict
    run_opts : dict
    hparams_file : str
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(list(argv))
    if not Path(hparams_file).is_file():
        raise FileNotFoundError(f"Hyperparameter file {hparams_file} does not exist")
    check_overrides(hparams_file, overrides)
    if not is_distributed_initialized():
        ddp_init_group(run_opts)
    overrides = merge_into_null(hparams_file, overrides)
    with open(hparams_file) as f:
        try:
            hparams = load_hyperpyyaml(f, overrides)
        except Exception as err:
            if overrides and type(err).__module__.startswith("ruamel"):
                raise ValueError(
                    f"Could not read the command-line overrides of {hparams_file} as YAML:\n"
                    f"{overrides}\n{err}"
                ) from None
            raise
    sb.create_experiment_directory(
        experiment_directory=hparams[folder_key],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    return hparams, run_opts, hparams_file


def split_manifests(folder: str, splits: Sequence[str], prefix: str = "") -> Dict[str, str]:
    """``{split: <folder>/<prefix><split>.csv}``, for the YAML's data mappings.

    Example
    -------
    >>> split_manifests("manifests", ["dev-clean", "dev-other"])
    {'dev-clean': 'manifests/dev-clean.csv', 'dev-other': 'manifests/dev-other.csv'}
    """
    return {split: os.path.join(folder, f"{prefix}{split}.csv") for split in splits}


def manifest_paths(folder: str, splits: Sequence[str], prefix: str = "") -> List[str]:
    """``[<folder>/<prefix><split>.csv, ...]``: several manifests forming one source.

    Example
    -------
    >>> manifest_paths("librispeech", ["train-clean-100", "train-clean-360"])
    ['librispeech/train-clean-100.csv', 'librispeech/train-clean-360.csv']
    """
    return list(split_manifests(folder, splits, prefix).values())


def task_manifests(folder: str, tasks: Sequence[str], split: str) -> Dict[str, str]:
    """``{task: <folder>/<task>_<split>.csv}``: one source per task.

    Example
    -------
    >>> task_manifests("corpus", ["asr", "er"], "train")
    {'asr': 'corpus/asr_train.csv', 'er': 'corpus/er_train.csv'}
    """
    return {task: os.path.join(folder, f"{task}_{split}.csv") for task in tasks}


class ExperimentData(NamedTuple):
    """Datasets and the loader settings :class:`~speechbrain_mowe.training.MoWEBrain` needs."""

    train: DynamicItemDataset
    train_loader_kwargs: Dict
    valid: DynamicItemDataset
    valid_loader_kwargs: Dict
    tests: Dict[str, Tuple[DynamicItemDataset, Dict]]


def _roots(data_root, sources) -> Dict[str, str]:
    if isinstance(data_root, Mapping):
        return dict(data_root)
    return {source: data_root for source in sources}


def _sources(manifests: Mapping[str, str]):
    """(source, path) of every manifest of a data mapping."""
    for source, paths in manifests.items():
        for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
            yield source, path


def check_data(hparams: Dict) -> Set[str]:
    """Checks every manifest of ``train_data`` (for training), ``valid_data``
    and ``test_data`` (for evaluation) before anything is built, with
    :func:`~speechbrain_mowe.dataio.check_manifest`: their columns, and rows
    with an empty answer or a task outside ``tasks``, refused or (with
    ``invalid_rows: skip``) left out and counted.

    Returns
    -------
    set of str
        The ids of the rows left out.
    """
    model = hparams.get("model")
    tasks = hparams.get("tasks") or (
        model.tasks if isinstance(model, MoWEAudioLLM) else sorted(registered_tasks())
    )
    uses = [(hparams["train_data"], "training"), (hparams["valid_data"], "evaluation")]
    for name, manifest in hparams["test_data"].items():
        manifests = manifest if isinstance(manifest, Mapping) else {name: manifest}
        uses.append((manifests, "evaluation"))
    skipped = set()
    for manifests, use in uses:
        for source, path in _sources(manifests):
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"Manifest {path} (source '{source}') does not exist; run the preparation "
                    "first or check the data paths in the YAML"
                )
            skipped.update(check_manifest(path, use, tasks, hparams.get("invalid_rows", "refuse")))
    return skipped


def _dataset(manifests: Mapping[str, str], hparams: Dict, model: MoWEAudioLLM, skip=()):
    """A dataset over several manifests with the audio and prompt pipelines."""
    dataset, groups = load_manifests(manifests, _roots(hparams["data_root"], manifests), skip)
    dataset.add_dynamic_item(audio_pipeline(min_duration=hparams.get("min_duration", 0.0)))
    dataset.add_dynamic_item(prompt_pipeline(model.llm, model.tasks))
    first = next(iter(dataset.data.values()), {})
    options = {column for task in model.tasks for column in get_task(task).option_columns}
    dataset.set_output_keys(OUTPUT_KEYS + sorted(key for key in options if key in first))
    return dataset, groups


def _eval_kwargs(dataset, hparams: Dict) -> Dict:
    batches = DurationBatchSampler(
        range(len(dataset)),
        durations(dataset),
        max_batch_duration=hparams["eval_max_batch_duration"],
        max_batch_size=hparams.get("eval_max_batch_size"),
        shuffle=False,
    )
    return {
        "batch_sampler": batches,
        "collate_fn": collate_audio,
        "num_workers": hparams.get("num_workers", 0),
    }


def dataio_prepare(
    hparams: Dict, model: MoWEAudioLLM, skip: Optional[Set[str]] = None
) -> ExperimentData:
    """Builds the training, validation and test data of a recipe.

    Training draws ``num_samples`` examples per epoch (default: all) from the
    ``train_data`` sources in ``train_weights`` proportions (default: their
    sizes, i.e. their union), seeded by ``seed`` and the epoch, and packs them
    into batches of at most ``max_batch_duration`` padded seconds. Evaluation
    batches follow the manifests' order. Under DDP every loader shards itself.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters (see the module docstring).
    model : MoWEAudioLLM
        Its language model tokenizes the prompts and answers; its tasks give
        the router's task ids.
    skip : set of str, optional
        The ids :func:`check_data` left out (default: the manifests are checked here).
    """
    skip = check_data(hparams) if skip is None else skip
    train, groups = _dataset(hparams["train_data"], hparams, model, skip)
    weights = hparams.get("train_weights") or {name: len(idx) for name, idx in groups.items()}
    seed = hparams.get("seed", 0)
    mixture = WeightedMixtureSampler(groups, weights, hparams.get("num_samples"), seed=seed)
    batches = DurationBatchSampler(
        mixture,
        durations(train),
        max_batch_duration=hparams["max_batch_duration"],
        max_batch_size=hparams.get("max_batch_size"),
        buffer_size=hparams.get("buffer_size"),
        shuffle=True,
        seed=seed,
    )
    train_kwargs = {
        "batch_sampler": batches,
        "collate_fn": collate_audio,
        "num_workers": hparams.get("num_workers", 0),
        # Iterating must not draw from the global RNG, or a resumed run's
        # dropout and router noise would differ from an uninterrupted one's.
        "generator": torch.Generator().manual_seed(seed),
    }
    valid, _ = _dataset(hparams["valid_data"], hparams, model, skip)
    tests = {}
    for name, manifest in hparams["test_data"].items():
        manifests = manifest if isinstance(manifest, Mapping) else {name: manifest}
        dataset, _ = _dataset(manifests, hparams, model, skip)
        tests[name] = (dataset, _eval_kwargs(dataset, hparams))
    return ExperimentData(train, train_kwargs, valid, _eval_kwargs(valid, hparams), tests)


def build_model(hparams: Dict) -> MoWEAudioLLM:
    """The recipe's ``model``, built now if its YAML deferred it.

    A recipe whose model sources are made by its own preparation (the
    synthetic recipe pre-trains its base encoder and builds its LLM) cannot
    build the model when its YAML is loaded; it declares
    ``model: !name:speechbrain_mowe.families.load_family`` instead, and
    this calls it.
    """
    model = hparams["model"]
    return model() if callable(model) and not isinstance(model, torch.nn.Module) else model


def train_and_evaluate(hparams: Dict, run_opts: Dict, brain_class=MoWEBrain) -> MoWEBrain:
    """Trains a recipe's model, scores it on every test set, and writes the
    inference folder into ``output_folder``
    (:func:`speechbrain_mowe.export.write_inference_folder`).

    A recipe whose YAML declares ``stages`` trains in those stages, in order
    (:mod:`speechbrain_mowe.training.stages`), and is tested after the last.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters.
    run_opts : dict
        SpeechBrain's run options.
    brain_class : type
        A :class:`~speechbrain_mowe.training.MoWEBrain` subclass to use instead.

    Returns
    -------
    MoWEBrain
        The trained brain, holding the best checkpoint; the scores are in its
        ``test_results``.
    """
    skip = check_data(hparams)  # before the model: a bad manifest costs nothing
    hparams["model"] = build_model(hparams)

    def fit(stage_hparams):
        keys = ("train_data", "valid_data", "test_data", "invalid_rows")
        same = all(stage_hparams.get(key) is hparams.get(key) for key in keys)
        return _fit(stage_hparams, run_opts, brain_class, skip if same else None)

    if hparams.get("stages"):
        return run_stages(hparams, fit, _finish)
    brain, data = fit(hparams)
    _finish(hparams, brain, data, None)
    return brain


def _fit(hparams: Dict, run_opts: Dict, brain_class, skip=None) -> Tuple[MoWEBrain, ExperimentData]:
    """Builds the Brain and the data of ``hparams``, and trains (or resumes);
    ``skip``: what :func:`check_data` returned for them (None: check them)."""
    skip = check_data(hparams) if skip is None else skip
    model = hparams["model"]
    checkpointer = hparams["checkpointer"]
    checkpointer.add_recoverable("model", model)  # the trainable parameters only
    brain = brain_class(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=checkpointer,
    )
    data = dataio_prepare(hparams, model, skip)
    brain.fit(
        hparams["epoch_counter"],
        data.train,
        data.valid,
        train_loader_kwargs=data.train_loader_kwargs,
        valid_loader_kwargs=data.valid_loader_kwargs,
    )
    return brain, data


def _finish(hparams: Dict, brain: MoWEBrain, data: ExperimentData, folder=None) -> None:
    """The best checkpoint's inference folder in ``folder`` (a stage's); with
    ``folder`` None, scores the test sets first and writes into ``output_folder``."""
    if folder is None:
        for name, (dataset, kwargs) in data.tests.items():
            brain.evaluate(
                dataset, name=name, min_key=brain.selection_key(), test_loader_kwargs=kwargs
            )
    else:
        brain.checkpointer.recover_if_possible(min_key=brain.selection_key())
    model = brain.model
    run_on_main(
        write_inference_folder,
        args=[hparams["output_folder"] if folder is None else folder, model],
        kwargs={
            "instructions": evaluation_instructions(
                [dataset for dataset, _ in data.tests.values()], model.tasks
            ),
            "decoding": brain.decoding,
            "precision": brain.eval_precision,
            "max_audio_seconds": window_seconds(model.mowe_encoder, durations(data.train)),
            "stage": hparams.get("stage_name"),
            "lora_scale": model.llm.lora_scale,
            "training_data": dict(Counter(row["source"] for row in data.train.data.values())),
            "seal": hparams.get("seal_sources", "link"),
        },
    )


def add_recipe_folder(train_script: str) -> None:
    """Makes the ``<dataset>_prepare.py`` scripts of a recipe importable.

    In a ``recipes/`` folder (SpeechBrain's ``recipes/<Dataset>/<Task>/train.py``),
    those of every dataset folder, as a multi-task recipe prepares several
    datasets; elsewhere, those in the script's folder and the one above it.

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "MyData"
    >>> (root / "ASR").mkdir(parents=True)
    >>> _ = (root / "mydata_prepare.py").write_text("")
    >>> add_recipe_folder(str(root / "ASR" / "train.py"))
    >>> str(root.resolve()) in sys.path
    True
    """
    script = Path(train_script).resolve()
    recipes = next((p for p in script.parents if p.name == "recipes"), None)
    if recipes is None:
        folders = [script.parent, script.parent.parent]
    else:
        folders = sorted(p for p in recipes.iterdir() if p.is_dir())
    for folder in folders:
        if str(folder) not in sys.path and any(folder.glob("*_prepare.py")):
            sys.path.append(os.fspath(folder))
