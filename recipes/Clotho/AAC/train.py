#!/usr/bin/env python3
"""Trains a MoWE audio LLM for audio captioning on Clotho and scores it
(BLEU-1..4, ROUGE-L, CIDEr-D over all five references).

To run::

    python train.py hparams/mowe.yaml --data_folder=/path/to/clotho \
        --model_sources="{whisper_source: /models/whisper-large-v3, llm_source: /models/llama}"
"""

import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
from speechbrain_mowe.training import add_recipe_folder, setup_experiment, train_and_evaluate

add_recipe_folder(__file__)
from clotho_prepare import prepare_clotho  # noqa: E402


def main(argv):
    """Prepares Clotho, trains, tests."""
    hparams, run_opts, _ = setup_experiment(argv)
    splits = hparams["train_splits"] + hparams["valid_splits"] + hparams["test_splits"]
    run_on_main(
        prepare_clotho,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "splits": splits,
            "caption_splits": hparams["train_splits"],
            "skip_prep": hparams["skip_prep"],
            "seed": hparams["seed"],
            "min_duration": hparams["min_duration"],
        },
    )
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
