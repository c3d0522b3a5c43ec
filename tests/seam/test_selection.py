import math

import pytest

from seam_lightning.seam.selection import largest_seam, select_fraction, selection_size, top_k


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


# -- order: which end of the ranking (paper §7, App. E: "low-SEAM" = low seamlessness = largest Eq. 2) ----

SCORES = {10: 0.1, 11: 5.0, 12: 2.0, 13: 0.0, 14: 3.0, 15: 2.0}


def test_order_largest_takes_the_largest_eq2_values_most_extreme_first():
    # 40% of 6 prompts = round(2.4) = 2: SEAM 5.0 (id 11), then 3.0 (id 14).
    assert select_fraction(SCORES, 0.4, "largest") == [11, 14]
    assert select_fraction(SCORES, 0.4) == largest_seam(SCORES, 0.4) == [11, 14]  # the default


def test_order_smallest_takes_the_smallest_values_most_extreme_first():
    # 0.0 (id 13), then 0.1 (id 10).
    assert select_fraction(SCORES, 0.4, "smallest") == [13, 10]


def test_ties_break_by_smaller_id_in_both_orders():
    # ids 12 and 15 tie at 2.0; a cut through the tie keeps the smaller id, whichever the order.
    assert select_fraction(SCORES, 0.5, "largest") == [11, 14, 12]    # 3 of 6
    assert select_fraction(SCORES, 0.5, "smallest") == [13, 10, 12]
    for order in ("largest", "smallest"):
        assert select_fraction(dict(reversed(SCORES.items())), 0.5, order) == select_fraction(SCORES, 0.5, order)
    assert top_k({4: 1.0, 2: 1.0, 3: 1.0}, 2, "largest") == top_k({4: 1.0, 2: 1.0, 3: 1.0}, 2, "smallest") == [2, 3]


def test_the_two_orders_split_distinct_scores_into_complementary_ends():
    scores = {i: float((7 * i) % 11) for i in range(11)}  # 0..10, each once
    largest, smallest = select_fraction(scores, 0.3, "largest"), select_fraction(scores, 0.3, "smallest")
    assert [scores[i] for i in largest] == [10.0, 9.0, 8.0] and [scores[i] for i in smallest] == [0.0, 1.0, 2.0]


def test_unknown_order_and_nan_are_errors():
    with pytest.raises(ValueError, match="order must be 'largest' or 'smallest'"):
        select_fraction(SCORES, 0.2, "highest")
    with pytest.raises(ValueError, match="^perplexity of example id 3 is NaN"):
        select_fraction({3: math.nan, 1: 1.0}, 0.5, "smallest", what="perplexity")


# -- the §7 "LLaMa" baseline: golden-response perplexity ------------------------------------------
