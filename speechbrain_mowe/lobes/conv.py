"""Strided 1-D convolutions that respect padding.

Shape legend: ``b`` batch, ``t`` time, ``d`` channels.
"""

from typing import Sequence, Tuple

import torch
from torch import nn

from speechbrain_mowe.lobes.sequence import length_mask, zero_padding


class MaskedConvStack(nn.Module):
    """Conv1d layers with GELU whose inputs are zeroed past each length.

    Zeroing before every layer makes an example's output the same whether it
    is encoded alone or padded inside a batch: the kernels only ever see the
    zeros a lone example would see at its edge. Each layer uses padding
    ``kernel // 2``, so a stride-``s`` layer maps ``L`` frames to
    ``(L + 2 * (kernel // 2) - kernel) // s + 1``.

    Arguments
    ---------
    input_dim : int
        Input channels.
    channels : sequence of int
        Output channels of each layer.
    kernel_sizes : sequence of int
        Kernel size of each layer (odd).
    strides : sequence of int
        Stride of each layer.
    activate_last : bool
        Apply GELU after the last layer too.

    Example
    -------
    >>> stack = MaskedConvStack(8, [16, 16], [3, 3], [2, 2])
    >>> y, lens = stack(torch.randn(2, 10, 8), torch.tensor([10, 5]))
    >>> y.shape, lens
    (torch.Size([2, 3, 16]), tensor([3, 2]))
    """

    def __init__(
        self,
        input_dim: int,
        channels: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        activate_last: bool = True,
    ):
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(strides):
            raise ValueError(
                "channels, kernel_sizes and strides need one entry per layer, got "
                f"{len(channels)}, {len(kernel_sizes)} and {len(strides)}"
            )
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {list(kernel_sizes)}")
        dims = [input_dim, *channels]
        self.layers = nn.ModuleList(
            nn.Conv1d(d_in, d_out, k, stride=s, padding=k // 2)
            for d_in, d_out, k, s in zip(dims[:-1], dims[1:], kernel_sizes, strides)
        )
        self.activate_last = activate_last
        self.output_dim = dims[-1]

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Maps ``x [b, t, d]`` with ``lens`` valid frames to ``(y [b, t', d'], lens')``."""
        x = x.transpose(1, 2)
        for i, conv in enumerate(self.layers):
            x = conv(x * length_mask(lens, x.shape[-1]).unsqueeze(1).to(x.dtype))
            lens = self._output_lengths(conv, lens)
            if i < len(self.layers) - 1 or self.activate_last:
                x = nn.functional.gelu(x)
        return zero_padding(x.transpose(1, 2), lens), lens

    @staticmethod
    def _output_lengths(conv: nn.Conv1d, lens: torch.Tensor) -> torch.Tensor:
        """Valid output frames of one convolution."""
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        return (torch.div(lens + 2 * p - k, s, rounding_mode="floor") + 1).clamp(min=0)
