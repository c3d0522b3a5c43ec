"""Which RL prompts to prune or augment, given their SEAM scores.

SEAM as computed here is the PM–RM *discrepancy* (larger = worse fit), so the
prompts acted on are the ``fraction`` with the **largest** score. Ties break by
example id (smaller id first), so every rank and every rerun picks the same set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def selection_size(n: int, fraction: float) -> int:
    """How many of ``n`` prompts a ``fraction`` selects: round half up, so 20% of 7 is 1 and of 8 is 2."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return min(n, math.floor(fraction * n + 0.5))


def largest_seam(scores: Mapping[int, float], fraction: float) -> list[int]:
    """Ids of the ``fraction`` of prompts with the largest SEAM, worst first; ties by id.

    A NaN score is a ValueError naming its id: it compares false with everything, so
    `sorted` would place it (and its neighbours) arbitrarily.
    """
    nan = [i for i, s in scores.items() if math.isnan(s)]
    if nan:
        raise ValueError(f"SEAM score of example id {min(nan)} is NaN ({len(nan)} NaN score(s) in all)")
    ranked = sorted(scores, key=lambda i: (-scores[i], i))
    return ranked[: selection_size(len(ranked), fraction)]
