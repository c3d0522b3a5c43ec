"""A shuffling sampler whose order is a function of (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Indices 0..n−1 in the order of ``randperm(n)`` seeded with ``seed + epoch``.

    Unlike a ``RandomSampler``, the order draws nothing from the global random
    stream, so model-side randomness (dropout, sampling responses) is the same
    whether or not a run was interrupted. Lightning calls :meth:`set_epoch` each
    epoch; :meth:`skip` drops the first examples of the next pass, for a run resumed
    in the middle of an epoch.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, count: int) -> None:
        """Start the next pass after its first ``count`` indices (they were consumed before a restart)."""
        self._skip = max(0, count)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        skip, self._skip = self._skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.size
