#!/usr/bin/env python3
"""Trains a MoWE audio LLM for ASR on LibriSpeech and scores it (WER, CER).

To run::

    python train.py hparams/mowe.yaml --data_folder=/path/to/folder_with_LibriSpeech \
        --model_sources="{whisper_source: /models/whisper-large-v3, llm_source: /models/llama}"

Multi-GPU::

    torchrun --nproc_per_node=4 train.py hparams/mowe.yaml ...
"""

import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.errors import run_main
from speechbrain_mowe.training import add_recipe_folder, setup_experiment, train_and_evaluate

add_recipe_folder(__file__)
from librispeech_prepare import prepare_librispeech  # noqa: E402


def main(argv):
    """Prepares LibriSpeech, trains, tests."""
    hparams, run_opts, _ = setup_experiment(argv)
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "splits": hparams["train_splits"] + hparams["valid_splits"] + hparams["test_splits"],
            "skip_prep": hparams["skip_prep"],
            "seed": hparams["seed"],
            "min_duration": hparams["min_duration"],
            "lowercase": hparams["lowercase"],
        },
    )
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
