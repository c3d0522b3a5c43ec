"""A shuffling sampler whose order is a function of (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from torch.utils.data import DistributedSampler


class EpochShuffleSampler(DistributedSampler):
    """``DistributedSampler`` over indices 0..n−1 (shuffled, padded), plus a skip for a resumed epoch.

    The order is ``DistributedSampler``'s: ``randperm(n)`` from a generator seeded with
    ``seed + epoch``. Unlike a ``RandomSampler``, it draws nothing from the global
    random stream, so model-side randomness (dropout, sampling responses) is the same
    whether or not a run was interrupted. Lightning calls :meth:`set_epoch` each
    epoch, and uses the sampler as is under DDP.

    With ``num_replicas`` ranks, rank ``r`` takes positions r, r + n_ranks, … of the
    permutation (padded by repeating its start so every rank runs the same number of
    batches). Batch k of every rank together is then exactly batch k of a single
    process whose batch is ``num_replicas`` times larger.

    What this class adds is :meth:`skip`: it drops the first indices of this rank's
    next pass, those a run interrupted in the middle of an epoch had already consumed.
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        # A range is all DistributedSampler needs of a data set: its length.
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._skip = 0

    def skip(self, count: int) -> None:
        """Start this rank's next pass after its first ``count`` indices (consumed before a restart)."""
        self._skip = max(0, count)

    def __iter__(self) -> Iterator[int]:
        # The skip applies to one pass only: the pass after it is complete again.
        skip, self._skip = self._skip, 0
        return itertools.islice(super().__iter__(), skip, None)
