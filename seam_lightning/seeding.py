"""Seeds and random-number-generator state.

``mix_seed`` derives independent per-item seeds (a prompt's sampling stream, a
scoring shard) from several integers; the state helpers put every RNG in
checkpoints, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


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
