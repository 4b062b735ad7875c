"""Projectors (connectors) from audio features to the LLM's embedding width.

Each maps ``(feats [b, t, d_in], lens)`` with relative lengths to
``(embeds [b, t', d_llm], lens')`` and zeroes frames past each new length, so
an example's output never depends on the padding of its batch.

Shape legend: ``b`` batch, ``t`` frames, ``d`` channels, ``w`` window, ``q`` queries.
"""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from speechbrain_mowe.lobes.conv import MaskedConvStack
from speechbrain_mowe.lobes.sequence import (
    length_mask,
    to_absolute,
    to_relative,
    zero_padding,
)


def _mlp(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim)
    )


def _prime_factors(n: int):
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


class Projector(nn.Module):
    """What every projector ends with: an optional RMS normalisation of each
    output embedding, then the padding zeroed.

    Ultravox's projector ends with an RMS normalisation too. Without one, the
    synthetic experiment's projector grew its outputs to about 70 times the
    norm of the text embeddings beside them, and the LLM learnt every task
    less (see the recipe README, "The scale of the audio embeddings").

    Arguments
    ---------
    output_dim : int
        The LLM's embedding width.
    output_norm : float, optional
        The initial value of the normalisation's learned gain (the RMS of
        every output embedding at the start); None: no normalisation.

    Example
    -------
    >>> proj = Projector(4, output_norm=2.0)
    >>> out, lens = proj._finish(torch.full((1, 3, 4), 10.0), torch.tensor([2]))
    >>> out[0, :, 0].detach(), lens
    (tensor([2., 2., 0.]), tensor([0.6667]))
    """

    def __init__(self, output_dim: int, output_norm: Optional[float] = None):
        super().__init__()
        self.output_norm = None
        if output_norm is not None:
            if output_norm <= 0:
                raise ValueError(f"output_norm must be > 0 or None, got {output_norm}")
            self.output_norm = nn.RMSNorm(output_dim, eps=1e-6)
            nn.init.constant_(self.output_norm.weight, output_norm)

    def _finish(
        self, out: torch.Tensor, out_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalises ``out`` (if asked), zeroes each example past its
        absolute length ``out_lens`` and gives the relative lengths."""
        if self.output_norm is not None:
            out = self.output_norm(out)
        return zero_padding(out, out_lens), to_relative(out_lens, out.shape[1])


class FrameStackProjector(Projector):
    """Concatenates ``stack`` consecutive frames, then a two-layer MLP.

    Arguments
    ---------
    input_dim, output_dim : int
        Channels in, and the LLM's embedding width.
    stack : int
        Frames per output step (the SpeechBrain SpeechLLM recipe uses 5).
    hidden_dim : int, optional
        MLP width (default ``output_dim``).
    output_norm : float, optional
        See :class:`Projector`.

    Example
    -------
    >>> proj = FrameStackProjector(8, 16, stack=5)
    >>> y, lens = proj(torch.randn(2, 12, 8), torch.tensor([1.0, 0.5]))
    >>> y.shape, lens
    (torch.Size([2, 3, 16]), tensor([1.0000, 0.6667]))
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        stack: int = 5,
        hidden_dim: Optional[int] = None,
        output_norm: Optional[float] = None,
    ):
        super().__init__(output_dim, output_norm)
        self.stack = stack
        self.mlp = _mlp(input_dim * stack, hidden_dim or output_dim, output_dim)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Stacks and projects."""
        batch, frames, dim = feats.shape
        valid = to_absolute(lens, frames).to(feats.device)
        steps = math.ceil(frames / self.stack)
        feats = nn.functional.pad(
            zero_padding(feats, valid), (0, 0, 0, steps * self.stack - frames)
        )
        out_lens = -torch.div(-valid, self.stack, rounding_mode="floor")
        return self._finish(self.mlp(feats.reshape(batch, steps, self.stack * dim)), out_lens)


class SequenceCNNProjector(Projector):
    """Strided 1-D convolutions then a linear layer (MoWE's sequence CNN).

    ``downsample`` is split into prime strides, one convolution each (kernel
    ``2 * stride - 1``), so ``L`` frames become exactly ``ceil(L / downsample)``.

    Arguments
    ---------
    input_dim, output_dim : int
        Channels in, and the LLM's embedding width.
    downsample : int
        Time reduction (8 in MoWE).
    hidden_dim : int, optional
        Convolution channels (default ``output_dim``).
    output_norm : float, optional
        See :class:`Projector`.

    Example
    -------
    >>> proj = SequenceCNNProjector(8, 16, downsample=8)
    >>> y, lens = proj(torch.randn(2, 20, 8), torch.tensor([1.0, 0.45]))
    >>> y.shape, lens
    (torch.Size([2, 3, 16]), tensor([1.0000, 0.6667]))
    >>> proj = SequenceCNNProjector(8, 16, downsample=8, output_norm=0.5)
    >>> y, lens = proj(torch.randn(2, 20, 8) * 100, torch.tensor([1.0, 0.45]))
    >>> y.detach().pow(2).mean(-1).sqrt()  # each embedding's RMS (0 past the end)
    tensor([[0.5000, 0.5000, 0.5000],
            [0.5000, 0.5000, 0.0000]])
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        downsample: int = 8,
        hidden_dim: Optional[int] = None,
        output_norm: Optional[float] = None,
    ):
        super().__init__(output_dim, output_norm)
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        strides = _prime_factors(downsample) or [1]
        hidden_dim = hidden_dim or output_dim
        self.convs = MaskedConvStack(
            input_dim, [hidden_dim] * len(strides), [2 * s - 1 for s in strides], strides
        )
        self.out = nn.Linear(hidden_dim, output_dim)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Convolves and projects."""
        valid = to_absolute(lens, feats.shape[1]).to(feats.device)
        out, out_lens = self.convs(feats, valid)
        return self._finish(self.out(out), out_lens)


class WindowQFormerProjector(Projector):
    """SALMONN's window-level Q-Former.

    Frames are cut into windows of ``window`` frames (17 frames, about
    0.33 s, at Whisper's 50 Hz); ``num_queries`` learned queries attend to
    each window through ``num_layers`` transformer decoder layers (self
    attention among queries, cross attention to the window, padded frames
    masked); each query becomes one output step.

    Arguments
    ---------
    input_dim : int
        Channels in.
    output_dim : int
        LLM embedding width.
    window : int
        Frames per window.
    num_queries : int
        Queries (output steps) per window.
    num_layers : int
        Q-Former layers.
    hidden_dim : int
        Q-Former width.
    num_heads : int
        Attention heads.
    output_norm : float, optional
        See :class:`Projector`.

    Example
    -------
    >>> proj = WindowQFormerProjector(8, 16, window=17, hidden_dim=32, num_heads=4)
    >>> y, lens = proj(torch.randn(2, 40, 8), torch.tensor([1.0, 0.5]))
    >>> y.shape, lens
    (torch.Size([2, 3, 16]), tensor([1.0000, 0.6667]))
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        window: int = 17,
        num_queries: int = 1,
        num_layers: int = 2,
        hidden_dim: int = 768,
        num_heads: int = 12,
        output_norm: Optional[float] = None,
    ):
        super().__init__(output_dim, output_norm)
        self.window = window
        self.num_queries = num_queries
        self.input = nn.Linear(input_dim, hidden_dim)
        self.queries = nn.Parameter(torch.randn(num_queries, hidden_dim) * 0.02)
        layer = nn.TransformerDecoderLayer(
            hidden_dim, num_heads, 4 * hidden_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.qformer = nn.TransformerDecoder(layer, num_layers)
        self.out = nn.Linear(hidden_dim, output_dim)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Queries every window of every example at once."""
        batch, frames, _ = feats.shape
        valid = to_absolute(lens, frames).to(feats.device)
        windows = math.ceil(frames / self.window)
        padded = windows * self.window
        memory = nn.functional.pad(self.input(feats), (0, 0, 0, padded - frames))
        memory = memory.reshape(batch * windows, self.window, -1)
        keys = length_mask(valid, padded).reshape(batch * windows, self.window)
        # Windows wholly past the end would attend to nothing: let them see
        # their (discarded) frames rather than produce NaNs.
        keys = keys | ~keys.any(-1, keepdim=True)
        queries = self.queries.unsqueeze(0).expand(batch * windows, -1, -1)
        out = self.qformer(queries, memory, memory_key_padding_mask=~keys)
        out = self.out(out).reshape(batch, windows * self.num_queries, -1)
        out_lens = -torch.div(-valid, self.window, rounding_mode="floor") * self.num_queries
        return self._finish(out, out_lens)
