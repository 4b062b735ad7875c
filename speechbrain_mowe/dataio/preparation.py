"""Bookkeeping shared by the dataset preparation scripts.

A :class:`Preparation` decides whether work is needed (the manifests exist
and were made with the same options), collects every example it had to leave
out with its reason into a report file, writes the manifests and logs the
counts per split. :func:`run_from_command_line` turns a preparation function
into a command-line tool from its signature.

Files written to ``save_folder``::

    <manifests>                      one CSV per split
    <name>_prepare.json              options and counts; written last
    <name>_prepare_report.tsv        split, id, path, reason of each row left out
"""

import argparse
import collections.abc
import csv
import inspect
import json
import logging
import os
import re
import typing
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from speechbrain_mowe.dataio.audio import AudioError, AudioInfo, audio_info
from speechbrain_mowe.dataio.manifest import write_manifest
from speechbrain_mowe.errors import run_main

logger = logging.getLogger(__name__)

REPORT_COLUMNS = ("split", "id", "path", "reason")
#: The parenthesised details of a reason, left out of the logged summary.
_DETAILS = re.compile(r" \(.*\)$")


class PreparedWithOtherOptions(ValueError):
    """A folder already holds a finished preparation made with other options."""


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


class Preparation:
    """Skip check, report of left-out rows, manifests and counts of one preparation.

    Arguments
    ---------
    name : str
        Dataset name, used in file names and logs.
    save_folder : str or Path
        Where manifests, options and the report go.
    options : dict
        Everything that changes the output (JSON-serialisable). A folder
        prepared with other options is never written over: a run with
        different options is refused, naming them (prepare into another
        folder; see :func:`speechbrain_mowe.artifacts.artifact_folder` for
        folders named after their options).
    manifests : dict
        Split name -> manifest file name inside ``save_folder``.
    min_duration : float
        Audio shorter than this (s) is left out by :meth:`check_audio`.
    verify_audio : bool
        Decode every file when checking it (see
        :func:`~speechbrain_mowe.dataio.audio.audio_info`), instead of reading
        headers only.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> prep = Preparation("toy", folder, {"seed": 1}, {"train": "train.csv"})
    >>> prep.is_done()
    False
    >>> prep.leave_out("train", "u2", "/data/u2.wav", "empty transcript")
    >>> prep.write("train", [])
    >>> prep.finish()
    {'train': 0}
    >>> import csv
    >>> with open(folder / "toy_prepare_report.tsv") as f:
    ...     list(csv.reader(f, dialect="excel-tab"))[1]
    ['train', 'u2', '/data/u2.wav', 'empty transcript']
    >>> Preparation("toy", folder, {"seed": 1}, {"train": "train.csv"}).is_done()
    True
    >>> other = Preparation("toy", folder, {"seed": 2}, {"train": "train.csv"})
    >>> other.is_done()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    speechbrain_mowe.dataio.preparation.PreparedWithOtherOptions: toy: ...seed: 1 there, 2 here...
    """

    def __init__(
        self,
        name: str,
        save_folder,
        options: Mapping[str, Any],
        manifests: Mapping[str, str],
        min_duration: float = 0.0,
        verify_audio: bool = False,
    ):
        self.name = name
        self.min_duration = min_duration
        self.verify_audio = verify_audio
        self.save_folder = Path(save_folder)
        self.options = json.loads(
            json.dumps(
                {**options, "min_duration": min_duration, "verify_audio": verify_audio},
                default=str,
            )
        )
        self.manifests = {split: self.save_folder / file for split, file in manifests.items()}
        self.state_file = self.save_folder / f"{name}_prepare.json"
        self.report_file = self.save_folder / f"{name}_prepare_report.tsv"
        self.counts: Dict[str, int] = {}
        self.left_out: List[Dict[str, str]] = []

    def is_done(self) -> bool:
        """True when every manifest exists and the options are unchanged;
        False when nothing was prepared (or a preparation was interrupted).

        Logs the counts of the earlier run when so; they are in ``counts``.

        Raises
        ------
        PreparedWithOtherOptions
            The folder holds a finished preparation with other options.
        """
        if not self.state_file.is_file() or not all(p.is_file() for p in self.manifests.values()):
            return False
        with open(self.state_file, encoding="utf-8") as f:
            state = json.load(f)
        old = state.get("options") or {}
        if old != self.options:
            changed = ", ".join(
                f"{key}: {_short(old.get(key))} there, {_short(self.options.get(key))} here"
                for key in sorted(set(old) | set(self.options))
                if old.get(key) != self.options.get(key)
            )
            raise PreparedWithOtherOptions(
                f"{self.name}: {self.save_folder} was prepared with other options ({changed}); "
                "it is never written over (a model trained on it may need it): prepare into "
                "another folder, or remove this one"
            )
        self.counts = state["counts"]
        logger.info(
            "%s: already prepared in %s (%s); skipping",
            self.name,
            self.save_folder,
            _format_counts(self.counts),
        )
        return True

    def leave_out(self, split: str, utt_id: str, path, reason: str) -> None:
        """Records a row that will not be in the manifest, and why."""
        self.left_out.append({"split": split, "id": utt_id, "path": str(path), "reason": reason})

    def check_audio(self, split: str, utt_id: str, path) -> Optional[AudioInfo]:
        """The file's :class:`AudioInfo`, or None (and the row left out) when
        it is missing, unreadable, empty or shorter than ``min_duration``."""
        try:
            return audio_info(
                path, utt_id=utt_id, min_duration=self.min_duration, decode=self.verify_audio
            )
        except AudioError as err:
            self.leave_out(split, utt_id, path, err.reason)
            return None

    def write(self, split: str, rows: Sequence[Mapping[str, str]]) -> None:
        """Writes the manifest of ``split`` and counts its rows.

        A row whose id came earlier is left out (and reported). The first
        write removes the state file, so a preparation interrupted from here
        on is never taken for a finished one.
        """
        self.state_file.unlink(missing_ok=True)
        kept, seen = [], set()
        for row in rows:
            if row["ID"] in seen:
                self.leave_out(split, row["ID"], row["wav"], "duplicate id")
                continue
            seen.add(row["ID"])
            kept.append(row)
        write_manifest(self.manifests[split], kept)
        self.counts[split] = len(kept)

    def finish(self) -> Dict[str, int]:
        """Writes the report and the state file, logs the counts, returns them."""
        unwritten = sorted(set(self.manifests) - set(self.counts))
        if unwritten:
            raise RuntimeError(f"{self.name}: manifests of {unwritten} were never written")
        self.save_folder.mkdir(parents=True, exist_ok=True)
        with open(self.report_file, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=REPORT_COLUMNS, delimiter="\t")
            writer.writeheader()
            writer.writerows(self.left_out)
        state = {"options": self.options, "counts": self.counts, "left_out": len(self.left_out)}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, ensure_ascii=False)
        os.replace(tmp, self.state_file)
        logger.info(
            "%s: prepared %s in %s", self.name, _format_counts(self.counts), self.save_folder
        )
        if self.left_out:
            logger.warning(
                "%s: left out %d rows (%s); each is listed in %s",
                self.name,
                len(self.left_out),
                summarize_reasons(row["reason"] for row in self.left_out),
                self.report_file,
            )
        return dict(self.counts)


