#!/usr/bin/env python3
"""Trains a MoWE audio LLM for speech translation on one CoVoST 2 direction
and scores it (BLEU, sacrebleu signature logged).

To run::

    python train.py hparams/mowe.yaml --data_folder=/path/to/cv-corpus/en \
        --source_language=en --target_language=de \
        --model_sources="{whisper_source: /models/whisper-large-v3, llm_source: /models/llama}"
"""

import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
from speechbrain_mowe.training import add_recipe_folder, setup_experiment, train_and_evaluate

add_recipe_folder(__file__)
from covost2_prepare import prepare_covost2  # noqa: E402


def main(argv):
    """Prepares the CoVoST 2 direction, trains, tests."""
    hparams, run_opts, _ = setup_experiment(argv)
    run_on_main(
        prepare_covost2,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "source_language": hparams["source_language"],
            "target_language": hparams["target_language"],
            "splits": hparams["train_splits"] + hparams["valid_splits"] + hparams["test_splits"],
            "covost_folder": hparams["covost_folder"],
            "skip_prep": hparams["skip_prep"],
            "seed": hparams["seed"],
            "min_duration": hparams["min_duration"],
        },
    )
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
