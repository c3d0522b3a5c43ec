"""splitmix64 in plain Python integers: the reference the tensor (int64) implementation is checked against."""

from __future__ import annotations

from seam_lightning.seeding import mix_seed

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(x: int) -> int:
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & MASK
    return x ^ (x >> 31)


def bits(seed: int, step: int, i: int) -> int:
    """Word i (from 0) of the stream of (seed, step): output i + 1 of splitmix64 from its key."""
    key = mix64((seed & MASK) ^ mix_seed(step))
    return mix64((key + (i + 1) * GOLDEN) & MASK)


def uniform(seed: int, step: int) -> float:
    """The sampler's uniform for (seed, step): the top 53 bits of word 0, over 2^53."""
    return (bits(seed, step, 0) >> 11) / 2**53
