"""CoVoST 2 -> speech translation manifests, for any of its 36 directions.

Inputs, as distributed:

- the Common Voice (4.0) folder of the source language: ``validated.tsv`` and
  the mp3 clips under ``clips/``;
- the CoVoST 2 table ``covost_v2.<src>_<tgt>.tsv`` (columns ``path``,
  ``translation``, ``split``), or its ``.tsv.tar.gz`` as downloaded.

Both tables are read as the official loader reads them: tab-separated, quoting
off, ``\\`` as escape character, empty fields kept. They are joined on
``path``; the ``train`` split holds the rows marked ``train`` and
``train_covost``. Utterances of every length are kept. A row that cannot be
used (no Common Voice entry, empty translation, missing or unreadable clip,
malformed line, repeated clip) is left out and listed with its reason in
``covost2_<src>_<tgt>_prepare_report.tsv``; nothing is dropped silently.

mp3 is decoded by soundfile's libsndfile (1.1 or newer), which our
dependencies install, so the clips are read where they are, unconverted.

Writes ``<save_folder>/<src>_<tgt>_<split>.csv``.
"""

import contextlib
import csv
import io
import tarfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from speechbrain_mowe.dataio import (
    Preparation,
    check_splits,
    clean_text,
    manifest_row,
    run_from_command_line,
)
from speechbrain_mowe.tasks import TASKS, example_rng

EN_TARGETS = (
    "de",
    "ca",
    "zh-CN",
    "fa",
    "et",
    "mn",
    "tr",
    "ar",
    "sv-SE",
    "lv",
    "sl",
    "ta",
    "ja",
    "id",
    "cy",
)
X_SOURCES = (
    "fr", "de", "es", "ca", "it", "ru", "zh-CN", "pt", "fa", "et", "mn",
    "nl", "tr", "ar", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy",
)  # fmt: skip
DIRECTIONS = tuple(("en", t) for t in EN_TARGETS) + tuple((s, "en") for s in X_SOURCES)
SPLITS = ("train", "dev", "test")
#: Values of the CoVoST ``split`` column that belong to each split.
SPLIT_MEMBERS = {"train": ("train", "train_covost"), "dev": ("dev",), "test": ("test",)}


