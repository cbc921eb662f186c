"""Seeding and the resumable sampler."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lse_common import (
    ResumableBatchSampler,
    get_rng_state,
    index_uniform,
    seed_everything,
    set_rng_state,
)


def test_rng_state_round_trip():
    seed_everything(5)
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    with pytest.raises(ValueError, match="numpy"):
        set_rng_state({"python": state["python"], "torch": state["torch"]})


def test_seed_everything_per_rank_and_errors():
    seed_everything(1, rank=0)
    a = torch.rand(2)
    seed_everything(1, rank=1)
    b = torch.rand(2)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_index_uniform_depends_only_on_its_key():
    draws = index_uniform(3, 0, np.arange(1000), 4)
    assert draws.shape == (1000, 4)
    assert np.array_equal(draws[500:], index_uniform(3, 0, np.arange(500, 1000), 4))
    assert np.array_equal(draws[:, :2], index_uniform(3, 0, np.arange(1000), 2))
    assert not np.array_equal(draws, index_uniform(3, 1, np.arange(1000), 4))
    assert not np.array_equal(draws, index_uniform(4, 0, np.arange(1000), 4))
    assert draws.min() >= 0 and draws.max() < 1
    # roughly uniform and uncorrelated
    assert abs(draws.mean() - 0.5) < 0.02 and abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.1
    with pytest.raises(ValueError, match="non-negative"):
        index_uniform(0, 0, -1, 1)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sampler_shards_cover_each_epoch_and_resume(world_size):
    n, bs = 25, 4
    samplers = [
        ResumableBatchSampler(n, bs, seed=1, rank=r, world_size=world_size, drop_last=False)
        for r in range(world_size)
    ]
    seen = []
    for s in samplers:
        s.set_epoch(2)
        seen += [i for b in s for i in b]
    assert set(seen) == set(range(n))
    s = samplers[0]
    full = list(s)
    s.set_epoch(2, start_batch=2)
    assert list(s) == full[2:]
    s.set_epoch(3)
    assert list(s) != full  # a new order every epoch


def test_sampler_errors():
    with pytest.raises(ValueError, match="rank"):
        ResumableBatchSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="drop_last"):
        ResumableBatchSampler(10, 8, world_size=2)
