"""A mean with its confidence interval, for reporting evaluation scores."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable


@dataclass(frozen=True)
class MeanCI:
    """A sample mean and its two-sided confidence interval [low, high] over n values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def describe(self, digits: int = 3) -> str:
        pct = f"{100 * self.confidence:g}%"
        return f"{self.mean:.{digits}f} ({pct} CI {self.low:.{digits}f} to {self.high:.{digits}f}, n={self.n})"


def critical_value(confidence: float, dof: int) -> float:
    """Two-sided critical value: Student's t with ``dof`` degrees of freedom (scipy), else the normal one."""
    q = (1.0 + confidence) / 2.0
    try:
        from scipy.stats import t
    except ImportError:
        # Without scipy the normal quantile: a little narrower than t for small samples.
        return statistics.NormalDist().inv_cdf(q)
    return float(t.ppf(q, dof))


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` ± t·s/√n (s: sample standard deviation, ddof 1).

    The interval is Student's t interval when scipy is installed, else the normal
    approximation. One value gives the degenerate interval [mean, mean]. Missing
    values (None) must be dropped by the caller: they would say nothing here.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    data = []
    for i, v in enumerate(values):
        if v is None or isinstance(v, bool):
            raise ValueError(f"value {i} is {v!r}; drop missing values before calling mean_ci")
        x = float(v)
        if not math.isfinite(x):
            raise ValueError(f"value {i} is {x}; mean_ci needs finite values")
        data.append(x)
    if not data:
        raise ValueError("mean_ci needs at least one value, got none")
    n = len(data)
    mean = math.fsum(data) / n
    if n == 1:
        return MeanCI(mean, mean, mean, 1, confidence)
    half = critical_value(confidence, n - 1) * statistics.stdev(data) / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, confidence)
