"""Sealed sources: the files a trained model reads besides its checkpoint, kept
inside its inference folder and pinned by checksum.

A model's frozen parts (a converted Whisper, pre-trained weak encoders, the
LLM's initial weights and tokenizer) come from its family's sources, which a
preparation step or a user made somewhere else. :func:`seal_sources` puts
every local source inside the inference folder, ``sources/<digest>/<key>/``,
and returns the SHA-256 of each of its files; a source that is a hub
repository is pinned by the revision found in the local hub cache instead
(a hub revision is content-addressed already). Files are hard-linked where the
folder and the source share a file system (no disk used: a link is another
name of the same bytes) and copied otherwise, or always with ``mode="copy"``.

:func:`open_sources` is what ``inference.yaml`` calls to rebuild the model:
it resolves the sealed sources against the folder, wherever it was moved or
copied, checks every file against its pinned checksum, and raises a one-line
:class:`SealError` naming the file that is missing or changed. A linked file
shares its bytes with the original: a tool that rewrote the original in
place would change both, which the checksums catch; the project's own
preparation never rewrites what it made (:mod:`speechbrain_mowe.artifacts`).
"""

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from speechbrain_mowe.artifacts import options_digest, sha256

logger = logging.getLogger(__name__)

#: The folder of an inference folder holding its sealed sources.
SOURCES_FOLDER = "sources"
SEAL_MODES = ("link", "copy")
#: Checksums already computed in this process: (path, inode, size, mtime) -> SHA-256.
_KNOWN: Dict[Tuple[str, int, int, int], str] = {}


class SealError(ValueError):
    """A sealed source file that is missing or differs from its pinned checksum."""


