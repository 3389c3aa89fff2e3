"""Length-grouped training batches: the plain sampler's coverage and batch sizes, far less padding, exact resume."""

import pytest
import torch
from torch.utils.data import DistributedSampler

from opdf_ray.batches import LengthGroupedBatches


def lengths(n=1003, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(3, 60, (n,), generator=g)).tolist()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_workers_cover_the_data_like_the_plain_sampler_with_the_same_batch_sizes(world):
    lens, b = lengths(), 16
    seen = []
    for rank in range(world):
        grouped = LengthGroupedBatches(lens, b, world, rank, seed=7)
        plain = DistributedSampler(range(len(lens)), world, rank, shuffle=True, seed=7)
        sizes = [len(batch) for batch in grouped]
        assert len(grouped) == len(sizes) == -(-len(plain) // b)
        assert sorted(sizes, reverse=True) == [min(b, len(plain) - k * b) for k in range(len(sizes))]
        seen += [i for batch in grouped for i in batch]
    assert set(seen) == set(range(len(lens))) and len(seen) == -(-len(lens) // world) * world


def test_batches_pad_far_less_and_workers_of_a_step_hold_similar_lengths():
    lens, b = lengths(), 16
    padded = lambda batches: sum(max(lens[i] for i in batch) * len(batch) for batch in batches)   # noqa: E731
    plain = list(torch.split(torch.randperm(len(lens), generator=torch.Generator().manual_seed(7)), b))
    grouped = [list(LengthGroupedBatches(lens, b, 2, rank, seed=7)) for rank in range(2)]
    assert padded(grouped[0] + grouped[1]) < 0.6 * padded([x.tolist() for x in plain])
    for a, c in zip(*grouped):
        assert abs(max(lens[i] for i in a) - max(lens[i] for i in c)) <= 2


def test_order_is_a_function_of_seed_and_epoch_only():
    lens = lengths()
    a, c = LengthGroupedBatches(lens, 16, seed=3), LengthGroupedBatches(lens, 16, seed=3)
    a.set_epoch(2)
    c.set_epoch(2)
    first = list(a)
    assert first == list(c) == list(a)               # a resumed run re-creates the epoch's batches exactly
    c.set_epoch(3)
    assert list(c) != first
    assert sorted(i for batch in first for i in batch) == list(range(len(lens)))
