"""Checkpoints that hold trainable parameters only, written so that a kill
at any instant leaves a loadable one.

Frozen encoders and the frozen LLM are reloaded from their sources; saving
them with every checkpoint would multiply its size for nothing. Modules that
inherit :class:`TrainableStateMixin` are saved by SpeechBrain's
``Checkpointer`` (and loaded by its ``Pretrainer``) through the hooks below,
like SpeechBrain's adapters do. :class:`CrashSafeCheckpointer` is the
``Checkpointer`` the recipes use.
"""

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Mapping

import numpy as np
import torch
import yaml
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
    mark_as_loader,
    mark_as_saver,
    mark_as_transfer,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

logger = logging.getLogger(__name__)

#: Prefixes of folders being written or deleted: never listed as checkpoints.
WRITING, DELETING = ".writing-", ".deleting-"

EXTRA_STATE = "_extra_state"


@register_checkpoint_hooks
class TrainableStateMixin:
    """Adds trainable-only state dicts and SpeechBrain checkpoint hooks to a module.

    The saved state holds every parameter with ``requires_grad`` plus the
    modules' extra states (small settings such as an encoder's input mode,
    checked on load). Loading refuses unknown keys and missing trainable
    parameters, naming them.

    Example
    -------
    >>> class Model(TrainableStateMixin, torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    ...         self.head = torch.nn.Linear(2, 1)
    >>> sorted(Model().trainable_state_dict())
    ['head.bias', 'head.weight']
    """

    #: Names of parameters saved although frozen: trained earlier (in a stage
    #: before, see :func:`speechbrain_mowe.training.stages.set_trainable_parts`)
    #: and not in the model's sources.
    kept_frozen: frozenset = frozenset()

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Trainable parameters (and :attr:`kept_frozen` ones) and extra states, detached."""
        state = {
            name: param.detach()
            for name, param in self.named_parameters()
            if param.requires_grad or name in self.kept_frozen
        }
        state.update(
            (name, value) for name, value in self.state_dict().items() if name.endswith(EXTRA_STATE)
        )
        return state

    def load_trainable_state_dict(self, state: Dict[str, torch.Tensor], source: str = "state dict"):
        """Loads a :meth:`trainable_state_dict`, checking that it fits.

        Arguments
        ---------
        state : dict
            As returned by :meth:`trainable_state_dict`.
        source : str
            Where ``state`` comes from, for error messages.
        """
        expected = set(self.trainable_state_dict())
        missing = sorted(expected - set(state))
        if missing:
            raise KeyError(
                f"{source} lacks {len(missing)} trainable entries of {type(self).__name__}, "
                f"e.g. {missing[:5]}; was it saved from a model with the same configuration?"
            )
        result = self.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise KeyError(
                f"{source} has entries unknown to {type(self).__name__}: "
                f"{sorted(result.unexpected_keys)[:5]}"
            )

    @mark_as_saver
    def _save_trainable(self, path):
        torch.save(self.trainable_state_dict(), path)

    @mark_as_loader
    def _load_trainable(self, path, end_of_epoch=False):
        del end_of_epoch
        self.load_trainable_state_dict(
            torch.load(path, map_location="cpu", weights_only=True), source=str(path)
        )

    @mark_as_transfer
    def _transfer_trainable(self, path):
        self._load_trainable(path)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back, or that recovery chose and cannot load."""


