"""Seeded multi-task mixing and duration-bounded batching.

:class:`WeightedMixtureSampler` draws examples from several sources
(manifests) in fixed proportions; :class:`DurationBatchSampler` groups any
sampler's indices into batches of similar duration under a padded-seconds
budget. Together::

    dataset, groups = load_manifests(manifests, data_roots)
    mixture = WeightedMixtureSampler(groups, {"asr": 0.4, "ast": 0.3, "er": 0.1, "aac": 0.2})
    batches = DurationBatchSampler(mixture, durations(dataset), max_batch_duration=200)
    loader = SaveableDataLoader(dataset, batch_sampler=batches, collate_fn=AudioBatch)

SpeechBrain's ``DynamicBatchSampler`` cannot do this: it draws its own
permutation of the whole dataset every epoch, so it can neither over- nor
under-sample a source.

Both samplers are pure functions of ``(seed, epoch)``: nothing else is kept
between epochs, so a run resumes by restoring the epoch and skipping the
batches already consumed, which is what SpeechBrain's ``SaveableDataLoader``
does after a mid-epoch checkpoint, and every DDP rank computes the same plan.
Call ``set_epoch(epoch)`` before each epoch: SpeechBrain's ``Brain`` does so for
the sampler it holds as ``train_sampler``; without it every epoch repeats the
first one.
"""

