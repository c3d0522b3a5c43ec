"""Fuzz tests for the choices SEAM makes from numbers: which ids to prune, which similarity band to accept."""
import math

import pytest

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from seam_lightning.seam.selection import largest_seam, select_fraction, selection_size  # noqa: E402
from seam_lightning.seam.sources.contrast import ContrastSource  # noqa: E402

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200)

# Few distinct values, so that ties are common; infinities are allowed, NaN is not.
score_values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5]) | st.floats(allow_nan=False)
scores = st.dictionaries(st.integers(-50, 50), score_values, max_size=30)
fractions = st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0, 0.5, 0.2])


@FUZZ
@given(scores, fractions, st.randoms(use_true_random=False))
def test_largest_seam_picks_the_top_fraction_ties_by_id(scores, fraction, rnd):
    picked = largest_seam(scores, fraction)
    assert len(picked) == selection_size(len(scores), fraction)
    assert picked == sorted(scores, key=lambda i: (-scores[i], i))[: len(picked)]
    rest = set(scores) - set(picked)
    assert all(scores[p] >= scores[r] for p in picked for r in rest)
    shuffled = list(scores.items())
    rnd.shuffle(shuffled)
    assert largest_seam(dict(shuffled), fraction) == picked  # insertion order never matters


@FUZZ
@given(scores, fractions, st.sampled_from(["largest", "smallest"]), st.randoms(use_true_random=False))
def test_either_order_picks_its_end_ties_by_id(scores, fraction, order, rnd):
    picked = select_fraction(scores, fraction, order)
    sign = -1.0 if order == "largest" else 1.0
    assert picked == sorted(scores, key=lambda i: (sign * scores[i], i))[: selection_size(len(scores), fraction)]
    rest = set(scores) - set(picked)
    assert all(sign * scores[p] <= sign * scores[r] for p in picked for r in rest)
    shuffled = list(scores.items())
    rnd.shuffle(shuffled)
    assert select_fraction(dict(shuffled), fraction, order) == picked  # insertion order never matters


@FUZZ
@given(scores, fractions)
def test_smallest_is_largest_of_the_negated_scores(scores, fraction):
    negated = {i: -v for i, v in scores.items()}
    assert select_fraction(scores, fraction, "smallest") == select_fraction(negated, fraction, "largest")
    assert select_fraction(scores, fraction) == largest_seam(scores, fraction)  # "largest" is the default


@FUZZ
@given(scores)
def test_fraction_zero_selects_nothing_and_one_selects_all(scores):
    assert largest_seam(scores, 0.0) == []
    assert sorted(largest_seam(scores, 1.0)) == sorted(scores)


@FUZZ
@given(st.integers(0, 10_000), fractions, fractions)
def test_selection_size_is_within_bounds_and_monotone(n, f, g):
    low, high = sorted((f, g))
    assert 0 <= selection_size(n, low) <= selection_size(n, high) <= n


@FUZZ
@given(scores, st.integers(-50, 50), fractions)
def test_nan_score_is_an_error_naming_its_id(scores, nan_id, fraction):
    scores = {**scores, nan_id: math.nan}
    with pytest.raises(ValueError, match=rf"^SEAM score of example id {nan_id} is NaN"):
        largest_seam(scores, fraction)


@FUZZ
@given(st.floats().filter(lambda f: not 0.0 <= f <= 1.0), st.integers(0, 100))
def test_fraction_outside_unit_interval_is_an_error(fraction, n):
    with pytest.raises(ValueError, match="fraction must lie in"):
        selection_size(n, fraction)
    with pytest.raises(ValueError, match="fraction must lie in"):
        largest_seam({i: 0.0 for i in range(n)}, fraction)


bounds = st.floats() | st.sampled_from([0.0, 1.0, -1.0, 0.8, 0.9, 1.0000001, -0.0])


@FUZZ
@given(bounds, bounds)
def test_contrast_band_is_checked_at_construction(lo, hi):
    # The band must be ordered and inside [0, 1] (_check_band's rule, narrower than cosine's
    # [-1, 1]; the paper uses [0.8, 0.9]). NaN and infinities fail it too.
    if 0.0 <= lo <= hi <= 1.0:
        assert ContrastSource(band=(lo, hi)).band == (lo, hi)
    else:
        with pytest.raises(ValueError, match=r"band must satisfy 0 <= lo <= hi <= 1, got band="):
            ContrastSource(band=(lo, hi))


@pytest.mark.parametrize("band", [(), (0.5,), (0.1, 0.2, 0.3), None, 0.5, "ab", ("x", 0.5), (0.5, None), (1j, 1)])
def test_contrast_band_that_is_not_two_numbers_is_an_error(band):
    with pytest.raises(ValueError, match=r"band must be two numbers \(lo, hi\)"):
        ContrastSource(band=band)