def plain_meta(meta: Mapping) -> Dict:
    """A checkpoint's meta data as values YAML reads back: a tensor or numpy
    scalar becomes its number (a tensor of several values, a list of numbers).

    Example
    -------
    >>> plain_meta({"loss": torch.tensor(0.5), "steps": [torch.tensor([1, 2])]})
    {'loss': 0.5, 'steps': [[1, 2]]}
    >>> plain_meta({"model": torch.nn.Linear(1, 1)})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
     ...
    TypeError: The checkpoint meta 'model' is a Linear, which does not read back ...
    """

    def plain(key, value):
        if isinstance(value, (torch.Tensor, np.generic, np.ndarray)):
            return value.tolist()
        if isinstance(value, Mapping):
            return {k: plain(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(key, v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(
            f"The checkpoint meta '{key}' is a {type(value).__name__}, which does not read back "
            f"from {METAFNAME}: give numbers, strings, lists or mappings of them"
        )

    return {key: plain(key, value) for key, value in meta.items()}


class CrashSafeCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer``, safe against a kill at any instant, and
    never silently different.

    SpeechBrain writes a checkpoint's meta file first and its parameter files
    after, in the folder recovery lists, and deletes old checkpoints in place;
    a job killed meanwhile leaves a folder that looks complete and breaks every
    rerun. Here a checkpoint is written in a hidden folder (``.writing-...``),
    its files flushed to disk, and renamed to its final name only once whole; an
    old one is renamed away (``.deleting-...``) before it is removed, and the
    remains of interrupted writes and deletions are never listed (a warning
    names them).

    A checkpoint under its final name was therefore complete when written, and
    recovery loads exactly the one its keys choose, or raises a
    :class:`CheckpointError` naming it: one whose ``CKPT.yaml`` does not read,
    that lacks a recoverable (saved before the recoverable was added), or whose
    file does not load, is never skipped for another, so a resumed run is never
    silently a different one. Meta data is stored so that it reads back (a
    tensor as its number, see :func:`plain_meta`); meta that cannot be is
    refused when saving.

    Arguments
    ---------
    checkpoints_dir : str or Path
        As for ``Checkpointer``.
    *args, **kwargs
        Any other argument of ``Checkpointer``.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> layer = torch.nn.Linear(2, 2)
    >>> checkpointer = CrashSafeCheckpointer(folder, {"layer": layer})
    >>> saved = checkpointer.save_checkpoint(meta={"loss": torch.tensor(0.25)})
    >>> sorted(p.name for p in saved.path.iterdir())
    ['CKPT.yaml', 'layer.ckpt']
    >>> recovered = checkpointer.recover_if_possible(min_key="loss")
    >>> recovered.path == saved.path, recovered.meta["loss"]
    (True, 0.25)
    """

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO):
        """Saves a checkpoint, visible under its final name only once complete.

        Arguments are those of ``Checkpointer.save_checkpoint``; ``meta`` is
        checked first (:func:`plain_meta`), before anything is written.
        """
        meta = plain_meta(meta or {})
        final = writing = None
        if if_main_process():
            final = (
                self._custom_checkpoint_dirpath(name) if name else self._new_checkpoint_dirpath()
            )
            writing = final.with_name(WRITING + final.name)
            shutil.rmtree(writing, ignore_errors=True)
            writing.mkdir(parents=True)
        writing = ddp_broadcast(writing, src=0)
        paramfiles = {}
        for recoverable, obj in self.recoverables.items():
            path = writing / f"{recoverable}{PARAMFILE_EXT}"
            hook = self.custom_save_hooks.get(recoverable) or _default_save_hook(obj)
            hook(obj, path)
            paramfiles[recoverable] = path
        ddp_barrier()  # every process has written its files
        if not if_main_process():
            return None
        saved_meta = self._save_checkpoint_metafile(writing / METAFNAME, meta, end_of_epoch)
        for path in writing.iterdir():
            _flush_to_disk(path)
        replaced = final.with_name(DELETING + final.name)
        if final.exists():  # a custom name saved again: the old one is moved away
            os.replace(final, replaced)
        os.replace(writing, final)
        _flush_to_disk(final.parent)
        shutil.rmtree(replaced, ignore_errors=True)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        paramfiles = {key: final / path.name for key, path in paramfiles.items()}
        return Checkpoint(final, saved_meta, paramfiles)

    def list_checkpoints(self) -> List[Checkpoint]:
        """The checkpoints; a warning names the remains of interrupted writes.

        Returns
        -------
        list of Checkpoint

        Raises
        ------
        CheckpointError
            A checkpoint's ``CKPT.yaml`` does not read: it was damaged after
            it was written (this class writes it whole), and which checkpoint
            recovery would choose cannot be known.
        """
        checkpoints = []
        for path in sorted(self.checkpoints_dir.iterdir()):
            if path.name.startswith((WRITING, DELETING)):
                logger.warning(f"Ignoring {path}: a checkpoint whose writing or deletion was "
                               "interrupted; it is removed at the next save")  # fmt: skip
                continue
            if path.is_dir() and path.name.startswith(CKPT_PREFIX):
                checkpoints.append(self._read_checkpoint(path))
        return checkpoints

    def _read_checkpoint(self, path: Path) -> Checkpoint:
        """The checkpoint in ``path``; a :class:`CheckpointError` if its meta does not read."""
        problem = None
        try:
            meta = yaml.safe_load((path / METAFNAME).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            problem = f"does not read ({' '.join(str(error).split())})"
        else:
            if not isinstance(meta, dict) or not {"unixtime", "end-of-epoch"} <= set(meta):
                problem = "is truncated"
        if problem:
            raise CheckpointError(
                f"The checkpoint {path} cannot be listed: its {METAFNAME} {problem}; move the "
                "folder away to recover from the others"
            )
        paramfiles = {p.stem: p for p in path.iterdir() if p.suffix == PARAMFILE_EXT}
        return Checkpoint(path, meta, paramfiles)

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None,
                            ckpt_predicate=None):  # fmt: skip
        """Loads the checkpoint ``Checkpointer.recover_if_possible`` would choose.

        Returns
        -------
        Checkpoint or None
            None when there is no checkpoint (the run starts from scratch).

        Raises
        ------
        CheckpointError
            The chosen checkpoint does not load (a file is damaged, or it has
            none for a recoverable): one line naming it and why.
        """
        chosen = self.find_checkpoint(importance_key, max_key, min_key, ckpt_predicate)
        if chosen is None:
            logger.info("Would load a checkpoint here, but none found yet.")
            return None
        missing = [
            name
            for name in self.recoverables
            if name not in chosen.paramfiles
            and not self.optional_recoverables.get(name)
            and not self.allow_partial_load
        ]
        if missing:
            raise CheckpointError(
                f"The checkpoint {chosen.path} has no file for {missing} (saved before "
                "they were added to the checkpointer?); recovery chose it and will not load "
                "another: give a key that chooses another, or move it away"
            )
        try:
            self.load_checkpoint(chosen)
        except Exception as error:  # a damaged file: any loader's error
            raise CheckpointError(
                f"The checkpoint {chosen.path} that recovery chose does not load "
                f"({type(error).__name__}: {' '.join(str(error).split())}); move it away to "
                "recover from the one before"
            ) from error
        return chosen

    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=(ckpt_recency,),
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """Deletes all but the ``num_to_keep`` best checkpoints of each key, as
        ``Checkpointer.delete_checkpoints`` chooses them, each renamed away before
        it is removed; then the remains of interrupted writes and deletions.

        (SpeechBrain's own calls ``Checkpointer._delete_checkpoint`` by the class
        name, which a subclass cannot replace, so the choice is made again here.)
        """
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be positive.")
        keys = [{"min_key": key} for key in min_keys or []]
        keys += [{"max_key": key} for key in max_keys or []]
        keys += [{"importance_key": key} for key in importance_keys]
        doomed, kept = set(), set()
        for key in keys:
            doomed.update(self.find_checkpoints(ckpt_predicate=ckpt_predicate, **key))
            kept.update(self.find_checkpoints(
                ckpt_predicate=ckpt_predicate, max_num_checkpoints=num_to_keep, **key
            ))  # fmt: skip
        ddp_barrier()  # no process is saving meanwhile (as SpeechBrain does)
        if if_main_process():
            for checkpoint in doomed - kept:
                self._delete_checkpoint(checkpoint, verbosity=verbosity)
            for path in self.checkpoints_dir.glob(".*"):
                if path.name.startswith((WRITING, DELETING)):
                    shutil.rmtree(path, ignore_errors=True)
        ddp_barrier()

    @staticmethod
    def _delete_checkpoint(checkpoint, verbosity=logging.INFO):
        # Renamed first (atomic), so that a kill during the removal leaves no
        # folder that looks like a checkpoint.
        path = Path(checkpoint.path)
        doomed = path.with_name(DELETING + path.name)
        os.replace(path, doomed)
        shutil.rmtree(doomed)
        logger.log(verbosity, f"Deleted checkpoint in {path}")


@contextlib.contextmanager
def written_whole(path) -> Iterator[Path]:
    """A temporary name next to ``path`` to write to; once the block is done the
    file is flushed to disk and renamed to ``path``, so that a kill at any
    instant leaves either the previous file or the new one, whole.

    Example
    -------
    >>> path = getfixture("tmp_path") / "model.ckpt"
    >>> with written_whole(path) as temporary:
    ...     torch.save({"w": 1}, temporary)
    >>> torch.load(path), [p.name for p in path.parent.iterdir()]
    ({'w': 1}, ['model.ckpt'])
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.writing")
    try:
        yield temporary
        _flush_to_disk(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _default_save_hook(obj):
    hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
    if hook is None:
        raise RuntimeError(f"Don't know how to save {type(obj).__name__}: register a save hook")
    return hook


def _flush_to_disk(path: Path) -> None:
    """fsync of a file or a folder (a rename is durable once its folder is)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
