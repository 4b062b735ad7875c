#!/usr/bin/env python3
"""Trains a MoWE audio LLM on the synthetic multi-task corpus, from nothing.

Everything is made here, offline and from the seed: the corpus
(``synthetic_prepare.py``: speech synthesized with espeak-ng and generated
sound scenes), a base encoder pre-trained for ASR alone with CTC
(``base_encoder.py``), and a small random LLM whose tokenizer is trained on
the corpus's lexicon. Then the model family of ``model_family`` is trained
on the four tasks, validated, and tested on each; the trained folder also
holds ``inference.yaml`` for :class:`speechbrain_mowe.inference.PretrainedAudioLLM`.

To run (a few minutes on a laptop CPU)::

    python train.py hparams/mowe.yaml                     # MoWE
    python train.py hparams/mowe.yaml --model_family=conv_base_only

``compare.py`` runs both and prints them side by side.
"""

import csv
import hashlib
import json
import sys
from pathlib import Path

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.tiny import make_tiny_llm
from speechbrain_mowe.training import add_recipe_folder, setup_experiment, train_and_evaluate

add_recipe_folder(__file__)
from base_encoder import pretrain_base_encoder  # noqa: E402
from synthetic_prepare import corpus_texts, prepare_synthetic  # noqa: E402


def make_llm(hparams):
    """A small random LLM whose tokenizer is trained on the corpus's lexicon
    and its training answers and instructions (so that most words are one
    token), built once per experiment: it is made again only when its
    configuration or those texts change."""
    texts = corpus_texts(tasks=hparams["tasks"])
    for manifest in hparams["train_data"].values():
        with open(manifest, newline="", encoding="utf-8") as f:
            texts += [
                text for row in csv.DictReader(f) for text in (row["answer"], row["instruction"])
            ]
    options = {
        **hparams["llm_config"],
        "seed": hparams["seed"],
        "texts_sha1": hashlib.sha1("\n".join(texts).encode()).hexdigest(),
    }
    folder = Path(hparams["llm_folder"])
    record = folder / "llm_options.json"
    if record.is_file() and json.loads(record.read_text()) == options:
        return
    make_tiny_llm(folder, corpus=texts, seed=hparams["seed"], **hparams["llm_config"])
    record.write_text(json.dumps(options, indent=2) + "\n")


def prepare_experiment(hparams, run_opts):
    """The corpus, the base encoder and the initial LLM, each made once."""
    prepare_synthetic(
        hparams["corpus_folder"],
        train_size=hparams["train_size"],
        valid_size=hparams["valid_size"],
        test_size=hparams["test_size"],
        tasks=hparams["tasks"],
        seed=hparams["seed"],
        skip_prep=hparams["skip_prep"],
    )
    folder = hparams["corpus_folder"]
    pretrain_base_encoder(
        hparams["base_encoder_folder"],
        f"{folder}/asr_train.csv",
        f"{folder}/asr_valid.csv",
        folder,
        hparams["base_encoder"],
        seed=hparams["seed"],
        run_opts=run_opts,
        **hparams["base_pretraining"],
    )
    make_llm(hparams)


def main(argv, prepare: bool = True):
    """Prepares what the model needs (unless ``prepare`` is False: a caller
    did it), trains it and tests it."""
    hparams, run_opts, _ = setup_experiment(argv)
    if prepare:
        run_on_main(prepare_experiment, args=[hparams, run_opts])
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    main(sys.argv[1:])
