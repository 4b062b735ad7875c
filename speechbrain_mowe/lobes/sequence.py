"""Length bookkeeping for padded batches.

SpeechBrain passes lengths as fractions of the padded length (``wav_lens`` in
``(0, 1]``); inside the lobes we work with absolute counts. Every helper here
is vectorised over the batch: no Python loop runs over examples.

Shape legend: ``b`` batch, ``t`` time, ``d`` channels.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from speechbrain.dataio.dataio import length_to_mask


def to_absolute(rel_lens: Optional[torch.Tensor], max_len: int, batch: int = 1) -> torch.Tensor:
    """Converts SpeechBrain relative lengths to absolute counts.

    Arguments
    ---------
    rel_lens : torch.Tensor or None
        Relative lengths ``[b]`` in ``(0, 1]``; None means every row is full.
    max_len : int
        The padded length.
    batch : int
        Batch size, used when ``rel_lens`` is None.

    Returns
    -------
    torch.Tensor
        Absolute lengths ``[b]`` (int64).

    Example
    -------
    >>> to_absolute(torch.tensor([1.0, 0.5]), 10)
    tensor([10,  5])
    """
    if rel_lens is None:
        return torch.full((batch,), max_len, dtype=torch.long)
    return torch.round(rel_lens.float() * max_len).long().clamp(0, max_len)


def to_relative(abs_lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """Converts absolute lengths to SpeechBrain relative lengths.

    Example
    -------
    >>> to_relative(torch.tensor([4, 2]), 4)
    tensor([1.0000, 0.5000])
    """
    return abs_lens.float() / max(int(max_len), 1)


def length_mask(abs_lens: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """Boolean mask ``[b, t]``, True on valid positions.

    Example
    -------
    >>> length_mask(torch.tensor([2, 3]), 3)
    tensor([[ True,  True, False],
            [ True,  True,  True]])
    """
    if max_len is None:
        max_len = int(abs_lens.max())
    return length_to_mask(abs_lens, max_len, dtype=torch.bool, device=abs_lens.device)


def zero_padding(feats: torch.Tensor, abs_lens: torch.Tensor) -> torch.Tensor:
    """Sets frames past each length to zero (``feats`` is ``[b, t, ...]``).

    Example
    -------
    >>> zero_padding(torch.ones(2, 3, 1), torch.tensor([1, 3])).squeeze(-1)
    tensor([[1., 0., 0.],
            [1., 1., 1.]])
    """
    mask = length_mask(abs_lens.to(feats.device), feats.shape[1])
    return feats * mask.view(*mask.shape, *([1] * (feats.dim() - 2))).to(feats.dtype)


def masked_mean(feats: torch.Tensor, abs_lens: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of ``feats [b, t, d]`` -> ``[b, d]``.

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean(x, torch.tensor([2]))
    tensor([[2.]])
    """
    total = zero_padding(feats, abs_lens).sum(dim=1)
    return total / abs_lens.clamp(min=1).unsqueeze(1).to(feats.dtype)


def align_frames(
    feats: torch.Tensor, src_lens: torch.Tensor, tgt_lens: torch.Tensor, tgt_max: int
) -> torch.Tensor:
    """Resamples each sequence in time to its target length by linear interpolation.

    Only valid source frames are read (padding never leaks into the result),
    and frames past each target length are zero, so an example gives the same
    output whatever else is in the batch.

    Arguments
    ---------
    feats : torch.Tensor
        Source features ``[b, t_src, d]``.
    src_lens : torch.Tensor
        Valid source frames per example ``[b]``.
    tgt_lens : torch.Tensor
        Wanted frames per example ``[b]``.
    tgt_max : int
        Padded target length.

    Returns
    -------
    torch.Tensor
        ``[b, tgt_max, d]``.

    Example
    -------
    >>> x = torch.tensor([[[0.0], [2.0], [9.0]]])
    >>> align_frames(x, torch.tensor([2]), torch.tensor([4]), 5).squeeze(-1)
    tensor([[0.0000, 0.5000, 1.5000, 2.0000, 0.0000]])
    """
    device = feats.device
    src_lens = src_lens.to(device).clamp(min=1)
    tgt_lens = tgt_lens.to(device)
    steps = torch.arange(tgt_max, device=device, dtype=torch.float64)
    scale = src_lens.double() / tgt_lens.clamp(min=1).double()
    pos = ((steps.unsqueeze(0) + 0.5) * scale.unsqueeze(1) - 0.5).clamp(min=0.0)
    last = (src_lens - 1).unsqueeze(1)
    lo = pos.floor().long().clamp(max=last)
    hi = (lo + 1).clamp(max=last)
    frac = (pos - lo.double()).clamp(0.0, 1.0).to(feats.dtype).unsqueeze(-1)
    index = lambda i: i.unsqueeze(-1).expand(-1, -1, feats.shape[-1])  # noqa: E731
    out = feats.gather(1, index(lo)) * (1 - frac) + feats.gather(1, index(hi)) * frac
    return zero_padding(out, tgt_lens)


def splice(
    segments: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    left_pad: bool = False,
    fill: float = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
    """Concatenates variable-length segments example by example.

    Example ``i`` of the output is ``seg_0[i, :len_0[i]] + seg_1[i, :len_1[i]]
    + ...``, padded on the right (training) or on the left (generation).
    One scatter per segment; no loop over examples.

    Arguments
    ---------
    segments : sequence of (torch.Tensor, torch.Tensor)
        Pairs ``(x [b, t_k, ...], abs_lens [b])``; all ``x`` share dtype and
        trailing dimensions.
    left_pad : bool
        Pad on the left instead of the right.
    fill : float
        Value of padded positions.

    Returns
    -------
    out : torch.Tensor
        ``[b, t, ...]`` with ``t`` the longest total.
    mask : torch.Tensor
        Boolean ``[b, t]``, True on content.
    starts : list of torch.Tensor
        Start position of each segment per example.

    Example
    -------
    >>> a = (torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))
    >>> b = (torch.tensor([[7], [8]]), torch.tensor([1, 1]))
    >>> out, mask, _ = splice([a, b], left_pad=True, fill=-1)
    >>> out
    tensor([[ 1,  2,  7],
            [-1,  3,  8]])
    """
    first = segments[0][0]
    device = first.device
    lens = [seg_lens.to(device).long() for _, seg_lens in segments]
    total = torch.stack(lens).sum(0)
    max_total = int(total.max())
    offset = (max_total - total) if left_pad else torch.zeros_like(total)
    out = first.new_full((first.shape[0], max_total, *first.shape[2:]), fill)
    starts = []
    for (x, _), seg_lens in zip(segments, lens):
        starts.append(offset)
        rows, cols = length_mask(seg_lens, x.shape[1]).nonzero(as_tuple=True)
        out[rows, offset[rows] + cols] = x[rows, cols]
        offset = offset + seg_lens
    steps = torch.arange(max_total, device=device).unsqueeze(0)
    mask = (steps >= starts[0].unsqueeze(1)) & (steps < offset.unsqueeze(1))
    return out, mask, starts
