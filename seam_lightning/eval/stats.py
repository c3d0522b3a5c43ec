"""A mean with its confidence interval, for reporting evaluation scores."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable

from scipy.stats import t


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


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` ± t·s/√n: Student's t interval (s: sample standard deviation, ddof 1).

    One value, or values all equal, give the degenerate interval [mean, mean]. Missing
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
    sd = statistics.stdev(data)
    if sd == 0.0:  # scipy's t has no scale-0 form (it returns NaN); the interval is the point
        return MeanCI(mean, mean, mean, n, confidence)
    low, high = t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return MeanCI(mean, float(low), float(high), n, confidence)
