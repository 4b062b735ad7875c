"""What a training epoch counts: losses and routing per task, skipped work."""

from typing import Dict, List, Sequence

import torch

from speechbrain_mowe.dataio import SkippedClips
from speechbrain_mowe.training.distributed import all_reduce_sum, gather_objects


def expert_shares(experts: Sequence[str], counts: Sequence[float]) -> Dict[str, float]:
    """How often each expert was chosen, in percent of all choices.

    Example
    -------
    >>> expert_shares(["0:a", "1:b"], [3, 1])
    {'0:a': 75.0, '1:b': 25.0}
    """
    total = sum(counts)
    return {name: round(100.0 * n / total, 2) for name, n in zip(experts, counts)}


def format_shares(shares: Dict[str, float]) -> str:
    """Expert shares as one log field.

    Example
    -------
    >>> format_shares({"0:a": 75.0, "1:b": 25.0})
    '0:a 75% 1:b 25%'
    """
    return " ".join(f"{name} {share:.0f}%" for name, share in shares.items())


class EpochTally:
    """Per-task losses, routing counts, non-finite losses and skipped clips of
    one training epoch, checkpointed so that a resumed epoch logs the same.

    Arguments
    ---------
    tasks : sequence of str
        Task names, in task-id order.
    experts : sequence of str
        Names of the weak encoders.

    Example
    -------
    >>> tally = EpochTally(["asr", "er"], ["0:a", "1:b"])
    >>> tally.add(torch.tensor([0, 1, 1]), torch.tensor([2.0, 3.0, 1.0]),
    ...           torch.tensor([2, 1, 1]), torch.tensor([[0], [1], [1]]))
    >>> stats = tally.summary()
    >>> stats["loss_asr"], stats["loss_er"], stats["routing_er"]
    (1.0, 2.0, '0:a 0% 1:b 100%')
    """

    def __init__(self, tasks: Sequence[str], experts: Sequence[str]):
        self.tasks = list(tasks)
        self.experts = list(experts)
        self.skipped = SkippedClips()
        self.reset()

    def reset(self):
        """Starts a new epoch."""
        self.loss_sums = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.tokens = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.routes = torch.zeros(len(self.tasks), max(len(self.experts), 1), dtype=torch.float64)
        self.nonfinite = 0
        self.skipped.reset()

    def add(self, task_ids, loss_sums, tokens, experts=None):
        """Counts one batch: per-example summed losses and token counts, and
        the ``[b, k]`` experts chosen (None without a router)."""
        task_ids = task_ids.cpu()
        self.loss_sums.index_add_(0, task_ids, loss_sums.detach().double().cpu())
        self.tokens.index_add_(0, task_ids, tokens.double().cpu())
        if experts is not None:
            rows = task_ids[:, None].expand_as(experts).flatten()
            flat = rows * self.routes.shape[1] + experts.cpu().flatten()
            self.routes.view(-1).index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))

    def all_reduce(self):
        """Sums the tallies of every DDP rank (nothing without DDP)."""
        counts = torch.tensor([float(self.nonfinite)])
        for tensor in (self.loss_sums, self.tokens, self.routes, counts):
            all_reduce_sum(tensor)
        self.nonfinite = int(counts[0])
        parts = gather_objects(self.skipped.state_dict())
        self.skipped.reset()
        for part in parts:
            self.skipped.merge(part)

    def trained_tasks(self) -> List[str]:
        """The tasks of the epoch's answer tokens so far, in task-id order.

        Example
        -------
        >>> tally = EpochTally(["asr", "er", "aac"], [])
        >>> tally.add(torch.tensor([2, 0]), torch.tensor([1.0, 2.0]), torch.tensor([1, 2]))
        >>> tally.trained_tasks()
        ['asr', 'aac']
        """
        return [task for task, tokens in zip(self.tasks, self.tokens.tolist()) if tokens > 0]

    def summary(self) -> Dict:
        """Loss per task and the share of each expert per task, for the train log."""
        stats = {}
        for t, task in enumerate(self.tasks):
            if self.tokens[t] > 0:
                stats[f"loss_{task}"] = round(float(self.loss_sums[t] / self.tokens[t]), 6)
        for t, task in enumerate(self.tasks):
            if self.routes[t].sum() > 0 and self.experts:
                shares = expert_shares(self.experts, self.routes[t].tolist())
                stats[f"routing_{task}"] = format_shares(shares)
        if self.nonfinite:
            stats["nonfinite_losses"] = self.nonfinite
        if self.skipped.count:
            stats["skipped_clips"] = self.skipped.count
        return stats

    def state_dict(self) -> Dict:
        """For checkpoints."""
        return {
            "loss_sums": self.loss_sums,
            "tokens": self.tokens,
            "routes": self.routes,
            "nonfinite": self.nonfinite,
            "skipped": self.skipped.state_dict(),
        }

    def load_state_dict(self, state: Dict):
        """From checkpoints."""
        self.loss_sums = state["loss_sums"]
        self.tokens = state["tokens"]
        self.routes = state["routes"]
        self.nonfinite = state["nonfinite"]
        self.skipped.reset()
        self.skipped.merge(state["skipped"])
