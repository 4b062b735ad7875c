#!/usr/bin/env python3
"""A recipe that adds a task of its own, with its own scorer and scorer options,
in one file: "how many words are spoken?" on a LibriSpeech-shaped corpus.

Run as the LibriSpeech recipe is, with its YAML and ``--tasks=[word_count]``::

    python word_count_recipe.py ../../recipes/LibriSpeech/ASR/hparams/mowe.yaml \\
        --data_folder=... --tasks=[word_count] "--scorer_options={word_count: {tolerance: 1}}"
"""

import sys
from pathlib import Path
from typing import Dict, List

from speechbrain.utils.distributed import run_on_main

from speechbrain_mowe.dataio import audio_info, manifest_row, write_manifest
from speechbrain_mowe.metrics import Scorer
from speechbrain_mowe.tasks import Metric, Task, example_rng, register_task
from speechbrain_mowe.training import setup_experiment, train_and_evaluate


class WordCountScorer(Scorer):
    """Share of answers within ``tolerance`` of the true count, and their mean error."""

    def __init__(self, tolerance: int = 0):
        super().__init__()
        self.tolerance = tolerance
        self.errors: List[float] = []

    def _add(self, ids, hypotheses, references):
        for hypothesis, reference in zip(hypotheses, references):
            words = hypothesis.split()
            guess = int(words[0]) if words and words[0].isdigit() else 0
            self.errors.append(abs(guess - int(reference)))

    def _summarize(self) -> Dict[str, float]:
        within = sum(error <= self.tolerance for error in self.errors)
        return {
            "accuracy": 100.0 * within / len(self.errors),
            "MAE": sum(self.errors) / len(self.errors),
            "tolerance": self.tolerance,
        }

    def summary_lines(self) -> List[str]:
        scores = self.summarize()
        return [f"accuracy: {scores['accuracy']:.2f} (within {self.tolerance})"]


WORD_COUNT = register_task(
    Task(
        "word_count",
        ("How many words are spoken?", "Count the words you hear."),
        scorer=WordCountScorer,
        scorer_options={"tolerance": 0},
        join=None,
        shortcut="count_words_file",
        metrics=(Metric("accuracy", higher_is_better=True), Metric("MAE", False)),
    )
)


def prepare_word_count(data_folder: str, save_folder: str, splits: List[str], seed: int) -> None:
    """One manifest per LibriSpeech split, answering each clip with its word count
    (training rows with a seeded paraphrase of the instruction, the others with
    the evaluation one)."""
    for split in splits:
        rows = []
        for transcript in sorted(Path(data_folder, split).glob("*/*/*.trans.txt")):
            for line in transcript.read_text().splitlines():
                utt_id, text = line.split(" ", 1)
                wav = transcript.parent / f"{utt_id}.flac"
                rng = example_rng(seed, utt_id) if split.startswith("train") else None
                instruction = WORD_COUNT.instruction(rng)
                seconds = audio_info(wav, utt_id=utt_id).duration
                answer = str(len(text.split()))
                rows.append(
                    manifest_row(
                        utt_id, wav, data_folder, seconds, WORD_COUNT.name, instruction, answer
                    )  # fmt: skip
                )
        write_manifest(Path(save_folder) / f"{split}.csv", rows)


def main(argv):
    """Prepares, trains, tests and writes the inference folder."""
    hparams, run_opts, _ = setup_experiment(argv)
    splits = hparams["train_splits"] + hparams["valid_splits"] + hparams["test_splits"]
    run_on_main(
        prepare_word_count,
        args=[hparams["data_folder"], hparams["manifest_folder"], splits, hparams["seed"]],
    )
    return train_and_evaluate(hparams, run_opts)


if __name__ == "__main__":
    main(sys.argv[1:])
