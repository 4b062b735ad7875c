#!/usr/bin/env python3
"""Trains one MoWE audio LLM on ASR, speech translation, emotion recognition
and audio captioning at once (LibriSpeech, CoVoST 2, IEMOCAP, Clotho), as in
the MoWE paper, and scores each task with its metric.

To run::

    python train.py hparams/mowe.yaml \
        --librispeech_folder=/data/LibriSpeech --covost_folder=/data/cv-corpus/en \
        --iemocap_folder=/data/IEMOCAP_full_release --clotho_folder=/data/clotho \
        --model_sources="{whisper_source: /models/whisper-large-v3, llm_source: /models/llama}"
"""

import os
import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
from speechbrain_mowe.training import add_recipe_folder, setup_experiment, train_and_evaluate

add_recipe_folder(__file__)
from clotho_prepare import prepare_clotho  # noqa: E402
from covost2_prepare import prepare_covost2  # noqa: E402
from iemocap_prepare import prepare_iemocap  # noqa: E402
from librispeech_prepare import prepare_librispeech  # noqa: E402


def prepare_all(hparams):
    """Prepares the four corpora into ``<manifest_folder>/<dataset>/``."""
    folder = hparams["manifest_folder"]
    shared = {
        "skip_prep": hparams["skip_prep"],
        "seed": hparams["seed"],
        "min_duration": hparams["min_duration"],
    }
    prepare_librispeech(
        hparams["librispeech_folder"],
        os.path.join(folder, "librispeech"),
        splits=hparams["librispeech_train"] + ["dev-clean", "test-clean"],
        **shared,
    )
    prepare_covost2(
        hparams["covost_folder"],
        os.path.join(folder, "covost2"),
        source_language=hparams["source_language"],
        target_language=hparams["target_language"],
        covost_folder=hparams["covost_table_folder"],
        **shared,
    )
    prepare_iemocap(
        hparams["iemocap_folder"],
        os.path.join(folder, "iemocap"),
        test_sessions=[hparams["iemocap_fold"]],
        label_set=hparams["label_set"],
        **shared,
    )
    prepare_clotho(hparams["clotho_folder"], os.path.join(folder, "clotho"), **shared)


def main(argv):
    """Prepares the four corpora, trains on their mix, tests on each."""
    hparams, run_opts, _ = setup_experiment(argv)
    run_on_main(prepare_all, args=[hparams])
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
