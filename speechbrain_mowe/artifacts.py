"""Prepared artifacts: made once under a name derived from their options, never
rewritten.

A preparation step (a converted checkpoint, a pre-trained encoder, an initial
LLM and its tokenizer, a corpus) writes into ``<root>/<kind>-<digest>``,
where the digest is a hash of every option that changes what it makes
(:func:`artifact_folder`). Steps with other options write other folders, so
experiments with different options coexist, a rerun with the old options
finds the old artifacts, and a trained model that read an artifact never sees
it change. :func:`prepared_artifact` makes one in a hidden folder and renames
it into place once whole (a kill leaves nothing under the final name), and
with ``skip_prep`` only finds it, or says in one line which step and which
option make it.
"""

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

logger = logging.getLogger(__name__)

#: The file that marks an artifact as complete, holding its options.
RECORD = "prepared.json"
#: Hex digits of the options' hash in an artifact's name.
DIGEST_LENGTH = 12


class MissingArtifactError(FileNotFoundError):
    """A preparation step was skipped (``skip_prep``) but its artifact was never made."""


def sha256(path) -> str:
    """The SHA-256 of a file, read in chunks.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.txt"
    >>> _ = path.write_text("a")
    >>> sha256(path)[:16]
    'ca978112ca1bbdca'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def options_digest(options: Mapping[str, Any]) -> str:
    """A short hash of JSON-serialisable options, independent of key order.

    Example
    -------
    >>> options_digest({"a": 1, "b": [2]}) == options_digest({"b": [2], "a": 1})
    True
    >>> len(options_digest({"a": 1}))
    12
    """
    text = json.dumps(options, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]


def artifact_folder(root, kind: str, options: Mapping[str, Any]) -> str:
    """``<root>/<kind>-<digest of options>``: where an artifact made with these
    options lives (usable in a YAML as ``!apply:``).

    Example
    -------
    >>> artifact_folder("results/1986", "corpus", {"seed": 1986, "train_size": 400})
    'results/1986/corpus-df5b9e5cba3d'
    """
    return os.path.join(root, f"{kind}-{options_digest(options)}")


def artifact_identity(path) -> str:
    """What names the artifact at ``path`` wherever it lies: the name of a
    folder made by :func:`artifact_folder` (``<kind>-<digest>``, which its
    options determine), else the absolute path. Options that name another
    artifact use it, so that a relative and an absolute path, or a moved
    experiment folder, give the same digest.

    Example
    -------
    >>> artifact_identity("results/1986/corpus/synthetic-466df24a7b7c")
    'synthetic-466df24a7b7c'
    >>> artifact_identity("/data/../data/my_corpus")
    '/data/my_corpus'
    """
    name = Path(path).name
    kind, _, digest = name.rpartition("-")
    if kind and len(digest) == DIGEST_LENGTH and all(c in "0123456789abcdef" for c in digest):
        return name
    return os.path.abspath(path)


def prepared_artifact(
    root,
    kind: str,
    options: Mapping[str, Any],
    make: Callable[[Path], None],
    *,
    skip_prep: bool = False,
    made_by: str = "",
) -> Path:
    """The folder of an artifact, made by ``make`` the first time.

    Arguments
    ---------
    root : str or Path
        The folder holding artifacts of this kind.
    kind : str
        Names the artifact (the folder's prefix, and the step in messages).
    options : mapping
        Everything that changes what ``make`` writes (JSON-serialisable).
    make : callable
        ``make(folder)`` writes the artifact into ``folder`` (a hidden one,
        renamed into place once ``make`` returns).
    skip_prep : bool
        Make nothing: the artifact must exist already.
    made_by : str
        What makes it, for the error when ``skip_prep`` finds nothing (e.g.
        ``"run train.py once without --skip_prep=True"``).

    Returns
    -------
    Path
        ``<root>/<kind>-<digest>``, complete.

    Raises
    ------
    MissingArtifactError
        ``skip_prep`` and no complete artifact.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> made = []
    >>> def make(folder):
    ...     made.append(folder.name)
    ...     (folder / "value.txt").write_text("1")
    >>> first = prepared_artifact(root, "toy", {"n": 1}, make)
    >>> again = prepared_artifact(root, "toy", {"n": 1}, make)
    >>> first == again, len(made), made[0].startswith(".toy-")
    (True, 1, True)
    >>> sorted(p.name for p in first.iterdir())
    ['prepared.json', 'value.txt']
    >>> prepared_artifact(root, "toy", {"n": 2}, make, skip_prep=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    speechbrain_mowe.artifacts.MissingArtifactError: toy: .../toy-... was never made ...
    """
    folder = Path(artifact_folder(root, kind, options))
    if (folder / RECORD).is_file():
        logger.info("%s: found in %s", kind, folder)
        return folder
    if skip_prep:
        raise MissingArtifactError(
            f"{kind}: {folder} was never made (skip_prep is True) for these options: "
            f"{json.dumps(dict(options), default=str)[:300]}; "
            + (made_by or "run once without --skip_prep=True to make it")
        )
    if folder.exists():
        raise FileExistsError(
            f"{kind}: {folder} exists but is not a complete artifact (it has no {RECORD}); "
            "it was not made by this version: move it away"
        )
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        make(partial)
        record = {"kind": kind, "options": json.loads(json.dumps(options, default=str))}
        (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("%s: made in %s", kind, folder)
    return folder


def artifact_record(path) -> Optional[Dict[str, Any]]:
    """The record (kind and options) of the artifact a path lies in: a folder
    made by :func:`prepared_artifact`, or a file directly inside one; else None.

    Example
    -------
    >>> folder = prepared_artifact(getfixture("tmp_path"), "toy", {"n": 1}, lambda f: None)
    >>> artifact_record(folder)
    {'kind': 'toy', 'options': {'n': 1}}
    """
    path = Path(path)
    record = (path if path.is_dir() else path.parent) / RECORD
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
