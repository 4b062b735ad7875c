"""The Mixture of Weak Encoders.

::

    base(wavs) ----------------------------------------------> base feats [b, t, d_base]
        |                                                                 |
        +-> masked mean -> router(summary [, task]) -> gates [b, e]       |
                                                          |               |
    weak_e(wavs[sel_e]) -> proj_e -> align to base frames -x gate -> sum -> weak [b, t, d_weak]
                                                                          |
    fused = concat(base, weak) on channels -> [b, t, d_base + d_weak]   <-+

Only the experts a router selected run, and only on the examples that
selected them. Without a router every expert runs with gate 1 (fixed dual or
multi-encoder front ends such as SALMONN's and WavLLM's); with an empty pool
the module is exactly its base encoder (a base-only baseline).

Shape legend: ``b`` batch, ``s`` samples, ``t`` base frames, ``d`` channels,
``e`` experts.
"""

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from speechbrain_mowe.checkpointing import TrainableStateMixin
from speechbrain_mowe.lobes.encoders import AudioEncoder
from speechbrain_mowe.lobes.routers import Router, Routing
from speechbrain_mowe.lobes.sequence import (
    align_frames,
    masked_mean,
    to_absolute,
    zero_padding,
)

WEAK_FUSIONS = ("sum", "concat")


class MoWEOutput(NamedTuple):
    """What :class:`MoWEEncoder` returns.

    feats : torch.Tensor
        ``[b, t, output_dim]`` fused features, zero past each length.
    lens : torch.Tensor
        ``[b]`` relative lengths (the base encoder's).
    aux_loss : torch.Tensor
        Router load-balancing loss (0 without a router).
    routing : Routing or None
        Per-example decisions, for logging.
    """

    feats: torch.Tensor
    lens: torch.Tensor
    aux_loss: torch.Tensor
    routing: Optional[Routing]


