"""Manifests: one CSV row per example, in SpeechBrain's format.

Columns, in order::

    ID, duration, wav, task, instruction, answer, references, <extra columns>

``wav`` is written ``$data_root/<path inside the data folder>`` so a manifest
stays valid when the data moves. ``references`` is a JSON list of every
reference answer when a task has several (Clotho's five captions), else empty.
Extra columns carry dataset facts (``speaker``, ``target_language``, ...).

:func:`load_manifest` reads a manifest into the dict ``DynamicItemDataset``
takes, with ``duration`` as float and ``references`` as a list.
``DynamicItemDataset.from_csv(path, replacements={"data_root": ...})`` reads
the same files, with two differences: ``references`` stays a JSON string, and
it raises a ``KeyError`` on texts that contain ``$`` followed by a letter or
digit (it takes ``$5`` for a variable); :func:`load_manifest` leaves such
texts as they are.
"""

import csv
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from speechbrain.dataio.dataio import load_data_csv
from speechbrain.dataio.dataset import DynamicItemDataset

COLUMNS = ("ID", "duration", "wav", "task", "instruction", "answer", "references")

_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Collapses runs of whitespace (newlines and tabs included) to one space.

    Example
    -------
    >>> clean_text("  two\\tbirds\\n sing ")
    'two birds sing'
    """
    return _SPACES.sub(" ", text).strip()


def manifest_row(
    utt_id: str,
    wav,
    data_folder,
    duration: float,
    task: str,
    instruction: str,
    answer: str,
    references: Optional[Sequence[str]] = None,
    **extra,
) -> Dict[str, str]:
    """One manifest row, with the audio path written relative to ``data_folder``.

    Arguments
    ---------
    utt_id : str
        Unique example id.
    wav : str or Path
        The audio file, inside ``data_folder``.
    data_folder : str or Path
        Replaced by ``$data_root``.
    duration : float
        Seconds.
    task, instruction, answer : str
        What is asked and the expected answer (the first reference when there
        are several).
    references : sequence of str, optional
        Every acceptable answer, for evaluation.
    **extra
        Further columns.

    Example
    -------
    >>> row = manifest_row("u1", "/data/ls/a/u1.flac", "/data/ls", 1.23456, "asr",
    ...                    "Transcribe the speech.", "HELLO", speaker="a")
    >>> row["wav"], row["duration"], row["speaker"]
    ('$data_root/a/u1.flac', '1.235', 'a')
    """
    rel = os.path.relpath(os.fspath(wav), os.fspath(data_folder))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{utt_id}: audio '{wav}' is outside the data folder '{data_folder}'")
    return {
        "ID": utt_id,
        "duration": f"{duration:.3f}",
        "wav": "$data_root/" + Path(rel).as_posix(),
        "task": task,
        "instruction": instruction,
        "answer": answer,
        "references": json.dumps(list(references), ensure_ascii=False) if references else "",
        **{key: str(value) for key, value in extra.items()},
    }


def write_manifest(path, rows: Sequence[Mapping[str, str]]) -> None:
    """Writes ``rows`` as a UTF-8 CSV, atomically (an interrupted write leaves
    no partial file behind).

    Rows may hold different extra columns; absent values are written empty.
    """
    columns = list(COLUMNS)
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


class _KeepUnknown(dict):
    """Replacements that leave ``$name`` untouched unless ``name`` is given."""

    def __missing__(self, key):
        return "$" + key


def load_manifest(path, data_root) -> Dict[str, Dict]:
    """Reads a manifest as ``{id: row}`` with ``$data_root`` replaced.

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> write_manifest(path, [manifest_row(
    ...     "c1", "/clotho/a b.wav", "/clotho", 20.0, "aac", "Describe.", "Rain.",
    ...     references=["Rain.", "It costs $5 to hear rain."])])
    >>> row = load_manifest(path, "/mnt/clotho")["c1"]
    >>> row["wav"], row["duration"], row["references"][1]
    ('/mnt/clotho/a b.wav', 20.0, 'It costs $5 to hear rain.')
    """
    data = load_data_csv(os.fspath(path), replacements=_KeepUnknown(data_root=os.fspath(data_root)))
    for utt_id, row in data.items():
        refs = row.get("references")
        try:
            row["references"] = json.loads(refs) if refs else []
        except json.JSONDecodeError:
            raise ValueError(f"{path}: row '{utt_id}' has malformed references {refs!r}") from None
    return data


def _rows(paths, data_root):
    """``(path, id, row)`` of one or several manifests."""
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        for utt_id, row in load_manifest(path, data_root).items():
            yield path, utt_id, row


def load_manifests(
    manifests: Mapping[str, "os.PathLike | str"], data_roots: Mapping[str, "os.PathLike | str"]
) -> Tuple[DynamicItemDataset, Dict[str, List[int]]]:
    """Reads several manifests into one dataset, remembering which rows came from where.

    Arguments
    ---------
    manifests : mapping
        Source name -> manifest path, e.g. ``{"asr": ".../train-clean-100.csv"}``,
        or a list of paths whose rows form one source.
    data_roots : mapping
        Source name -> the folder that ``$data_root`` stands for in that manifest.

    Returns
    -------
    dataset : DynamicItemDataset
        Every row, each with the union of all manifests' columns (missing ones
        empty) and a ``source`` column naming its manifest.
    groups : dict
        Source name -> the dataset indices of its rows, for
        :class:`~speechbrain_mowe.dataio.sampling.WeightedMixtureSampler`.
    """
    missing = sorted(set(manifests) - set(data_roots))
    if missing:
        raise KeyError(f"No data root given for manifests {missing}")
    data, origin, groups = {}, {}, {}
    for source, paths in manifests.items():
        for path, utt_id, row in _rows(paths, data_roots[source]):
            if utt_id in data:
                raise ValueError(
                    f"Example id '{utt_id}' is in both {origin[utt_id]} and {path}; "
                    "ids must be unique across mixed manifests"
                )
            origin[utt_id] = path
            row["source"] = source
            groups.setdefault(source, []).append(len(data))
            data[utt_id] = row
        groups.setdefault(source, [])
    columns = {key for row in data.values() for key in row}
    for row in data.values():
        for key in columns - row.keys():
            row[key] = ""
    return DynamicItemDataset(data), groups
