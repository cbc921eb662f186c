"""A distributed batch sampler that can restart in the middle of an epoch.

The order of epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)`` alone, padded
to a multiple of the number of processes (by repeating its head, like `DistributedSampler`), dealt out
round robin (``rank::world_size``) and cut into batches. `ResumableBatchSampler.set_epoch` takes the
number of batches already done, so a resumed run sees exactly the batches the interrupted run had left.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of indices for one process of a (possibly) distributed run.

    Args:
        num_samples: the length of the data set.
        batch_size: samples per batch and process.
        shuffle: draw a new order every epoch (otherwise ``0..num_samples-1``).
        seed: seeds the order together with the epoch.
        rank: this process.
        world_size: the number of processes.
        drop_last: drop the last incomplete batch.

    Example:
        >>> s = ResumableBatchSampler(10, 3, seed=0)
        >>> s.set_epoch(0, start_batch=2)
        >>> [len(b) for b in s], len(s)
        ([3], 3)
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0
        per_rank = -(-num_samples // world_size)
        self._per_rank = per_rank
        if drop_last and per_rank < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {per_rank} samples each of the {world_size} "
                "process(es) gets, so drop_last would leave no batch"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and skip its first ``start_batch`` batches."""
        if epoch < 0 or start_batch < 0:
            raise ValueError(f"epoch and start_batch must be >= 0, got {epoch}, {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        """Batches per epoch for this process (the full epoch, skipped batches included)."""
        if self.drop_last:
            return self._per_rank // self.batch_size
        return -(-self._per_rank // self.batch_size)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self._per_rank * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._indices()
        for b in range(self.start_batch, len(self)):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]
