"""The scoring's summary numbers (report, `seam-lightning score`, SeamCallback's seam/* metrics), by hand."""

import math

import pytest
import torch

from seam_lightning.seam.report import quantile_summary, selection_metrics, summary_numbers
from seam_lightning.seam.scorer import SeamResult

RESULTS = [
    # golden 1.0; candidates rewarded 2.0 (misjudged) and 0.5, log-lik -6 over 3 and -4 over 4 tokens
    SeamResult(0, 0.4, 1.0, [2.0, 0.5], [-6.0, -4.0], [3, 4]),
    # golden 0.0; one candidate rewarded 1.0 (misjudged), -2 over 2 tokens
    SeamResult(1, 0.1, 0.0, [1.0], [-2.0], [2]),
    SeamResult(2, 0.0, 3.0, [], [], []),  # no candidates: SEAM 0 by definition
    SeamResult(3, 0.9, 0.0, [0.5], [-3.0], [1]),
]


def test_summary_numbers_by_hand():
    numbers = summary_numbers(RESULTS, selected={3})
    assert numbers["prompts"] == 4 and numbers["selected"] == 1 and numbers["candidates"] == 4
    assert numbers["seam_mean"] == pytest.approx((0.4 + 0.1 + 0.0 + 0.9) / 4)
    assert numbers["seam_median"] == pytest.approx((0.1 + 0.4) / 2)  # sorted 0, 0.1, 0.4, 0.9
    assert numbers["seam_q90"] == pytest.approx(0.4 + 0.7 * (0.9 - 0.4))  # position 2.7
    assert numbers["seam_max"] == 0.9
    assert numbers["misjudgement_rate"] == pytest.approx(3 / 4)  # 2.0 > 1.0, 1.0 > 0.0, 0.5 > 0.0
    assert numbers["candidate_token_loglik"] == pytest.approx((-2.0 - 1.0 - 1.0 - 3.0) / 4)
    assert numbers["without_candidates"] == 1 and numbers["without_candidates_share"] == 0.25
    # The quantiles are torch.quantile's.
    seam = torch.tensor([r.seam for r in RESULTS], dtype=torch.float64)
    assert numbers["seam_q90"] == pytest.approx(seam.quantile(0.9).item())


def test_no_candidates_anywhere_gives_nan_rates():
    numbers = summary_numbers([SeamResult(0, 0.0, 1.0, [], [], [])], selected=set())
    assert math.isnan(numbers["misjudgement_rate"]) and math.isnan(numbers["candidate_token_loglik"])


def test_selection_metrics_are_the_summary_numbers():
    metrics = selection_metrics(RESULTS, selected={3}, previous={1, 3})
    assert metrics["seam/mean"] == pytest.approx(0.35)
    assert metrics["seam/q50"] == pytest.approx(0.25)
    assert metrics["seam/misjudgement_rate"] == pytest.approx(0.75)
    assert metrics["seam/candidate_token_loglik"] == pytest.approx(-1.75)
    assert metrics["seam/prompts_without_candidates"] == 1.0
    assert metrics["seam/selected"] == 1.0 and metrics["seam/selected_share"] == 0.25
    assert metrics["seam/overlap_with_previous"] == 1.0


def test_quantile_summary_by_hand():
    # 1..5: mean 3, median 3, 90% quantile 4.6 (linear interpolation between 4 and 5), max 5
    summary = quantile_summary("perplexity", [5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary == pytest.approx({"perplexity/mean": 3.0, "perplexity/q50": 3.0, "perplexity/q90": 4.6,
                                     "perplexity/max": 5.0})
    assert quantile_summary("perplexity", []) == {}
