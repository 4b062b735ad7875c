"""Clotho v2.1 -> audio captioning manifests.

Reads the release as distributed: ``clotho_captions_<split>.csv`` (columns
``file_name, caption_1 .. caption_5``; ISO-8859-1) next to the audio folders
``development/``, ``validation/``, ``evaluation/`` of 44.1 kHz wavs, whose
names contain spaces and non-ASCII characters. File names are matched after
Unicode normalisation, so archives unpacked on macOS (decomposed accents)
work too.

Training splits (``caption_splits``) get one row per caption, the others one
row per clip whose ``references`` hold all its captions. Writes
``<save_folder>/<split>.csv``.
"""

import csv
import io
import unicodedata
from pathlib import Path
from typing import Dict, Sequence

from speechbrain_mowe.dataio import (
    Preparation,
    check_splits,
    clean_text,
    manifest_row,
    run_from_command_line,
)
from speechbrain_mowe.tasks import TASKS, example_rng

SPLITS = ("development", "validation", "evaluation")
NUM_CAPTIONS = 5


def prepare_clotho(
    data_folder: str,
    save_folder: str,
    splits: Sequence[str] = SPLITS,
    caption_splits: Sequence[str] = ("development",),
    encoding: str = "auto",
    skip_prep: bool = False,
    seed: int = 0,
    min_duration: float = 0.0,
    verify_audio: bool = False,
):
    """Writes one captioning manifest per Clotho split.

    Arguments
    ---------
    data_folder : str
        Folder with the caption CSVs and the audio folders.
    save_folder : str
        Where the manifests and the preparation report go.
    splits : sequence of str
        Splits to prepare.
    caption_splits : sequence of str
        Splits written one row per caption (for training).
    encoding : str
        Encoding of the CSVs; ``auto`` reads UTF-8 when the file is valid
        UTF-8 and ISO-8859-1 (the release's encoding) otherwise.
    skip_prep : bool
        Do nothing (the manifests are known to exist).
    seed : int
        Seeds the choice of instruction paraphrase.
    min_duration : float
        Clips shorter than this (s) are left out and reported.
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
    check_splits("Clotho", [*splits, *caption_splits], SPLITS)
    data_folder = Path(data_folder)
    options = dict(
        data_folder=data_folder,
        splits=list(splits),
        caption_splits=list(caption_splits),
        encoding=encoding,
        seed=seed,
    )
    manifests = {split: f"{split}.csv" for split in splits}
    prep = Preparation("clotho", save_folder, options, manifests, min_duration, verify_audio)
    if prep.is_done():
        return prep.counts
    for split in splits:
        table = data_folder / f"clotho_captions_{split}.csv"
        audio = _audio_index(data_folder / split)
        rows = []
        for line, file_name, captions in _read_captions(table, encoding):
            stem = Path(file_name).stem
            wav = data_folder / split / audio.get(_nfc(file_name), file_name)
            info = prep.check_audio(split, stem, wav)
            if info is None:
                continue
            kept = [(k, c) for k, c in enumerate(captions, 1) if c]
            per_caption = split in caption_splits
            for k in sorted(set(range(1, NUM_CAPTIONS + 1)) - {k for k, _ in kept}):
                utt_id = f"{stem}_{k}" if per_caption else stem
                prep.leave_out(split, utt_id, wav, f"empty caption_{k} (line {line})")
            if per_caption:
                examples = [(f"{stem}_{k}", caption, []) for k, caption in kept]
            elif kept:
                examples = [(stem, kept[0][1], [caption for _, caption in kept])]
            else:
                examples = []
            for utt_id, answer, references in examples:
                rng = example_rng(seed, utt_id) if per_caption else None
                rows.append(
                    manifest_row(
                        utt_id,
                        wav,
                        data_folder,
                        info.duration,
                        task="aac",
                        instruction=TASKS["aac"].instruction(rng),
                        answer=answer,
                        references=references,
                        dataset="clotho",
                        file_name=file_name,
                    )
                )
        prep.write(split, rows)
    return prep.finish()


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _audio_index(folder: Path) -> Dict[str, str]:
    """NFC-normalised file name -> name on disk, for the files of ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Clotho audio folder not found: '{folder}'")
    return {_nfc(path.name): path.name for path in folder.iterdir()}


def _read_captions(table: Path, encoding: str):
    """``(line, file_name, [caption_1 .. caption_5])`` per row of a caption CSV."""
    if not table.is_file():
        raise FileNotFoundError(f"Clotho caption table not found: '{table}'")
    raw = table.read_bytes()
    try:
        text = raw.decode("utf-8" if encoding == "auto" else encoding)
    except UnicodeDecodeError as err:
        if encoding != "auto":
            raise ValueError(f"'{table}' is not {encoding} text ({err})") from None
        text = raw.decode("iso-8859-1")  # decodes any bytes
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    columns = ["file_name"] + [f"caption_{k}" for k in range(1, NUM_CAPTIONS + 1)]
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"'{table}' lacks columns {missing} (header: {reader.fieldnames})")
    for row in reader:
        captions = [clean_text(row[c] or "") for c in columns[1:]]
        yield reader.line_num, row["file_name"], captions


if __name__ == "__main__":
    run_from_command_line(prepare_clotho)
