"""LibriSpeech -> ASR manifests.

Reads the corpus as distributed (``<split>/<speaker>/<chapter>/*.flac`` with
``<speaker>-<chapter>.trans.txt``) and writes ``<save_folder>/<split>.csv``,
one row per utterance. Training splits get one of the ASR paraphrases per
utterance (seeded by the id); the others get the fixed evaluation instruction.

Usage::

    python librispeech_prepare.py --data_folder /data/LibriSpeech --save_folder manifests \\
        --splits train-clean-100 dev-clean test-clean
"""

from pathlib import Path
from typing import Sequence

from speechbrain_mowe.dataio import (
    Preparation,
    check_splits,
    clean_text,
    manifest_row,
    run_from_command_line,
)
from speechbrain_mowe.tasks import TASKS, example_rng

SPLITS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)


def prepare_librispeech(
    data_folder: str,
    save_folder: str,
    splits: Sequence[str] = SPLITS,
    skip_prep: bool = False,
    seed: int = 0,
    min_duration: float = 0.0,
    lowercase: bool = False,
    verify_audio: bool = False,
):
    """Writes one ASR manifest per LibriSpeech split.

    Arguments
    ---------
    data_folder : str
        The ``LibriSpeech`` folder holding the split folders.
    save_folder : str
        Where the manifests and the preparation report go.
    splits : sequence of str
        Split folders to prepare.
    skip_prep : bool
        Do nothing (the manifests are known to exist).
    seed : int
        Seeds the choice of instruction paraphrase.
    min_duration : float
        Utterances shorter than this (s) are left out and reported.
    lowercase : bool
        Lowercase the transcripts (LibriSpeech's are upper case).
    verify_audio : bool
        Decode every file to check it and measure it, instead of reading its
        header only (slower; catches damaged and truncated files).

    Returns
    -------
    dict
        Split -> number of rows (None when ``skip_prep``).
    """
    if skip_prep:
        return None
    data_folder = Path(data_folder)
    options = dict(
        data_folder=data_folder,
        splits=list(splits),
        seed=seed,
        lowercase=lowercase,
    )
    check_splits("LibriSpeech", splits, SPLITS)
    manifests = {split: f"{split}.csv" for split in splits}
    prep = Preparation("librispeech", save_folder, options, manifests, min_duration, verify_audio)
    if prep.is_done():
        return prep.counts
    absent = [split for split in splits if not (data_folder / split).is_dir()]
    if absent:
        found = [split for split in SPLITS if (data_folder / split).is_dir()]
        raise FileNotFoundError(
            f"LibriSpeech splits {absent} are not in '{data_folder}' (found: {found})"
        )
    for split in splits:
        rows = []
        for trans in sorted((data_folder / split).glob("*/*/*.trans.txt")):
            for utt_id, text in _read_transcripts(trans):
                wav = trans.parent / f"{utt_id}.flac"
                text = clean_text(text)
                if not text:
                    prep.leave_out(split, utt_id, wav, f"empty transcript in {trans.name}")
                    continue
                info = prep.check_audio(split, utt_id, wav)
                if info is None:
                    continue
                rng = example_rng(seed, utt_id) if split.startswith("train") else None
                rows.append(
                    manifest_row(
                        utt_id,
                        wav,
                        data_folder,
                        info.duration,
                        task="asr",
                        instruction=TASKS["asr"].instruction(rng),
                        answer=text.lower() if lowercase else text,
                        dataset="librispeech",
                        speaker=utt_id.split("-")[0],
                    )
                )
        prep.write(split, rows)
    return prep.finish()


def _read_transcripts(path: Path):
    """``(utterance id, text)`` of every non-blank line of a ``.trans.txt``."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"'{path}' is not UTF-8 text ({err})") from None
    for line in lines:
        if line.strip():
            utt_id, _, text = line.strip().partition(" ")
            yield utt_id, text


if __name__ == "__main__":
    run_from_command_line(prepare_librispeech)
