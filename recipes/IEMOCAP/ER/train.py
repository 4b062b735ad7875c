#!/usr/bin/env python3
"""Trains a MoWE audio LLM for emotion recognition on one IEMOCAP
leave-one-session-out fold and scores it (WA, UA, confusion matrix).

To run fold 5 (run folds 1-5 and average for the usual LOSO figure)::

    python train.py hparams/mowe.yaml --data_folder=/path/to/IEMOCAP_full_release --fold=5 \
        --model_sources="{whisper_source: /models/whisper-large-v3, llm_source: /models/llama}"
"""

import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
from speechbrain_mowe.training import add_recipe_folder, setup_experiment, train_and_evaluate

add_recipe_folder(__file__)
from iemocap_prepare import prepare_iemocap  # noqa: E402


def main(argv):
    """Prepares the IEMOCAP folds, trains and tests one."""
    hparams, run_opts, _ = setup_experiment(argv)
    run_on_main(
        prepare_iemocap,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "test_sessions": [hparams["fold"]],
            "label_set": hparams["label_set"],
            "valid_ratio": hparams["valid_ratio"],
            "skip_prep": hparams["skip_prep"],
            "seed": hparams["seed"],
            "min_duration": hparams["min_duration"],
        },
    )
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