class MoWEEncoder(TrainableStateMixin, nn.Module):
    """A strong base encoder supplemented by a routed pool of weak encoders.

    Arguments
    ---------
    base : AudioEncoder
        The strong encoder; its frame rate is the output's.
    weak_pool : sequence of AudioEncoder
        The weak experts (may be empty).
    router : Router, optional
        Chooses experts per example from the pooled base features (and task
        ids); None runs every expert with gate 1.
    weak_dim : int
        Width each expert is projected to.
    weak_fusion : str
        ``"sum"`` adds the gated experts into one ``weak_dim`` block;
        ``"concat"`` gives each expert its own block (``e * weak_dim``).
    freeze_base : bool
        Keep the base encoder frozen (no gradients, eval mode).
    freeze_weak : bool
        Keep the weak encoders frozen; their projections still train.
    layer_norm : bool
        Layer-normalise the base features and each projected expert (as
        SALMONN does before concatenating).

    Example
    -------
    >>> from speechbrain_mowe.lobes.encoders import TinyConvEncoder
    >>> from speechbrain_mowe.lobes.routers import DataDependentRouter
    >>> base = TinyConvEncoder(output_dim=32)
    >>> pool = [TinyConvEncoder(strides=(2, 2, 2)), TinyConvEncoder(n_mels=24)]
    >>> mowe = MoWEEncoder(base, pool, DataDependentRouter(32, 2), weak_dim=16)
    >>> out = mowe(torch.randn(3, 16000), torch.tensor([1.0, 0.7, 0.4]))
    >>> out.feats.shape, mowe.output_dim
    (torch.Size([3, 25, 48]), 48)
    """

    def __init__(
        self,
        base: AudioEncoder,
        weak_pool: Sequence[AudioEncoder] = (),
        router: Optional[Router] = None,
        weak_dim: int = 256,
        *,
        weak_fusion: str = "sum",
        freeze_base: bool = True,
        freeze_weak: bool = False,
        layer_norm: bool = False,
    ):
        super().__init__()
        if weak_fusion not in WEAK_FUSIONS:
            raise ValueError(f"weak_fusion must be one of {WEAK_FUSIONS}, got '{weak_fusion}'")
        if router is not None and router.num_experts != len(weak_pool):
            raise ValueError(
                f"the router has {router.num_experts} experts but the pool holds {len(weak_pool)}"
            )
        self.base = base
        self.weak_pool = nn.ModuleList(weak_pool)
        self.router = router
        self.weak_fusion = weak_fusion
        self.weak_dim = weak_dim
        self.freeze_base = freeze_base
        self.freeze_weak = freeze_weak
        self.projections = nn.ModuleList(nn.Linear(w.output_dim, weak_dim) for w in weak_pool)
        self.base_norm = nn.LayerNorm(base.output_dim) if layer_norm else nn.Identity()
        self.weak_norm = nn.LayerNorm(weak_dim) if layer_norm and weak_pool else nn.Identity()
        if freeze_base:
            base.requires_grad_(False)
        if freeze_weak:
            self.weak_pool.requires_grad_(False)
        self.train()

    @property
    def num_experts(self) -> int:
        """Size of the weak pool."""
        return len(self.weak_pool)

    @property
    def output_dim(self) -> int:
        """Channels of the fused features."""
        return self.base.output_dim + self._weak_blocks * self.weak_dim

    @property
    def _weak_blocks(self) -> int:
        """Channel blocks of weak features: one per expert when concatenated."""
        if not self.weak_pool:
            return 0
        return self.num_experts if self.weak_fusion == "concat" else 1

    @property
    def reads_instruction(self) -> bool:
        """Whether the router reads the instruction's embedding."""
        return self.router is not None and self.router.reads_instruction

    @property
    def frame_rate(self) -> float:
        """Frames per second of the fused features (the base's)."""
        return self.base.frame_rate

    def train(self, mode: bool = True):
        """Sets training mode, keeping frozen encoders in eval mode (but their
        input augmentation, see :meth:`AudioEncoder.frozen`)."""
        super().train(mode)
        if self.freeze_base:
            self.base.frozen(mode)
        if self.freeze_weak:
            self.weak_pool.eval()
            for expert in self.weak_pool:
                expert.frozen(mode)
        return self

    def forward(
        self,
        wavs: torch.Tensor,
        wav_lens: Optional[torch.Tensor] = None,
        task_ids: Optional[torch.Tensor] = None,
        base_output: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        weak_outputs: Optional[Sequence[Optional[Tuple[torch.Tensor, torch.Tensor]]]] = None,
        instruction: Optional[torch.Tensor] = None,
    ) -> MoWEOutput:
        """Encodes a batch.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[b, s]`` waveforms at 16 kHz.
        wav_lens : torch.Tensor, optional
            ``[b]`` relative lengths.
        task_ids : torch.Tensor, optional
            ``[b]`` task indices for task-conditioned routers.
        base_output : (torch.Tensor, torch.Tensor), optional
            The frozen base encoder's ``(feats, lens)`` for these waveforms,
            computed earlier (e.g. read from a
            :class:`~speechbrain_mowe.dataio.FeatureCache`); the base
            encoder is then not run.
        weak_outputs : sequence, optional
            Per expert, its ``(feats, lens)`` for the whole batch computed
            earlier, or None to run it; only frozen experts may be given so.
        instruction : torch.Tensor, optional
            ``[b, d_llm]`` embedding of each example's instruction, for a
            router that reads it (:attr:`reads_instruction`).
        """
        batch = wavs.shape[0]
        if wav_lens is None:
            wav_lens = torch.ones(batch, device=wavs.device)
        if base_output is not None:
            if not self.freeze_base:
                raise ValueError("base_output can only stand in for a frozen base encoder")
            base_feats, base_lens = base_output
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_base):
                base_feats, base_lens = self.base(wavs, wav_lens)
        base_frames = to_absolute(base_lens, base_feats.shape[1])
        base_feats = zero_padding(self.base_norm(base_feats), base_frames)
        zero = base_feats.new_zeros(())
        if not self.weak_pool:
            return MoWEOutput(base_feats, base_lens, zero, None)

        if self.router is None:
            routing = None
            gates = base_feats.new_ones(batch, self.num_experts)
            selected = gates.bool()
        else:
            summary = masked_mean(base_feats, base_frames)
            routing = self.router(summary, task_ids, batch, instruction=instruction)
            gates = routing.gates
            selected = torch.zeros_like(gates, dtype=torch.bool).scatter(1, routing.experts, True)
        weak = base_feats.new_zeros(batch, base_feats.shape[1], self._weak_blocks, self.weak_dim)
        for index in range(self.num_experts):
            rows = selected[:, index].nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            given = None if weak_outputs is None else weak_outputs[index]
            if given is not None and not self.freeze_weak:
                raise ValueError("weak_outputs can only stand in for frozen weak encoders")
            feats = self.expert_features(
                index, wavs[rows], wav_lens[rows], base_frames[rows], base_feats.shape[1],
                None if given is None else (given[0][rows], given[1][rows]),
            )  # fmt: skip
            block = index if self.weak_fusion == "concat" else 0
            gate = gates[rows, index].to(feats.dtype)[:, None, None]
            # Under autocast the projection gives bf16/fp16: summed in the base's dtype.
            gated = (feats * gate).to(weak.dtype)
            weak[:, :, block] = weak[:, :, block].index_add(0, rows, gated)
        fused = torch.cat([base_feats, weak.flatten(2)], dim=-1)
        aux = routing.aux_loss if routing is not None else zero
        return MoWEOutput(fused, base_lens, aux, routing)

    def expert_features(
        self,
        index: int,
        wavs: torch.Tensor,
        wav_lens: torch.Tensor,
        base_frames: torch.Tensor,
        max_frames: int,
        computed: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Runs expert ``index`` on a (sub-)batch and aligns it to the base frames.

        Arguments
        ---------
        index : int
            Expert position in the pool.
        wavs, wav_lens : torch.Tensor
            The examples to encode; ``wav_lens`` relative to ``wavs.shape[1]``.
        base_frames : torch.Tensor
            ``[n]`` valid base frames of these examples.
        max_frames : int
            Padded base length.
        computed : (torch.Tensor, torch.Tensor), optional
            The expert's ``(feats, lens)`` of these examples, computed earlier.

        Returns
        -------
        torch.Tensor
            ``[n, max_frames, weak_dim]`` projected, time-aligned, not gated.
        """
        if computed is not None:
            feats, lens = computed
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_weak):
                feats, lens = self.weak_pool[index](wavs, wav_lens)
        feats = self.weak_norm(self.projections[index](feats))
        frames = to_absolute(lens, feats.shape[1])
        return align_frames(feats, frames, base_frames, max_frames)
