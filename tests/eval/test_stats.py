"""mean_ci against hand computations and Student's t quantiles from tables."""

import dataclasses
import math

import pytest

from seam_lightning.eval.stats import MeanCI, mean_ci

T_975_3 = 3.182446305284263  # Student's t, 3 degrees of freedom, 97.5% quantile (tables)
T_995_4 = 4.604094871415897  # Student's t, 4 degrees of freedom, 99.5% quantile (tables)


def test_t_interval_by_hand():
    ci = mean_ci([1, 2, 3, 4])
    sd = math.sqrt(((1.5 ** 2) * 2 + (0.5 ** 2) * 2) / 3)  # sample sd, ddof 1
    half = T_975_3 * sd / 2  # sd / sqrt(4)
    assert ci.mean == 2.5 and ci.n == 4 and ci.confidence == 0.95
    assert ci.low == pytest.approx(2.5 - half, rel=1e-9) and ci.high == pytest.approx(2.5 + half, rel=1e-9)
    assert ci.high - ci.low == pytest.approx(2 * 2.0542603, abs=1e-6)


def test_other_confidence_is_wider_or_narrower():
    values = [0.1, 0.4, 0.35, 0.8, 0.5]
    narrow, wide = mean_ci(values, 0.8), mean_ci(values, 0.99)
    assert narrow.mean == wide.mean
    assert wide.low < narrow.low < narrow.mean < narrow.high < wide.high


def test_99_percent_interval_by_hand():
    values = [0.1, 0.4, 0.35, 0.8, 0.5]
    ci = mean_ci(values, 0.99)
    mean = 2.15 / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = T_995_4 * sd / math.sqrt(5)
    assert ci.mean == pytest.approx(mean, rel=1e-12) and ci.n == 5 and ci.confidence == 0.99
    assert (ci.low, ci.high) == pytest.approx((mean - half, mean + half), rel=1e-9)


def test_degenerate_cases():
    assert mean_ci([7.5]) == MeanCI(7.5, 7.5, 7.5, 1)
    assert mean_ci([3, 3, 3]) == MeanCI(3.0, 3.0, 3.0, 3)  # no spread: no NaN from a zero scale
    assert mean_ci([0.1, 0.1], 0.9) == MeanCI(0.1, 0.1, 0.1, 2, 0.9)
    assert mean_ci(iter([1.0, 3.0])).mean == 2.0  # any iterable


@pytest.mark.parametrize("values, confidence, message", [
    ([], 0.95, "at least one value"),
    ([1.0, None], 0.95, "value 1 is None"),
    ([1.0, float("nan")], 0.95, "finite"),
    ([float("inf")], 0.95, "finite"),
    ([True, 2.0], 0.95, "value 0 is True"),
    ([1.0], 1.0, "confidence"),
    ([1.0], 0.0, "confidence"),
])
def test_bad_input(values, confidence, message):
    with pytest.raises(ValueError, match=message):
        mean_ci(values, confidence)


def test_result_is_frozen_and_serialisable():
    ci = mean_ci([1, 2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.mean = 0.0
    assert ci.to_dict() == {"mean": 1.5, "low": ci.low, "high": ci.high, "n": 2, "confidence": 0.95}
    assert "n=2" in ci.describe() and "95% CI" in ci.describe()
