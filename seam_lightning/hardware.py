"""What this machine's CPU can compute natively (for choices that depend on it)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (x86: AVX512-BF16 or AMX; Arm: the BF16 extension).

    Without it PyTorch emulates bf16 matmuls: on a 2-core AVX2 CPU a 2048³ matmul ran at
    0.3 GFLOP/s in bf16 against 54 in fp32. Read from /proc/cpuinfo; where that is
    missing (not Linux) the answer is True, so nothing changes there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "bf16"))
