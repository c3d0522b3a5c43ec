"""This machine's limits, measured in the benchmark's own run: peak matmul rate and memory read bandwidth.

Both are the *best* of repeated runs, not the mean: a benchmark's fraction of peak is only
meaningful against the rate the hardware reaches when nothing else disturbs it, and a mean
over a few runs moves by 2x with the CPU's clock and whatever else is running.
"""

from __future__ import annotations

import time

import torch


def matmul_rate(dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of a square ``F.linear`` (what nn.Linear runs): the best of repeated runs for about ``seconds``.

    ``F.linear``, not ``a @ b``: in bf16 on a CPU without native bf16 the two take different
    kernels (oneDNN's reorder-to-fp32 for linear is ~8x faster than ``mm``'s fallback).
    """
    x, w = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.nn.functional.linear(x, w)  # warm-up
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


def matmul_rates(bf16: bool) -> dict[torch.dtype, float]:
    """Peak FLOP/s in fp32, and in bf16 when ``bf16`` (a 1024 GEMM: without native bf16 it is ~10x slower)."""
    rates = {torch.float32: matmul_rate(torch.float32)}
    if bf16:
        rates[torch.bfloat16] = matmul_rate(torch.bfloat16, size=1024)
    return rates


def read_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of reading a tensor far larger than the caches (its sum): the best of ``repeats``."""
    x = torch.ones(megabytes * 2**20 // 4)
    x.sum()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t))
    return best
