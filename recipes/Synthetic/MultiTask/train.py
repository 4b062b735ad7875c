#!/usr/bin/env python3
"""Trains a MoWE audio LLM on the synthetic multi-task corpus, from nothing.

Everything is made here, offline, from ``experiment_seed``, once per set of
options, each in a folder of the experiment folder named after its options
(other options make new folders beside the old ones, never over them): the
corpus (``synthetic_prepare.py``: speech synthesized with eSpeak NG and
generated sound scenes), the encoders of the YAML's ``pretrained_encoders``
that the model family reads (``pretraining.py``: a CTC base, or prosody and
sound-event weak encoders), Whisper tiny.en converted from its CTranslate2
copy when the family reads ``whisper_source``, and a small LLM whose
tokenizer is trained on the corpus's lexicon (pre-trained on the training
texts when ``llm_pretraining`` says so). With ``--skip_prep=True`` nothing is
made: what is missing is an error naming the step. Then
the model family of ``model_family`` is trained on the tasks, validated and
tested on each; the trained folder also holds ``inference.yaml`` for
:class:`speechbrain_mowe.inference.PretrainedAudioLLM`.

To run::

    python train.py hparams/mowe.yaml                                 # MoWE
    python train.py hparams/mowe.yaml --model_family=whisper_base_only
    python train.py hparams/conv.yaml                                 # the fast one

``compare.py`` trains several systems and seeds and compares them.
"""

import csv
import functools
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.artifacts import MissingArtifactError
from speechbrain_mowe.errors import run_main
from speechbrain_mowe.families import family_keys, family_path
from speechbrain_mowe.training import (
    add_recipe_folder,
    setup_experiment,
    task_manifests,
    train_and_evaluate,
)
from speechbrain_mowe.weights import whisper_tiny_en

add_recipe_folder(__file__)
from pretraining import pretrain_encoder, pretrain_llm  # noqa: E402
from synthetic_prepare import corpus_texts, prepare_synthetic  # noqa: E402


def training_texts(hparams: Dict) -> List[str]:
    """The answers and instructions of the training manifests."""
    texts = []
    for manifest in hparams["train_data"].values():
        with open(manifest, newline="", encoding="utf-8") as f:
            texts += [
                text for row in csv.DictReader(f) for text in (row["answer"], row["instruction"])
            ]
    return texts


def needed_sources(families: Sequence[str]) -> List[str]:
    """The sources (``!PLACEHOLDER`` keys) the model families read."""
    needed = []
    for family in families:
        sources, _ = family_keys(family_path(family).read_text(encoding="utf-8"))
        needed += [key for key in sources if key not in needed]
    return needed


def prepare_experiment(
    hparams: Dict, run_opts: Dict, families: Optional[Sequence[str]] = None, skip_prep=None
) -> Dict[str, str]:
    """The corpus, and what the model families read: the pre-trained encoders
    (``<name>_checkpoint``), Whisper (``whisper_source``) and the LLM
    (``llm_source``), each made once, in a folder named after its options.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters.
    run_opts : dict
        SpeechBrain's run options.
    families : sequence of str, optional
        The model families to prepare for (default: ``model_family``).
    skip_prep : bool, optional
        Make nothing, only find what was made (default: ``hparams["skip_prep"]``);
        what is missing is an error naming the step.

    Returns
    -------
    dict
        The model sources made, by key.
    """
    skip_prep = hparams["skip_prep"] if skip_prep is None else skip_prep
    corpus, tasks = hparams["corpus_folder"], hparams["tasks"]
    needed = needed_sources(families or [hparams["model_family"]])
    encoders = {}  # the encoders the families read, with the tasks they learn from
    for name, spec in hparams["pretrained_encoders"].items():
        key = f"{name}_checkpoint"
        if key in needed:
            encoders[name] = [task for task in spec["tasks"] if task in tasks]
            if not encoders[name]:
                raise ValueError(
                    f"The pre-trained encoder '{name}' ({key}) learns from the clips of "
                    f"{spec['tasks']}, none of which is in tasks {list(tasks)}: add one of "
                    f"them to --tasks, or choose a model family without {key}"
                )
    prepare_synthetic(
        corpus,
        train_size=hparams["train_size"],
        valid_size=hparams["valid_size"],
        test_size=hparams["test_size"],
        tasks=tasks,
        seed=hparams["experiment_seed"],
        skip_prep=skip_prep,
    )
    missing = [path for path in hparams["train_data"].values() if not Path(path).is_file()]
    if missing:
        raise MissingArtifactError(
            f"synthetic corpus: {corpus} was never made (skip_prep is True) for these "
            f"options (it lacks {missing[0]}); run once without --skip_prep=True to make it"
        )
    sources = {}
    for name, learns_from in encoders.items():
        spec = hparams["pretrained_encoders"][name]
        sources[f"{name}_checkpoint"] = str(
            pretrain_encoder(
                hparams["encoders_folder"],
                name,
                spec["objective"],
                task_manifests(corpus, learns_from, "train"),
                task_manifests(corpus, learns_from, "valid"),
                corpus,
                spec["encoder"],
                seed=hparams["experiment_seed"],
                run_opts=run_opts,
                skip_prep=skip_prep,
                **spec["training"],
            )
        )
    if "whisper_source" in needed:
        sources["whisper_source"] = str(whisper_tiny_en(hparams["whisper_folder"], skip_prep))
    texts = training_texts(hparams)
    sources["llm_source"] = str(
        pretrain_llm(
            hparams["llm_folder"],
            corpus_texts(tasks=tasks) + texts,
            texts,
            hparams["llm_config"],
            seed=hparams["experiment_seed"],
            skip_prep=skip_prep,
            **hparams["llm_pretraining"],
        )
    )
    return sources


def model_sources(hparams: Dict, run_opts: Dict) -> Dict[str, str]:
    """What preparation made (found again in every process, never made here),
    and over it the recipe's own ``model_sources``."""
    return {**prepare_experiment(hparams, run_opts, skip_prep=True), **hparams["model_sources"]}


def main(argv, prepare: bool = True):
    """Prepares what the model needs (unless ``prepare`` is False: a caller
    did it), trains it and tests it."""
    hparams, run_opts, _ = setup_experiment(argv)
    if prepare:
        run_on_main(prepare_experiment, args=[hparams, run_opts])
    hparams["model_sources"] = model_sources(hparams, run_opts)
    hparams["model"] = functools.partial(hparams["model"], sources=hparams["model_sources"])
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
