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
import logging
import os
import re
from pathlib import Path
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple

from speechbrain.dataio.dataio import load_data_csv
from speechbrain.dataio.dataset import DynamicItemDataset

COLUMNS = ("ID", "duration", "wav", "task", "instruction", "answer", "references")
#: The columns each use of a manifest needs (inference needs ``task`` and
#: ``instruction`` unless the command line gives them).
REQUIRED_COLUMNS = {
    "training": ("ID", "duration", "wav", "task", "instruction", "answer"),
    "evaluation": ("ID", "duration", "wav", "task", "instruction", "answer"),
    "inference": ("ID", "wav", "task", "instruction"),
}
#: What :func:`check_manifest` does with a row it cannot use.
INVALID_ROWS = ("refuse", "skip")

_SPACES = re.compile(r"\s+")
logger = logging.getLogger(__name__)


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


class ManifestError(ValueError):
    """A manifest that cannot be used as it is; the message names the file,
    and the row (id and line) and column where that is the problem."""


def _row_problem(row: Mapping[str, str], needed, tasks) -> Optional[Tuple[str, str]]:
    """(column, what is wrong) of a row, or None."""
    if not row.get("ID"):
        return "ID", "empty id"
    if "duration" in needed:
        try:
            if not float(row["duration"]) > 0:
                return "duration", f"{row['duration']!r} is not a positive duration"
        except ValueError:
            return "duration", f"{row['duration']!r} is not a number of seconds"
    if not row.get("wav"):
        return "wav", "empty audio path"
    if tasks is not None and "task" in row and row["task"] not in tasks:
        return "task", f"unknown task {row['task']!r} (the model's tasks: {', '.join(tasks)})"
    if "answer" in needed and not row["answer"].strip():
        return "answer", "empty answer"
    return None


def check_columns(path, columns: Sequence[str], use: str) -> None:
    """Refuses a manifest that is missing, a folder, or lacks one of ``columns``.

    Arguments
    ---------
    path : str or Path
        The manifest.
    columns : sequence of str
        The columns it needs.
    use : str
        What for, for the message (``training``, ``evaluation``, ``inference``).

    Raises
    ------
    FileNotFoundError, ManifestError
        Naming the file (and the columns).
    """
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path} is a folder, not a manifest")
    if not path.is_file():
        raise FileNotFoundError(f"Manifest {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    missing = [column for column in columns if column not in header]
    if missing:
        raise ManifestError(
            f"{path}: no {', '.join(repr(c) for c in missing)} column; a manifest for "
            f"{use} needs {', '.join(columns)} (it has {', '.join(header) or 'no header'})"
        )


def check_manifest(
    path,
    use: str,
    tasks: Optional[Sequence[str]] = None,
    invalid_rows: str = "refuse",
    required: Optional[Sequence[str]] = None,
) -> List[str]:
    """Checks a manifest before it is used: its columns, then every row.

    A row is unusable when its id, duration or audio path is empty or
    malformed, its task is not one of ``tasks``, or (for training and
    evaluation) its answer is empty.

    Arguments
    ---------
    path : str or Path
        The manifest.
    use : str
        ``training``, ``evaluation`` or ``inference``: which columns it needs
        (:data:`REQUIRED_COLUMNS`).
    tasks : sequence of str, optional
        The tasks a row may name (default: any).
    invalid_rows : str
        ``refuse``: the first unusable row is an error; ``skip``: unusable
        rows are left out, counted in a warning, and their ids returned.
    required : sequence of str, optional
        The columns needed, instead of those of ``use``.

    Returns
    -------
    list of str
        The ids of the rows to leave out (none when refusing).

    Raises
    ------
    ManifestError
        ``<file>: no 'answer' column ...`` or ``<file>, line 3 (id 'b'),
        column 'answer': empty answer``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> _ = path.write_text("ID,duration,wav,task,instruction,answer\\n"
    ...                     "a,1.0,a.wav,asr,Transcribe.,hello\\nb,1.0,b.wav,asr,Transcribe.,\\n")
    >>> check_manifest(path, "training", invalid_rows="skip")
    ['b']
    >>> try:
    ...     check_manifest(path, "training")
    ... except ManifestError as error:
    ...     print(str(error).split(", ", 1)[1])
    line 3 (id 'b'), column 'answer': empty answer
    """
    if invalid_rows not in INVALID_ROWS:
        raise ValueError(f"invalid_rows is {invalid_rows!r}, not one of {INVALID_ROWS}")
    needed = REQUIRED_COLUMNS[use] if required is None else required
    check_columns(path, needed, use)
    skipped, reasons = [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for row in reader:
            row = {key: value or "" for key, value in row.items() if key is not None}
            problem = _row_problem(row, needed, tasks)
            if problem is None:
                continue
            column, reason = problem
            where = f"{path}, line {reader.line_num} (id {row['ID']!r}), column {column!r}"
            if invalid_rows == "refuse":
                raise ManifestError(f"{where}: {reason}")
            skipped.append(row["ID"])
            reasons.append(f"{where}: {reason}")
    if skipped:
        logger.warning("%s: %d unusable rows skipped, e.g. %s", path, len(skipped), reasons[0])
    return skipped


def load_manifests(
    manifests: Mapping[str, "os.PathLike | str"],
    data_roots: Mapping[str, "os.PathLike | str"],
    skip: Collection[str] = (),
) -> Tuple[DynamicItemDataset, Dict[str, List[int]]]:
    """Reads several manifests into one dataset, remembering which rows came from where.

    Arguments
    ---------
    manifests : mapping
        Source name -> manifest path, e.g. ``{"asr": ".../train-clean-100.csv"}``,
        or a list of paths whose rows form one source.
    data_roots : mapping
        Source name -> the folder that ``$data_root`` stands for in that manifest.
    skip : collection of str
        Ids of rows to leave out (see :func:`check_manifest`).

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
            if utt_id in skip:
                continue
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
