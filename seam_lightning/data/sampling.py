"""A shuffling sampler whose order is a function of (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler


class EpochShuffleSampler(DistributedSampler):
    """Indices 0..n−1 in the order of ``randperm(n)`` seeded with ``seed + epoch``, sharded across ranks.

    Unlike a ``RandomSampler``, the order draws nothing from the global random
    stream, so model-side randomness (dropout, sampling responses) is the same
    whether or not a run was interrupted. Lightning calls :meth:`set_epoch` each
    epoch; :meth:`skip` drops the first examples of the next pass, for a run resumed
    in the middle of an epoch.

    With ``num_replicas`` ranks, rank ``r`` takes positions r, r + n_ranks, … of the
    permutation (padded by repeating its start, as ``DistributedSampler`` does, so
    every rank runs the same number of batches). Batch k of every rank together is
    then exactly batch k of a single process whose batch is ``num_replicas`` times
    larger. Being a ``DistributedSampler``, Lightning uses it as is under DDP.
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.size = size
        self.num_samples = math.ceil(size / num_replicas) if size else 0
        self._skip = 0

    def skip(self, count: int) -> None:
        """Start this rank's next pass after its first ``count`` indices (consumed before a restart)."""
        self._skip = max(0, count)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        padding = self.num_samples * self.num_replicas - self.size
        order += (order * math.ceil(padding / max(self.size, 1)))[:padding]
        mine = order[self.rank::self.num_replicas]
        skip, self._skip = self._skip, 0
        return iter(mine[skip:])

    def __len__(self) -> int:
        return self.num_samples
