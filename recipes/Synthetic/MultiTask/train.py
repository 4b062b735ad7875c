#!/usr/bin/env python3
"""Trains a MoWE audio LLM on the synthetic multi-task corpus, from nothing.

Everything is made here, offline, from ``experiment_seed``, once per
experiment folder (and again when its options change): the corpus
(``synthetic_prepare.py``: speech synthesized with eSpeak NG and generated
sound scenes), the encoders the YAML's ``pretrained_encoders`` names
(``pretraining.py``: a CTC base, or prosody and sound-event weak encoders),
Whisper tiny.en converted from its CTranslate2 copy when ``whisper_folder``
is set, and a small LLM whose tokenizer is trained on the corpus's lexicon
(pre-trained on the training texts when ``llm_pretraining`` says so). Then
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
import sys
from typing import Dict, List

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
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


def prepare_experiment(hparams: Dict, run_opts: Dict) -> None:
    """The corpus, the pre-trained encoders, Whisper and the LLM, each made once."""
    corpus, tasks = hparams["corpus_folder"], hparams["tasks"]
    prepare_synthetic(
        corpus,
        train_size=hparams["train_size"],
        valid_size=hparams["valid_size"],
        test_size=hparams["test_size"],
        tasks=tasks,
        seed=hparams["experiment_seed"],
        skip_prep=hparams["skip_prep"],
    )
    for name, spec in hparams["pretrained_encoders"].items():
        learns_from = [task for task in spec["tasks"] if task in tasks]
        pretrain_encoder(
            f"{hparams['encoders_folder']}/{name}",
            spec["objective"],
            task_manifests(corpus, learns_from, "train"),
            task_manifests(corpus, learns_from, "valid"),
            corpus,
            spec["encoder"],
            seed=hparams["experiment_seed"],
            run_opts=run_opts,
            **spec["training"],
        )
    if hparams.get("whisper_folder"):
        whisper_tiny_en(hparams["whisper_folder"])
    texts = training_texts(hparams)
    pretrain_llm(
        hparams["llm_folder"],
        corpus_texts(tasks=tasks) + texts,
        texts,
        hparams["llm_config"],
        seed=hparams["experiment_seed"],
        **hparams["llm_pretraining"],
    )


def main(argv, prepare: bool = True):
    """Prepares what the model needs (unless ``prepare`` is False: a caller
    did it), trains it and tests it."""
    hparams, run_opts, _ = setup_experiment(argv)
    if prepare:
        run_on_main(prepare_experiment, args=[hparams, run_opts])
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
