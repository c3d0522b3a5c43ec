"""Recall of in-band neighbours of the contrast index (paper §7.1: band [0.8, 0.9] on a >1M corpus).

A synthetic corpus of clustered unit vectors (seeded): points of one cluster
have cosine similarities around 0.85, so every query has in-band neighbours,
and points of different clusters are far below the band.
"""

import logging

import numpy as np
import pytest

from seam_lightning.seam.sources.contrast import (
    MIN_RECALL,
    SELF_SIMILARITY,
    band_recall,
    build_index,
    check_index_recall,
    sample_queries,
)

LOGGER = "seam_lightning.seam.sources.contrast"
K = 256  # > cluster size: the exact top k holds every in-band neighbour


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    clusters, size, dim, noise = 40, 100, 32, 0.07
    centers = rng.standard_normal((clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    points = np.repeat(centers, size, axis=0) + noise * rng.standard_normal((clusters * size, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _clear_edge(sims: np.ndarray, target: float, tol: float = 1e-6) -> float:
    """The value closest above ``target`` with no similarity within ``tol``: float32 (faiss) and
    float64 (here) then agree on which side of the band edge every similarity lies."""
    for step in range(10_000):
        edge = target + step * 1e-5
        if not np.any(np.abs(sims - edge) < tol):
            return edge
    raise AssertionError(f"no clear band edge near {target}")


def _hand_recall(index, vectors, rows, band):
    """Pooled recall by hand: brute-force in-band sets (numpy, float64) vs the index's top K."""
    queries = vectors[rows].astype(np.float64)
    sims = queries @ vectors.astype(np.float64).T
    lo, hi = band
    found = exact = 0
    _, approx_ids = index.search(vectors[rows], K)
    for q in range(len(rows)):
        s = sims[q]
        truth = set(np.flatnonzero((s >= lo) & (s <= hi) & (s < SELF_SIMILARITY)).tolist())
        got = {int(i) for i in approx_ids[q] if i >= 0 and lo <= s[i] <= hi and s[i] < SELF_SIMILARITY}
        assert len(truth) < K  # so the exact top K really holds them all
        exact += len(truth)
        found += len(truth & got)
    return found, exact


def _band(vectors, rows):
    sims = vectors[rows].astype(np.float64) @ vectors.astype(np.float64).T
    return _clear_edge(sims, 0.8), _clear_edge(sims, 0.9)


def test_sample_queries_is_seeded_and_bounded():
    rows = sample_queries(4000)
    assert len(rows) == 200 == len(set(rows.tolist())) and rows.max() < 4000 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, sample_queries(4000))
    assert not np.array_equal(rows, sample_queries(4000, seed=1))
    np.testing.assert_array_equal(sample_queries(7), np.arange(7))  # a small corpus: every row
    with pytest.raises(ValueError, match="size"):
        sample_queries(10, -1)


def test_ivf_recall_equals_hand_computation(vectors):
    # 100 cells of ~40 points cut the 40 clusters of 100 apart; nprobe=2 misses some of them.
    ivf = build_index(vectors, "ivf", nprobe=2, nlist=100)
    rows = sample_queries(len(vectors), 200, seed=3)
    band = _band(vectors, rows)
    found, exact = _hand_recall(ivf, vectors, rows, band)
    result = band_recall(ivf, vectors, vectors[rows], band, K)
    assert (result.found, result.exact, result.queries) == (found, exact, 200)
    assert result.recall == found / exact and 0.3 < result.recall < 1.0
    # check_index_recall samples the same rows for the same seed.
    assert check_index_recall(ivf, vectors, band, K, sample=200, seed=3) == result


def test_poor_ivf_setting_warns(vectors, caplog):
    ivf = build_index(vectors, "ivf", nprobe=1, nlist=100)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = check_index_recall(ivf, vectors, (0.8, 0.9), K)
    assert result.recall < MIN_RECALL
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert f"{result.recall:.3f}" in message and "below 0.95" in message
    assert "nprobe=1/nlist=100" in message and "raise nprobe or use index: flat" in message


def test_enough_probes_give_full_recall_without_warning(vectors, caplog):
    ivf = build_index(vectors, "ivf", nprobe=16, nlist=100)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = check_index_recall(ivf, vectors, (0.8, 0.9), K)
    assert result.recall == 1.0 and result.exact > 1000
    assert "recall of in-band neighbours 1.000" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_flat_recall_is_one(vectors):
    result = check_index_recall(build_index(vectors, "flat"), vectors, (0.8, 0.9), K)
    assert result.recall == 1.0 and result.found == result.exact > 0


def test_no_in_band_neighbours_means_no_measurement(vectors, caplog):
    ivf = build_index(vectors, "ivf", nprobe=1, nlist=100)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = check_index_recall(ivf, vectors, (0.98, 0.99), K)  # no two points are that close
    assert result.exact == 0 and np.isnan(result.recall) and "recall not measured" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_bad_nlist(vectors):
    with pytest.raises(ValueError, match="nlist"):
        build_index(vectors[:50], "ivf", nlist=51)
