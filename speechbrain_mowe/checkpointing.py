"""Checkpoints that hold trainable parameters only.

Frozen encoders and the frozen LLM are reloaded from their sources; saving
them with every checkpoint would multiply its size for nothing. Modules that
inherit :class:`TrainableStateMixin` are saved by SpeechBrain's
``Checkpointer`` (and loaded by its ``Pretrainer``) through the hooks below,
like SpeechBrain's adapters do.
"""

from typing import Dict

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    mark_as_transfer,
    register_checkpoint_hooks,
)

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

    def trainable_state_dict(self) -> Dict[str, torch.Tensor]:
        """Trainable parameters and extra states, detached."""
        state = {
            name: param.detach() for name, param in self.named_parameters() if param.requires_grad
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
