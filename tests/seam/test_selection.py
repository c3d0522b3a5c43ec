import pytest

from seam_lightning.seam.selection import largest_seam, selection_size


def test_largest_scores_are_selected_worst_first():
    scores = {10: 0.1, 11: 5.0, 12: 2.0, 13: 0.0, 14: 3.0}
    assert largest_seam(scores, 0.4) == [11, 14]


def test_ties_break_by_smaller_id_whatever_the_insertion_order():
    scores = {7: 1.0, 3: 1.0, 5: 1.0, 9: 0.5}
    assert largest_seam(scores, 0.5) == [3, 5]
    assert largest_seam(dict(reversed(scores.items())), 0.5) == [3, 5]


@pytest.mark.parametrize("n,fraction,k", [(7, 0.2, 1), (8, 0.2, 2), (10, 0.0, 0), (10, 1.0, 10), (0, 0.5, 0), (5, 0.5, 3)])
def test_selection_size_rounds_half_up(n, fraction, k):
    assert selection_size(n, fraction) == k


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_fraction_outside_unit_interval_is_an_error(fraction):
    with pytest.raises(ValueError, match="fraction must lie in"):
        selection_size(10, fraction)