def _checksum(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _KNOWN:
        _KNOWN[key] = sha256(path)
    return _KNOWN[key]


def _files(path: Path) -> Dict[str, Path]:
    """A source's files by their path relative to it (a file: its own name)."""
    if path.is_file():
        return {path.name: path}
    return {f.relative_to(path).as_posix(): f for f in sorted(path.rglob("*")) if f.is_file()}


def source_checksums(path) -> Dict[str, str]:
    """SHA-256 of each file of a source (a file, or a folder's files by relative path).

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "a.txt").write_text("a")
    >>> source_checksums(folder)
    {'a.txt': 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb'}
    """
    return {name: _checksum(file) for name, file in _files(Path(path)).items()}


def _place(original: Path, copy: Path, mode: str) -> str:
    """Links (or copies) one file; returns how it was placed."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        try:
            os.link(original, copy)
            return "link"
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copy2(original, copy)
    return "copy"


def hub_revision(repo_id: str) -> Optional[str]:
    """The commit of a hub repository's snapshot in the local hub cache, or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not a hub id, not cached, or no huggingface_hub
        return None


def seal_sources(
    folder, sources: Mapping[str, Any], mode: str = "link"
) -> Tuple[Dict[str, Any], Dict[str, Dict[str, str]], Dict[str, str]]:
    """Puts a model's local sources inside ``folder`` and pins them.

    Arguments
    ---------
    folder : str or Path
        The inference folder.
    sources : mapping
        The family's sources as the model used them (local paths absolute).
    mode : str
        ``link`` (hard links where possible, else copies) or ``copy``.

    Returns
    -------
    model_sources : dict
        Each source as ``inference.yaml`` names it: local ones relative to
        ``folder``, others as given.
    checksums : dict
        Per local source, the SHA-256 of each of its files.
    revisions : dict
        Per hub source found in the local hub cache, its commit.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> (tmp / "llm").mkdir()
    >>> _ = (tmp / "llm" / "config.json").write_text("{}")
    >>> named, sums, revisions = seal_sources(
    ...     tmp / "run", {"llm_source": str(tmp / "llm"), "hub_source": "org/no-such-model"})
    >>> named["llm_source"].startswith("sources/"), named["hub_source"], list(sums["llm_source"])
    (True, 'org/no-such-model', ['config.json'])
    >>> (tmp / "run" / named["llm_source"] / "config.json").stat().st_nlink  # a hard link
    2
    """
    if mode not in SEAL_MODES:
        raise ValueError(f"mode must be one of {SEAL_MODES}, got '{mode}'")
    folder = Path(folder).resolve()
    named, checksums, revisions, local = {}, {}, {}, {}
    for key, value in sources.items():
        path = Path(value) if isinstance(value, (str, os.PathLike)) else None
        if path is not None and path.is_absolute() and path.exists():
            local[key] = path
            checksums[key] = source_checksums(path)
        else:
            named[key] = value
            revision = hub_revision(value) if isinstance(value, str) else None
            if revision:
                revisions[key] = revision
            elif isinstance(value, str) and value:
                logger.warning(
                    "The model's source %s (%s) is neither a local path nor a cached hub "
                    "repository: it is not pinned",
                    key,
                    value,
                )
    sealed = Path(SOURCES_FOLDER) / options_digest(checksums)
    placed = []
    for key, path in local.items():
        if folder in path.resolve().parents:  # already inside the folder
            named[key] = path.resolve().relative_to(folder).as_posix()
            continue
        target = sealed / key / (path.name if path.is_file() else "")
        named[key] = target.as_posix().rstrip("/")
        for name, file in _files(path).items():
            copy = folder / target / name if path.is_dir() else folder / target
            if not copy.is_file():
                placed.append(_place(file, copy, mode))
    if placed:
        logger.info(
            "Sealed %d source files in %s (%d linked, %d copied)",
            len(placed),
            folder / sealed,
            placed.count("link"),
            placed.count("copy"),
        )
    return named, checksums, revisions


def remove_stale_sources(folder, model_sources: Mapping[str, Any]) -> None:
    """Removes the sealings of ``folder/sources`` that ``model_sources`` no
    longer names (after the ``inference.yaml`` that names them is replaced)."""
    root = Path(folder) / SOURCES_FOLDER
    if not root.is_dir():
        return
    kept = {
        Path(value).parts[1]
        for value in model_sources.values()
        if isinstance(value, str) and Path(value).parts[:1] == (SOURCES_FOLDER,)
    }
    for sealing in root.iterdir():
        if sealing.name not in kept:
            shutil.rmtree(sealing, ignore_errors=True)


def _verify(key: str, path: Path, expected: Mapping[str, str]) -> None:
    for name, checksum in expected.items():
        alone = len(expected) == 1 and path.name == name and not path.is_dir()
        file = path if alone else path / name
        if not file.is_file():
            raise SealError(
                f"{file} is missing: the model's source {key} was sealed with it "
                f"(sha256 {checksum}); the folder is incomplete, copy it again whole"
            )
        found = _checksum(file)
        if found != checksum:
            raise SealError(
                f"{file} has changed since the model was trained: its sha256 is {found}, "
                f"inference.yaml pins {checksum} (source {key}); the model cannot be rebuilt "
                "from it"
            )


def open_sources(
    folder,
    sources: Mapping[str, Any],
    checksums: Optional[Mapping[str, Mapping[str, str]]] = None,
    revisions: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """The sources of a sealed inference folder, checked, as ``load_family`` takes them.

    Arguments
    ---------
    folder : str or Path
        The inference folder (relative sources are resolved against it).
    sources : mapping
        ``model_sources`` of its ``inference.yaml`` (an override may point a
        source elsewhere: its files are checked all the same).
    checksums : mapping, optional
        Per local source, the SHA-256 of each file.
    revisions : mapping, optional
        Per hub source, the commit to read (from the hub or its cache).

    Raises
    ------
    SealError
        A pinned file is missing or changed (one line naming it).

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> (tmp / "llm").mkdir()
    >>> _ = (tmp / "llm" / "config.json").write_text("{}")
    >>> named, sums, _ = seal_sources(tmp / "run", {"llm_source": str(tmp / "llm")}, "copy")
    >>> opened = open_sources(tmp / "run", named, sums)
    >>> Path(opened["llm_source"]).is_dir()
    True
    >>> _ = (tmp / "run" / named["llm_source"] / "config.json").write_text("{ }")
    >>> open_sources(tmp / "run", named, sums)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    speechbrain_mowe.sealing.SealError: .../config.json has changed since the model was trained: ...
    """
    folder = Path(folder)
    checksums, revisions = checksums or {}, revisions or {}
    opened = {}
    for key, value in sources.items():
        if key in checksums:
            path = Path(value)
            path = path if path.is_absolute() else folder / path
            _verify(key, path, checksums[key])
            opened[key] = str(path.resolve())
        elif revisions.get(key):
            from huggingface_hub import snapshot_download

            opened[key] = snapshot_download(value, revision=revisions[key])
        else:
            opened[key] = value
    return opened
