"""Which RL prompts to prune or augment, given one number per prompt.

SEAM as computed here is Eq. 2 of the paper, the PM–RM *discrepancy* (larger =
worse fit). The paper's "filter low-SEAM data" (§7, App. E) means low
*seamlessness*, i.e. the **largest** Eq. 2 values, so ``order="largest"`` is the
default and the paper's reading; ``order="smallest"`` takes the other end, for
the ablation that checks the reading.

The §7 baseline "LLaMa" ranks prompts by the perplexity of their golden response
under a language model and filters the highest:
:func:`seam_lightning.seam.perplexity.golden_perplexities` computes that number,
and the same :func:`select_fraction` picks the prompts.

Ties break by example id, smaller id first, in both orders, so every rank and
every rerun picks the same set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

Order = Literal["largest", "smallest"]
"""Which end of the ranking a selection takes: ``"largest"`` values (the paper's) or ``"smallest"``."""

ORDERS: tuple[str, ...] = ("largest", "smallest")


def selection_size(n: int, fraction: float) -> int:
    """How many of ``n`` prompts a ``fraction`` selects: round half up, so 20% of 7 is 1 and of 8 is 2."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return min(n, math.floor(fraction * n + 0.5))


def top_k(values: Mapping[int, float], k: int, order: Order = "largest", what: str = "score") -> list[int]:
    """Ids of the ``k`` largest (``order="largest"``) or smallest values, most extreme first; ties by smaller id.

    A NaN value is a ValueError naming its id: it compares false with everything, so
    `sorted` would place it (and its neighbours) arbitrarily. ``what`` names the values
    in that message.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be 'largest' or 'smallest', got {order!r}")
    nan = [i for i, v in values.items() if math.isnan(v)]
    if nan:
        raise ValueError(f"{what} of example id {min(nan)} is NaN ({len(nan)} NaN value(s) in all)")
    sign = -1.0 if order == "largest" else 1.0
    return sorted(values, key=lambda i: (sign * values[i], i))[:k]


def select_fraction(values: Mapping[int, float], fraction: float, order: Order = "largest",
                    what: str = "score") -> list[int]:
    """Ids of the ``fraction`` of prompts with the largest (or smallest) values; see :func:`top_k`."""
    return top_k(values, selection_size(len(values), fraction), order, what)


def largest_seam(scores: Mapping[int, float], fraction: float) -> list[int]:
    """Ids of the ``fraction`` of prompts with the largest SEAM (Eq. 2: least seamless), worst first; ties by id."""
    return select_fraction(scores, fraction, "largest", what="SEAM score")