from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class WeightedMixtureSampler(Sampler):
    """Draws dataset indices from several groups in fixed proportions.

    Each epoch has ``num_samples`` draws, split between the groups by the
    weights (rounded by largest remainder, so the proportions are exact to one
    draw) and interleaved in a seeded random order. Inside a group, examples
    come from a seeded permutation that continues across epochs and is
    reshuffled when used up: a down-weighted group shows a different part of
    its data each epoch, and an up-weighted one repeats its data evenly.

    Arguments
    ---------
    groups : mapping
        Group name -> dataset indices of its examples.
    weights : mapping
        Group name -> non-negative weight (normalised here). Every group needs one.
    num_samples : int, optional
        Draws per epoch (default: the total number of examples).
    seed : int
        Fixes every draw, together with the epoch.
    epoch : int, optional
        Epoch to start at (default: ``first_epoch``); see :meth:`set_epoch`.
    first_epoch : int
        Number of the first epoch: 1 as SpeechBrain's ``EpochCounter`` counts,
        0 for loops that count from 0. Epoch ``first_epoch`` starts each
        group's stream at its beginning.

    Example
    -------
    >>> sampler = WeightedMixtureSampler({"a": [0, 1, 2], "b": [3, 4]}, {"a": 1, "b": 3},
    ...                                  num_samples=8, seed=1)
    >>> draws = list(sampler)
    >>> sum(i >= 3 for i in draws), len(draws)
    (6, 8)
    >>> draws == list(WeightedMixtureSampler({"a": [0, 1, 2], "b": [3, 4]},
    ...                                      {"a": 1, "b": 3}, num_samples=8, seed=1))
    True
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[int]],
        weights: Mapping[str, float],
        num_samples: Optional[int] = None,
        seed: int = 0,
        epoch: Optional[int] = None,
        first_epoch: int = 1,
    ):
        unknown = sorted(set(weights) - set(groups))
        unweighted = sorted(set(groups) - set(weights))
        if unknown or unweighted:
            raise KeyError(
                f"Weights and groups must name the same sources: no group for {unknown}, "
                f"no weight for {unweighted}"
            )
        self.names = list(groups)
        self.groups = [np.asarray(groups[name], dtype=np.int64) for name in self.names]
        weight = np.array([float(weights[name]) for name in self.names])
        if (weight < 0).any() or not np.isfinite(weight).all() or weight.sum() <= 0:
            raise ValueError(f"Weights must be finite, >= 0 and not all 0: {dict(weights)}")
        empty = [n for n, g, w in zip(self.names, self.groups, weight) if w > 0 and len(g) == 0]
        if empty:
            raise ValueError(f"Groups {empty} have a positive weight but no examples")
        self.weights = weight / weight.sum()
        self.num_samples = int(
            sum(len(g) for g in self.groups) if num_samples is None else num_samples
        )
        self.seed = seed
        self.first_epoch = first_epoch
        self.counts = _largest_remainder(self.weights, self.num_samples)
        self.set_epoch(first_epoch if epoch is None else epoch)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose draws the next iteration yields."""
        if epoch < self.first_epoch:
            raise ValueError(f"Epoch {epoch} comes before the first epoch {self.first_epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        order = np.repeat(np.arange(len(self.groups)), self.counts)
        np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        draws = np.empty(self.num_samples, dtype=np.int64)
        for g, count in enumerate(self.counts):
            start = (self.epoch - self.first_epoch) * count
            draws[order == g] = self._group_draws(g, start, count)
        return iter(draws.tolist())

    def _group_draws(self, g: int, start: int, count: int) -> np.ndarray:
        """Positions ``start .. start+count`` of group ``g``'s endless stream of
        permutations (permutation ``k`` seeded by ``(seed, g, k)``)."""
        size = len(self.groups[g])
        if count == 0:
            return np.empty(0, dtype=np.int64)
        positions = np.arange(start, start + count)
        out = np.empty(count, dtype=np.int64)
        for k in np.unique(positions // size):
            in_k = positions // size == k
            perm = np.random.default_rng([self.seed, g, int(k)]).permutation(size)
            out[in_k] = self.groups[g][perm[positions[in_k] % size]]
        return out


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    exact = weights * total
    counts = np.floor(exact).astype(np.int64)
    short = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


class DurationBatchSampler(Sampler):
    """Batches of similar duration whose padded length fits a budget.

    Indices are read from ``sampler`` in windows of ``buffer_size``; each
    window is sorted by duration and cut into batches whose padded duration
    (batch size x longest example) stays within ``max_batch_duration``; the
    batches of a window are then shuffled. An example longer than the budget
    gets a batch of its own; none is dropped.

    Under DDP it shards itself: every rank computes the same plan and takes
    every ``num_replicas``-th batch, the plan padded (by repeating its first
    batches) so all ranks get the same number of batches, which no rank could
    otherwise know in advance since it changes with the epoch. Do not wrap it
    in SpeechBrain's ``DistributedSamplerWrapper``, whose length is fixed when
    it is built.

    Arguments
    ---------
    sampler : Sampler or sequence of int
        Where the indices come from, e.g. a :class:`WeightedMixtureSampler`,
        a ``RandomSampler`` or ``range(len(dataset))`` for evaluation.
    durations : sequence of float
        Duration of every dataset index (see :func:`durations`).
    max_batch_duration : float
        Padded seconds per batch.
    max_batch_size : int, optional
        At most this many examples per batch.
    buffer_size : int, optional
        Indices sorted together (default: all of them).
    shuffle : bool
        Shuffle the batches of each window (else they come shortest first).
    seed : int
        Fixes the batch order, together with the epoch.
    epoch : int
        Epoch to start at; see :meth:`set_epoch`.
    num_replicas, rank : int, optional
        DDP world size and this process's rank (default: from
        ``torch.distributed`` when it is initialised, else 1 and 0).

    Example
    -------
    >>> durs = [1.0, 4.0, 1.5, 3.5, 2.0, 9.0]
    >>> batches = DurationBatchSampler(range(6), durs, max_batch_duration=8.0, shuffle=False)
    >>> list(batches)
    [[0, 2, 4], [3, 1], [5]]
    """

    def __init__(
        self,
        sampler,
        durations: Sequence[float],
        max_batch_duration: float,
        max_batch_size: Optional[int] = None,
        buffer_size: Optional[int] = None,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 1,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        if max_batch_duration <= 0:
            raise ValueError(f"max_batch_duration must be positive, got {max_batch_duration}")
        self.sampler = sampler
        self.durations = np.asarray(durations, dtype=np.float64)
        self.max_batch_duration = max_batch_duration
        self.max_batch_size = max_batch_size
        self.buffer_size = buffer_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if distributed else 1
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_replicas = num_replicas
        self.rank = rank
        self._plan: Dict[int, List[List[int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (passed on to the inner sampler)."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._batches())

    def _batches(self) -> List[List[int]]:
        if self.epoch not in self._plan:
            self._plan = {self.epoch: self._shard(self._make_batches())}
        return self._plan[self.epoch]

    def _shard(self, batches: List[List[int]]) -> List[List[int]]:
        if self.num_replicas == 1:
            return batches
        total = -(-len(batches) // self.num_replicas) * self.num_replicas
        padded = [batches[i % len(batches)] for i in range(total)]
        return padded[self.rank :: self.num_replicas]

    def _make_batches(self) -> List[List[int]]:
        indices = np.fromiter(iter(self.sampler), dtype=np.int64)
        window = self.buffer_size or max(len(indices), 1)
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for start in range(0, len(indices), window):
            chunk = indices[start : start + window]
            chunk = chunk[np.argsort(self.durations[chunk], kind="stable")]
            packed = self._pack(chunk)
            if self.shuffle:
                packed = [packed[i] for i in rng.permutation(len(packed))]
            batches.extend(packed)
        return batches

    def _pack(self, sorted_indices: np.ndarray) -> List[List[int]]:
        batches, current = [], []
        for index in sorted_indices.tolist():
            longest = self.durations[index]  # sorted: the newcomer is the longest
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (full or (len(current) + 1) * longest > self.max_batch_duration):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches


def durations(dataset) -> List[float]:
    """The ``duration`` of every example of a ``DynamicItemDataset``, by index."""
    return [float(dataset.data[utt_id]["duration"]) for utt_id in dataset.data_ids]
