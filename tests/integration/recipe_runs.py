"""Helpers to run the training recipes on the fixture corpora with the tiny model."""

import importlib.util
from pathlib import Path

import torch
from fixture_corpora import (
    load_recipe,
    make_clotho,
    make_common_voice,
    make_iemocap,
    make_librispeech,
    write_covost_table,
)

from speechbrain_mowe.dataio import save_audio
from speechbrain_mowe.training import EvaluationResult, read_result

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

COVOST_CLIPS = {
    "common_voice_en_1.mp3": (1.0, "Hello there."),
    "common_voice_en_2.mp3": (1.5, "How are you today?"),
    "common_voice_en_3.mp3": (1.0, "Good morning."),
    "common_voice_en_4.mp3": (1.25, "See you soon."),
}
COVOST_TABLE = [
    ("common_voice_en_1.mp3", "Hallo.", "train"),
    ("common_voice_en_2.mp3", "Wie geht es dir heute?", "train_covost"),
    ("common_voice_en_3.mp3", "Guten Morgen.", "dev"),
    ("common_voice_en_4.mp3", "Bis bald.", "test"),
]


#: Seven short utterances (an odd number) with answers the tiny tokenizer knows.
SHORT_UTTERANCES = {
    "1-10-0000": (1.0, "one two three"),
    "1-10-0001": (1.5, "a bird chirps"),
    "2-20-0000": (0.75, "der fuchs"),
    "2-20-0001": (1.25, "happy"),
    "3-30-0000": (1.0, "the lazy dog"),
    "3-30-0001": (0.5, "seven eight"),
    "4-40-0000": (1.75, "a car passes by"),
}


def prepared_short_librispeech(root: Path):
    """:func:`make_short_librispeech` with its train-clean-100 and test-clean
    manifests prepared in ``root/manifests``: ``(corpus, manifest folder)``."""
    corpus = make_short_librispeech(root)
    prepare = load_recipe("LibriSpeech/librispeech_prepare.py").prepare_librispeech
    prepare(corpus, root / "manifests", ["train-clean-100", "test-clean"], lowercase=True)
    return corpus, root / "manifests"


def make_short_librispeech(root: Path) -> Path:
    """A LibriSpeech-shaped corpus whose train-clean-100, dev-clean and test-clean
    all hold :data:`SHORT_UTTERANCES`, each clip its own seeded noise."""
    splits = {s: SHORT_UTTERANCES for s in ("train-clean-100", "dev-clean", "test-clean")}
    corpus = make_librispeech(root, splits)
    gen = torch.Generator().manual_seed(0)
    noises = {
        utt: torch.randn(int(16000 * seconds), generator=gen) * 0.1
        for utt, (seconds, _) in SHORT_UTTERANCES.items()
    }
    for path in corpus.glob("*/*/*/*.flac"):
        save_audio(path, noises[path.stem], 16000)
    return corpus


def load_train_script(relative: str):
    """Imports ``recipes/<relative>`` under a name of its own."""
    path = RECIPES / relative
    spec = importlib.util.spec_from_file_location(relative.replace("/", "_")[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def multitask_arguments(corpora: dict) -> list:
    """The MultiTask recipe's data arguments for :func:`make_corpora`'s corpora."""
    return [
        f"--librispeech_folder={corpora['librispeech']}",
        "--librispeech_train=[train-clean-100]",
        f"--covost_folder={corpora['covost']}",
        f"--iemocap_folder={corpora['iemocap']}",
        "--iemocap_fold=2",
        f"--clotho_folder={corpora['clotho']}",
        "--num_samples=12",
    ]


def make_corpora(root: Path) -> dict:
    """All four fixture corpora under ``root``; returns each one's data folder."""
    covost = make_common_voice(root / "cv", "en", COVOST_CLIPS)
    write_covost_table(covost, "en", "de", COVOST_TABLE)
    iemocap, _ = make_iemocap(root)
    return {
        "librispeech": make_librispeech(root),
        "covost": covost,
        "iemocap": iemocap,
        "clotho": make_clotho(root),
    }


def tiny_overrides(output_folder, whisper_dir, llm_dir, epochs=2, **extra) -> list:
    """Command-line overrides for a quick CPU run with the tiny model family."""
    options = {
        "output_folder": output_folder,
        "model_family": "tiny_mowe",
        "model_sources": f"{{whisper_source: {whisper_dir}, llm_source: {llm_dir}}}",
        "number_of_epochs": epochs,
        "precision": "fp32",
        "eval_precision": "fp32",
        "device": "cpu",
        "num_workers": 0,
        "max_batch_duration": 4.0,
        "max_new_tokens": 8,
        "ckpt_interval_minutes": 0,
        "lr": 0.003,
        "warmup_steps": 2,
        "total_steps": 100,
        **extra,
    }
    return ["--noprogressbar"] + [f"--{key}={value}" for key, value in options.items()]


def read_metrics(output_folder, test_set: str) -> EvaluationResult:
    """``metrics.json`` of one test set."""
    return read_result(Path(output_folder) / "test_results" / test_set)
