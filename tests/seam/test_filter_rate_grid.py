"""The filter-rate grid of scripts/exp_filter_rate.py: paper App. E.1's rates, always with the 0% reference run."""

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("exp_filter_rate")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_default_grid_is_the_papers_rates_plus_the_reference(script):
    assert script.fraction_grid(None, quick=False) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8]
    assert script.fraction_grid(None, quick=True) == [0.0, 0.2, 0.4]


def test_given_fractions_are_sorted_deduplicated_and_get_the_reference(script):
    assert script.fraction_grid([0.4, 0.2, 0.4], quick=False) == [0.0, 0.2, 0.4]
    assert script.fraction_grid([0.0, 0.3], quick=True) == [0.0, 0.3]


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_a_fraction_that_prunes_everything_or_is_no_share_is_refused(script, bad):
    with pytest.raises(SystemExit, match=r"--fractions must lie in \[0, 1\)"):
        script.fraction_grid([0.2, bad], quick=False)


def test_paired_delta_is_against_the_reference_per_prompt(script):
    delta = script.paired_delta({"q_pm_per_prompt": [1.0, 2.0, 3.0]}, {"q_pm_per_prompt": [0.5, 2.0, 2.0]})
    assert delta["mean"] == pytest.approx(0.5)


def test_paired_delta_skips_prompts_a_judge_left_unrated(script):
    delta = script.paired_delta({"q_pm_per_prompt": [1.0, None, 3.0, 4.0]}, {"q_pm_per_prompt": [0.5, 2.0, None, 3.0]})
    assert delta["n"] == 2 and delta["mean"] == pytest.approx((0.5 + 1.0) / 2)
