"""What training shares across DDP ranks: summed tallies and gathered records."""

from typing import Any, List

import torch
from speechbrain.utils.distributed import is_distributed_initialized


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sums a CPU ``tensor`` over the DDP ranks, in place (nothing without DDP);
    through the GPU when the backend is NCCL, which reduces CUDA tensors only."""
    if not is_distributed_initialized():
        return
    if torch.distributed.get_backend() == "nccl":
        on_gpu = tensor.cuda()
        torch.distributed.all_reduce(on_gpu)
        tensor.copy_(on_gpu.cpu())
    else:
        torch.distributed.all_reduce(tensor)


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without DDP).

    Example
    -------
    >>> gather_objects({"a": 1})
    [{'a': 1}]
    """
    if not is_distributed_initialized():
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered
