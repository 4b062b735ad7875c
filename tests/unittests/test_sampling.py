"""Weighted multi-task mixing and duration batching: proportions, determinism, resumption."""

from collections import Counter

import numpy as np
import pytest
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer

from speechbrain_mowe.dataio import DurationBatchSampler, WeightedMixtureSampler, durations

GROUPS = {
    "asr": range(0, 5000),
    "ast": range(5000, 6000),
    "er": range(6000, 6300),
    "aac": range(6300, 6500),
}
WEIGHTS = {"asr": 0.4, "ast": 0.3, "er": 0.2, "aac": 0.1}


def group_of(index):
    return next(name for name, members in GROUPS.items() if index in members)


def test_proportions_over_10000_draws_are_within_one_percent():
    draws = list(WeightedMixtureSampler(GROUPS, WEIGHTS, num_samples=10_000, seed=7))
    counts = Counter(group_of(i) for i in draws)
    for name, weight in WEIGHTS.items():
        assert abs(counts[name] / 10_000 - weight) < 0.01
    assert counts == {"asr": 4000, "ast": 3000, "er": 2000, "aac": 1000}  # largest remainder
    # the groups are interleaved, not in blocks: every 1000 draws hold every group
    for start in range(0, 10_000, 1000):
        assert {group_of(i) for i in draws[start : start + 1000]} == set(WEIGHTS)


def test_same_seed_same_draws_other_seed_or_epoch_other_draws():
    def draws(seed, epoch=1):
        sampler = WeightedMixtureSampler(GROUPS, WEIGHTS, num_samples=10_000, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert draws(7, epoch=2) != draws(7)
    assert draws(7, epoch=2) == draws(7, epoch=2)


def test_groups_are_walked_without_repeats_across_epochs():
    groups = {"big": range(0, 100), "small": range(100, 110)}
    sampler = WeightedMixtureSampler(groups, {"big": 1, "small": 1}, num_samples=40, seed=0)
    seen_big, seen_small = [], []
    for epoch in range(1, 6):  # SpeechBrain's EpochCounter counts from 1
        sampler.set_epoch(epoch)
        draws = list(sampler)
        seen_big += [i for i in draws if i < 100]
        seen_small += [i for i in draws if i >= 100]
    # 5 epochs x 20 draws cover the big group exactly once ...
    assert sorted(seen_big) == list(range(100))
    # ... and cycle through the small one 10 times, each pass a full permutation
    for k in range(10):
        assert sorted(seen_small[10 * k : 10 * (k + 1)]) == list(range(100, 110))
    # loops counting epochs from 0 say so, and get the same stream
    zero_based = WeightedMixtureSampler(
        groups, {"big": 1, "small": 1}, num_samples=40, seed=0, first_epoch=0
    )
    zero_based.set_epoch(4)
    assert list(zero_based) != draws  # other interleaving (the epoch seeds the order) ...
    assert sorted(zero_based) == sorted(draws)  # ... of the same examples
    with pytest.raises(ValueError, match="Epoch 0 comes before the first epoch 1"):
        sampler.set_epoch(0)


def test_bad_weights_are_refused_with_names():
    with pytest.raises(KeyError, match=r"no group for \['st'\], no weight for \['er'\]"):
        WeightedMixtureSampler({"asr": [0], "er": [1]}, {"asr": 1, "st": 1})
    with pytest.raises(ValueError, match="Weights must be finite"):
        WeightedMixtureSampler({"asr": [0]}, {"asr": -1})
    with pytest.raises(ValueError, match=r"Groups \['er'\] have a positive weight but no examples"):
        WeightedMixtureSampler({"asr": [0], "er": []}, {"asr": 1, "er": 1})
    zero = WeightedMixtureSampler({"asr": [0, 1], "er": []}, {"asr": 1, "er": 0}, num_samples=5)
    assert sorted(Counter(zero).values()) == [2, 3]  # a full pass, then a fresh one


def durations_for(n, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 20.0, size=n).round(2).tolist()


def test_duration_batches_respect_the_budget_and_keep_every_draw():
    durs = durations_for(6500)
    mixture = WeightedMixtureSampler(GROUPS, WEIGHTS, num_samples=4000, seed=1)
    batches = DurationBatchSampler(mixture, durs, max_batch_duration=120, buffer_size=500, seed=1)
    flat = [i for batch in batches for i in batch]
    assert Counter(flat) == Counter(mixture)  # same draws, only grouped
    for batch in batches:
        longest = max(durs[i] for i in batch)
        assert len(batch) * longest <= 120 or len(batch) == 1
    assert len(batches) == len(list(batches)) and len(batches) < len(flat)
    # mixing survives batching: proportions over all batches are the weights
    counts = Counter(group_of(i) for i in flat)
    assert counts == {"asr": 1600, "ast": 1200, "er": 800, "aac": 400}
    # batches are similar in length: padding stays a small share
    padded = sum(len(b) * max(durs[i] for i in b) for b in batches)
    assert sum(durs[i] for i in flat) / padded > 0.9


def test_duration_batches_are_deterministic_per_epoch():
    durs = durations_for(300)

    def plan(seed, epoch):
        mixture = WeightedMixtureSampler({"a": range(200), "b": range(200, 300)}, {"a": 1, "b": 1})
        batches = DurationBatchSampler(
            mixture, durs, max_batch_duration=60, buffer_size=64, seed=seed
        )
        batches.set_epoch(epoch)
        return list(batches)

    assert plan(0, 1) == plan(0, 1)
    assert plan(0, 2) != plan(0, 1)
    assert plan(1, 1) != plan(0, 1)


def test_long_examples_get_their_own_batch_and_batch_size_is_capped():
    durs = [1.0] * 10 + [50.0]
    batches = list(DurationBatchSampler(range(11), durs, 20.0, max_batch_size=4, shuffle=False))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]
    with pytest.raises(ValueError, match="max_batch_duration must be positive"):
        DurationBatchSampler(range(3), [1, 1, 1], 0)


