"""The pieces of the blind-spot benchmark (scripts/exp_blind_spot.py) that hold no model: the planted region B,
the label flips, the detection metrics with bootstrap intervals, the signals computed from per-candidate numbers,
and a candidate source serving candidates already built.

Everything here is a pure function of its arguments (hashes are sha256, never Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

from seam_lightning.data.demo import MODULES
from seam_lightning.seam.sources import CandidateSource, CandidateStats


def stable_unit(text: str) -> float:
    """A number in [0, 1) that depends on ``text`` only (sha256), the same in every process."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def module_of(qualname: str) -> str:
    """The demo module an item belongs to: the longest allowlisted module its qualified name starts with."""
    best = max((m for m in MODULES if qualname == m or qualname.startswith(m + ".")), key=len, default=None)
    return best or "builtins"  # builtins' items are named without their module ("str.join")


def blind_spot_modules(share: float, seed: int) -> frozenset[str]:
    """Part B: the demo modules whose seeded hash falls below ``share`` (about share × 200 modules)."""
    return frozenset(m for m in MODULES if stable_unit(f"blind-spot:{seed}:{m}") < share)


def swapped(source: str, rho: float, seed: int) -> bool:
    """Whether the pair of item ``source`` gets chosen and rejected swapped at flip share ``rho``.

    The hash does not depend on ρ, so the pairs flipped at ρ = 0.25 are among those flipped at
    0.5, and those among ρ = 1's (all of B).
    """
    return stable_unit(f"flip:{seed}:{source}") < rho


def flip_pairs(pairs: list[dict], in_b: set[str] | frozenset[str], rho: float, seed: int) -> tuple[list[dict], int]:
    """Preference pairs with chosen/rejected swapped for a share ``rho`` of B's pairs; returns (pairs, flipped)."""
    out, flipped = [], 0
    for pair in pairs:
        if module_of(pair["source"]) in in_b and swapped(pair["source"], rho, seed):
            pair = {**pair, "chosen": pair["rejected"], "rejected": pair["chosen"], "flipped": True}
            flipped += 1
        out.append(pair)
    return out, flipped


# ---------------------------------------------------------------- detection metrics


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (Mann–Whitney, ties count one half); NaN without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_at(scores: Sequence[float], labels: Sequence[bool], fraction: float = 0.2) -> float:
    """Share of B among the ``fraction`` of prompts with the largest score (ties: the earlier prompt first)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    k = max(1, round(fraction * len(s)))
    order = np.lexsort((np.arange(len(s)), -s))  # largest score first, then by index: a stable key
    return float(y[order[:k]].mean())


def bootstrap(metric, scores: Sequence[float], labels: Sequence[bool], resamples: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> dict[str, float]:
    """``metric`` on all prompts and its percentile bootstrap interval over prompts (resampled with replacement)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(s), len(s))
        value = metric(s[idx], y[idx])
        if not math.isnan(value):
            values.append(value)
    alpha = (1 - confidence) / 2
    low, high = (np.quantile(values, [alpha, 1 - alpha]).tolist() if values else [math.nan, math.nan])
    return {"value": metric(s, y), "low": low, "high": high}


# ---------------------------------------------------------------- signals from per-candidate numbers


def seam_variants(logprob_sums: Sequence[float], lengths: Sequence[int], rewards: Sequence[float],
                  golden: float) -> dict[str, float]:
    """SEAM (Eq. 2) of one prompt and its ablations, from its candidates' PM log-prob sums, lengths and RM rewards.

    - ``seam``: Σ exp(logp/len) · max(R(r*) − R(r), 0), as :func:`seam_lightning.seam.score.seam_score`;
    - ``misjudgement_rate``: share of candidates with R(r*) > R(r) (no likelihood, no size);
    - ``weighted_count``: Σ exp(logp/len) · 1[R(r*) > R(r)] (likelihood weighting alone, no size);
    - ``excess_unweighted``: Σ max(R(r*) − R(r), 0) (misjudgement size alone, no likelihood);
    - ``no_length_norm``: Σ exp(logp) · max(R(r*) − R(r), 0) (SEAM without §5.2's length normalisation).
    A prompt without candidates gets 0 everywhere.
    """
    lp, n, r = (np.asarray(v, dtype=np.float64) for v in (logprob_sums, lengths, rewards))
    if len(r) == 0:
        return dict.fromkeys(("seam", "misjudgement_rate", "weighted_count", "excess_unweighted", "no_length_norm"), 0.0)
    excess = np.clip(r - golden, 0.0, None)
    weight = np.exp(lp / n)
    return {"seam": float((weight * excess).sum()), "misjudgement_rate": float((r > golden).mean()),
            "weighted_count": float((weight * (r > golden)).sum()), "excess_unweighted": float(excess.sum()),
            "no_length_norm": float((np.exp(lp) * excess).sum())}


# ---------------------------------------------------------------- candidates already built


class TableSource(CandidateSource):
    """Candidates already built, looked up by (instruction, golden response): e.g. the PM side's contrast
    candidates, which SEAM_Adv attacks as its seeds without building them again."""

    def __init__(self, instructions: Sequence[str], responses: Sequence[str], candidates: Sequence[Sequence[str]]):
        self.table = {(q, r): list(c) for q, r, c in zip(instructions, responses, candidates)}

    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        """The first num_candidates stored candidates of each example (none for an example not in the table)."""
        out = [self.table.get((q, r), [])[:num_candidates] for q, r in zip(instructions, responses)]
        self.last_stats = CandidateStats.of(out, num_candidates)
        return out

    def config(self) -> dict:
        return {"class": "TableSource", "table": [[q, r, c] for (q, r), c in self.table.items()]}
