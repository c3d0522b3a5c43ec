"""Seeds and random-number-generator state.

``mix_seed`` derives independent per-item seeds (a prompt's sampling stream, a
scoring shard) from several integers; ``counter_bits`` turns a batch of such seeds
into random bits with tensor operations alone (a counter-based generator: no state,
no Python loop over rows); the state helpers put every RNG in checkpoints, so a
resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: 2^64 / golden ratio


def capture_rng_state() -> dict[str, Any]:
    """The torch, Python, NumPy (and CUDA) random states, in a form checkpoints load with weights_only."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    # Plain lists, not arrays, so checkpoints load with torch.load(weights_only=True).
    numpy_state = [kind, keys.tolist(), position, has_gauss, gauss]
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the random states saved by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (splitmix64-style mixing; no Python ``hash``)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value = (value ^ (value >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return value >> 1


# -- counter-based random bits on tensors ---------------------------------------------------------
# torch has no usable uint64 arithmetic, so 64-bit words live in int64 tensors: addition and
# multiplication wrap modulo 2^64 exactly as unsigned ones do (two's complement), and the one
# operation that differs, the right shift (arithmetic on int64), is made logical by masking.


def as_int64(value: int) -> int:
    """The signed 64-bit integer with the same bits as ``value`` mod 2^64."""
    value &= MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 words (torch's ``>>`` copies the sign bit; clear those copies)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: Tensor) -> Tensor:
    """splitmix64's finaliser, elementwise on int64 words (a bijection of 64-bit words)."""
    x = (x ^ _shift_right(x, 30)) * as_int64(0xBF58476D1CE4E5B9)
    x = (x ^ _shift_right(x, 27)) * as_int64(0x94D049BB133111EB)
    return x ^ _shift_right(x, 31)


def counter_bits(seeds: Tensor, step: int, n: int) -> Tensor:
    """64 random bits per (row, i): int64 [B, n] from per-row ``seeds`` [B] (int64) and a ``step``.

    Row b's words are outputs 1..n of splitmix64 started at the key
    mix64(seeds[b] ^ mix_seed(step)): a pure function of (seed, step, i), so a row's bits do not
    depend on the other rows, their number or the device, and the whole batch is a few
    elementwise operations. splitmix64's output passes BigCrush; distinct (seed, step)
    keys collide with probability 2^-64.
    """
    keys = mix64(seeds.to(torch.int64) ^ mix_seed(step))
    offsets = torch.arange(1, n + 1, dtype=torch.int64, device=seeds.device) * as_int64(GOLDEN)
    return mix64(keys.unsqueeze(-1) + offsets)