def prepare_covost2(
    data_folder: str,
    save_folder: str,
    source_language: str = "en",
    target_language: str = "de",
    splits: Sequence[str] = SPLITS,
    covost_folder: Optional[str] = None,
    skip_prep: bool = False,
    seed: int = 0,
    min_duration: float = 0.0,
    verify_audio: bool = False,
):
    """Writes one translation manifest per split of a CoVoST 2 direction.

    Arguments
    ---------
    data_folder : str
        Common Voice folder of the source language (``validated.tsv``, ``clips/``).
    save_folder : str
        Where the manifests and the preparation report go.
    source_language, target_language : str
        Common Voice codes, e.g. ``en`` and ``ja``, or ``zh-CN`` and ``en``.
    splits : sequence of str
        Among ``train``, ``dev``, ``test``.
    covost_folder : str, optional
        Folder of ``covost_v2.<src>_<tgt>.tsv`` (default: ``data_folder``).
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
    direction = (source_language, target_language)
    if direction not in DIRECTIONS:
        raise ValueError(
            f"CoVoST 2 has no direction {source_language}->{target_language}; its directions "
            f"are en->{{{', '.join(EN_TARGETS)}}} and {{{', '.join(X_SOURCES)}}}->en"
        )
    check_splits("CoVoST 2", splits, SPLITS)
    data_folder = Path(data_folder)
    covost_table = _find_covost_table(Path(covost_folder or data_folder), *direction)
    pair = f"{source_language}_{target_language}"
    options = dict(
        data_folder=data_folder,
        covost_table=covost_table,
        splits=list(splits),
        seed=seed,
    )
    manifests = {split: f"{pair}_{split}.csv" for split in splits}
    prep = Preparation(
        f"covost2_{pair}", save_folder, options, manifests, min_duration, verify_audio
    )
    if prep.is_done():
        return prep.counts

    cv_table = data_folder / "validated.tsv"
    if not cv_table.is_file():
        raise FileNotFoundError(f"Common Voice table not found: '{cv_table}'")
    transcripts = {
        row["path"]: row
        for _, row in _read_table(cv_table, ("path", "sentence", "client_id"), prep)
    }
    wanted = {member: split for split in splits for member in SPLIT_MEMBERS[split]}
    known = {member for members in SPLIT_MEMBERS.values() for member in members}
    rows: Dict[str, List[dict]] = {split: [] for split in splits}
    seen = set()
    for line, row in _read_table(covost_table, ("path", "translation", "split"), prep):
        clip = row["path"]
        if row["split"] not in known:
            prep.leave_out(
                row["split"], clip, clip, f"unknown split '{row['split']}' (line {line})"
            )
            continue
        split = wanted.get(row["split"])
        if split is None:
            continue
        utt_id = f"{pair}-{Path(clip).stem}"
        wav = data_folder / "clips" / clip
        if clip in seen:
            prep.leave_out(split, utt_id, wav, f"clip listed again (line {line})")
            continue
        seen.add(clip)
        source = transcripts.get(clip)
        if source is None:
            prep.leave_out(split, utt_id, wav, "clip not in Common Voice validated.tsv")
            continue
        translation = clean_text(row["translation"])
        if not translation:
            prep.leave_out(split, utt_id, wav, f"empty translation (line {line})")
            continue
        info = prep.check_audio(split, utt_id, wav)
        if info is None:
            continue
        rng = example_rng(seed, utt_id) if split == "train" else None
        rows[split].append(
            manifest_row(
                utt_id,
                wav,
                data_folder,
                info.duration,
                task="ast",
                instruction=TASKS["ast"].instruction(
                    rng, source_language=source_language, target_language=target_language
                ),
                answer=translation,
                dataset="covost2",
                source_language=source_language,
                target_language=target_language,
                transcript=clean_text(source["sentence"]),
                speaker=source["client_id"],
            )
        )
    for split in splits:
        prep.write(split, rows[split])
    return prep.finish()


def _find_covost_table(folder: Path, source: str, target: str) -> Path:
    name = f"covost_v2.{source}_{target}.tsv"
    for candidate in (folder / name, folder / f"{name}.tar.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"CoVoST 2 table '{name}' (or '{name}.tar.gz') not found in '{folder}'")


@contextlib.contextmanager
def _open_table(path: Path) -> Iterator[io.TextIOBase]:
    """The table's text, also from inside the ``.tsv.tar.gz`` CoVoST ships."""
    if not path.name.endswith(".tar.gz"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            yield f
        return
    with tarfile.open(path) as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith(".tsv")), None)
        if member is None:
            raise FileNotFoundError(f"No .tsv inside '{path}'")
        with io.TextIOWrapper(archive.extractfile(member), encoding="utf-8-sig", newline="") as f:
            yield f


def _read_table(
    path: Path, columns: Tuple[str, ...], prep: Preparation
) -> Iterator[Tuple[int, Dict[str, str]]]:
    """``(line number, {column: value})`` of each row, read like the official
    loader (``QUOTE_NONE``, ``\\`` escapes). Rows with a wrong number of
    fields are left out and reported."""
    with _open_table(path) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        try:
            header = next(reader, None) or []
            missing = [column for column in columns if column not in header]
            if missing:
                raise ValueError(f"'{path}' lacks columns {missing} (header: {header})")
            index = [header.index(column) for column in columns]
            for fields in reader:
                line = reader.line_num
                if not any(fields):
                    continue
                if len(fields) != len(header):
                    reason = (
                        f"malformed line ({path.name} line {line}: "
                        f"{len(fields)} fields, expected {len(header)})"
                    )
                    prep.leave_out("-", fields[0] if fields else "", path, reason)
                    continue
                yield line, {column: fields[i] for column, i in zip(columns, index)}
        except UnicodeDecodeError as err:
            raise ValueError(f"'{path}' is not UTF-8 text ({err})") from None


if __name__ == "__main__":
    run_from_command_line(prepare_covost2)