def check_splits(dataset: str, splits: Sequence[str], known: Sequence[str]) -> None:
    """Raises a ``ValueError`` naming the ``splits`` that are not ``known``.

    Example
    -------
    >>> check_splits("Clotho", ["dev"], ["development", "evaluation"])
    Traceback (most recent call last):
     ...
    ValueError: Unknown Clotho splits ['dev']; the splits are ['development', 'evaluation']
    """
    unknown = [split for split in splits if split not in known]
    if unknown:
        raise ValueError(f"Unknown {dataset} splits {unknown}; the splits are {list(known)}")


def summarize_reasons(reasons: Iterable[str]) -> str:
    """Counts reasons by kind, leaving out their parenthesised details.

    Example
    -------
    >>> summarize_reasons(["file not found", "unreadable audio (Error 1)", "file not found"])
    '2 x file not found, 1 x unreadable audio'
    """
    counts = Counter(_DETAILS.sub("", reason) for reason in reasons)
    return ", ".join(f"{n} x {reason}" for reason, n in sorted(counts.items()))


def _format_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{split}: {n} rows" for split, n in counts.items())


def run_from_command_line(prepare: Callable, argv: Optional[Sequence[str]] = None) -> Any:
    """Runs ``prepare`` with arguments parsed from the command line.

    Every parameter becomes ``--name``; parameters without a default are
    required. Sequences take several values (``--splits dev-clean test-clean``),
    booleans take ``true`` or ``false``.

    Example
    -------
    >>> def prepare(data_folder, save_folder, splits=("a", "b"), seed: int = 0, skip_prep=False):
    ...     return data_folder, splits, seed, skip_prep
    >>> run_from_command_line(prepare, ["--data_folder", "d", "--save_folder", "s",
    ...                                 "--splits", "b", "--seed", "3", "--skip_prep", "true"])
    ('d', ['b'], 3, True)
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    doc = inspect.getdoc(prepare) or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    hints = typing.get_type_hints(prepare)
    for name, param in inspect.signature(prepare).parameters.items():
        default = param.default
        required = default is inspect.Parameter.empty
        kind = _unwrap_optional(
            hints.get(name, type(default) if not required and default is not None else str)
        )
        kwargs: Dict[str, Any] = {"required": required}
        if not required:
            kwargs["default"] = default
            kwargs["help"] = f"default: {default}"
        if kind is bool:
            kwargs["type"] = _parse_bool
        elif isinstance(default, (list, tuple)) or typing.get_origin(kind) in (
            list,
            tuple,
            collections.abc.Sequence,
        ):
            kwargs["nargs"] = "+"
            args = typing.get_args(kind)
            kwargs["type"] = args[0] if args and args[0] is not Ellipsis else str
        elif kind in (int, float):
            kwargs["type"] = kind
        parser.add_argument(f"--{name}", **kwargs)
    return run_main(prepare, **vars(parser.parse_args(argv)))


def _unwrap_optional(kind):
    if typing.get_origin(kind) is typing.Union:
        args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def _parse_bool(text: str) -> bool:
    value = text.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