def make_loader(dataset, seed=5):
    mixture = WeightedMixtureSampler(
        {"a": range(0, 40), "b": range(40, 60)}, {"a": 0.5, "b": 0.5}, num_samples=60, seed=seed
    )
    batches = DurationBatchSampler(mixture, durations(dataset), 20.0, buffer_size=16, seed=seed)
    batches.set_epoch(3)  # what the Brain does from its restored epoch counter
    return SaveableDataLoader(
        dataset, batch_sampler=batches, collate_fn=lambda b: [x["id"] for x in b]
    )


def test_an_interrupted_epoch_resumes_with_the_same_batches(tmp_path):
    data = {f"u{i:02d}": {"duration": d} for i, d in enumerate(durations_for(60, seed=2))}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])

    uninterrupted = list(make_loader(dataset))

    loader = make_loader(dataset)
    checkpointer = Checkpointer(tmp_path, {"loader": loader})
    consumed = []
    for step, batch in enumerate(loader):
        consumed.append(batch)
        if step == 4:
            checkpointer.save_checkpoint(end_of_epoch=False)
            break

    resumed_loader = make_loader(dataset)
    Checkpointer(tmp_path, {"loader": resumed_loader}).recover_if_possible()
    rest = list(resumed_loader)
    assert consumed + rest == uninterrupted
    assert len(consumed) == 5 and len(rest) == len(uninterrupted) - 5


def test_ddp_ranks_get_disjoint_equal_shards_every_epoch():
    durs = durations_for(300, seed=4)
    mixture = {"a": range(200), "b": range(200, 300)}

    def shards(epoch, world):
        plans = []
        for rank in range(world):
            sampler = WeightedMixtureSampler(mixture, {"a": 1, "b": 2}, seed=3)
            batches = DurationBatchSampler(
                sampler, durs, 40.0, buffer_size=50, seed=3, num_replicas=world, rank=rank
            )
            batches.set_epoch(epoch)
            plans.append(list(batches))
        return plans

    sizes = set()
    for epoch in range(1, 6):
        (whole,) = shards(epoch, 1)
        sizes.add(len(whole))
        ranks = shards(epoch, 3)
        assert len({len(plan) for plan in ranks}) == 1  # same count on every rank
        interleaved = [b for step in zip(*ranks) for b in step]
        assert interleaved[: len(whole)] == whole  # every batch once, in order ...
        assert interleaved[len(whole) :] == whole[: len(interleaved) - len(whole)]  # ... + pad
    assert len(sizes) > 1  # the number of batches does change between epochs
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        DurationBatchSampler(range(3), [1, 1, 1], 5.0, num_replicas=2, rank=2)
