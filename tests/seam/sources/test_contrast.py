"""SEAM_Contrast: band filter (both bounds), no self-matches or duplicates, stats, cache, IVF, pooling.

IVF recall measurement on synthetic vectors: test_index_recall.py.
"""

import json
import logging

import numpy as np
import pytest

from seam_lightning.data.records import DataSource
from seam_lightning.models.encoder import SentenceEncoder
from seam_lightning.seam.sources.base import CandidateStats
from seam_lightning.seam.sources.contrast import ContrastSource, build_index, resolve_index_kind

# (instruction, response). Responses repeat on purpose: "Use sorted()." twice
# (a duplicate candidate) and "Use list.sort()." is the golden answer of the query.
CORPUS = [
    ("How do I sort a list in Python?", "Use list.sort()."),  # the query itself
    ("How can I sort a list in Python?", "Call sorted() on it."),  # ~paraphrase, s > 0.99
    ("How do I reverse a list in Python?", "Use reversed() or list.reverse()."),
    ("How do I sort a dictionary by value in Python?", "Use sorted()."),
    ("How do I sort a list in Java?", "Use sorted()."),
    ("How do I remove duplicates from a list in Python?", "Use dict.fromkeys()."),
    ("How do I concatenate two lists in Python?", "Use the + operator."),
    ("What is the capital of France?", "Paris."),
    ("What is the capital of Germany?", "Berlin."),
    ("What is the largest city in France?", "Paris."),
    ("What is the population of Paris?", "About two million."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("How do I bake bread?", "Knead, proof and bake."),
    ("How do I bake a chocolate cake?", "Mix, pour and bake."),
    ("How do I make sourdough bread at home?", "Feed a starter first."),
    ("Explain recursion.", "A function calling itself."),
]
QUERIES = ["How do I   sort a list in Python?", "What is the capital of France?", "Explain recursion."]
GOLDEN = ["Use list.sort().", "Paris.", "A function calling itself."]
TOL = 1e-4  # faiss and a fresh encode may differ in the last float bits


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture
def corpus(tmp_path) -> DataSource:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"instruction": i, "response": r}) + "\n" for i, r in CORPUS))
    return DataSource(str(path))


def _similarities(encoder, queries):
    """cos(query, corpus instruction), re-encoded independently of the source (one encoder call)."""
    vectors = encoder.encode(list(queries) + [i for i, _ in CORPUS])
    return vectors[: len(queries)] @ vectors[len(queries):].T


def _expected(sims, query, golden, band, n):
    """Brute force: in-band, not the query, no duplicate or golden response, most similar first."""
    norm = lambda t: " ".join(t.split())  # noqa: E731
    seen, out = {golden}, []
    for j in np.argsort(-sims, kind="stable"):
        (instr, resp), s = CORPUS[j], sims[j]
        if band[0] <= s <= band[1] and s < 0.9999 and norm(instr) != norm(query) and resp not in seen:
            seen.add(resp)
            out.append(resp)
    return out[:n]


@pytest.mark.parametrize("band", [(0.5, 0.8), (0.6, 0.75)])
def test_band_filter_matches_brute_force(corpus, encoder, tmp_path, band):
    source = ContrastSource(corpus, band=band, cache_dir=str(tmp_path / "cache"))
    got = source.candidates(QUERIES, GOLDEN, num_candidates=10)
    sims = _similarities(encoder, QUERIES)
    # No similarity sits on a band edge, so a last-bit difference cannot flip a decision.
    assert np.all(np.abs(sims - band[0]) > TOL) and np.all(np.abs(sims - band[1]) > TOL)
    for q, (query, golden) in enumerate(zip(QUERIES, GOLDEN)):
        assert got[q] == _expected(sims[q], query, golden, band, 10)
        for match in source.last_matches[q]:
            assert match.instruction == CORPUS[match.row][0]
            assert band[0] - TOL <= sims[q, match.row] <= band[1] + TOL
            assert match.similarity == pytest.approx(sims[q, match.row], abs=TOL)
    # Nothing outside the band, even though that leaves "Explain recursion." with nothing.
    assert got[2] == []


def test_no_self_match_no_duplicates_and_stats(corpus, tmp_path, caplog):
    source = ContrastSource(corpus, band=(0.3, 1.0), cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="seam_lightning.seam.sources.contrast"):
        got = source.candidates(QUERIES, GOLDEN, num_candidates=3)
    python = got[0]
    # The query itself (whitespace differs) and its s > 0.9999 paraphrase are not candidates...
    rows = [m.row for m in source.last_matches[0]]
    assert 0 not in rows and all(m.similarity < 0.9999 for m in source.last_matches[0])
    # ...neither is the golden response, nor a response twice.
    assert "Use list.sort()." not in python and len(set(python)) == len(python) == 3
    assert [m.similarity for m in source.last_matches[0]] == sorted(
        (m.similarity for m in source.last_matches[0]), reverse=True
    )
    assert "Paris." not in got[1]
    short = sum(len(c) < 3 for c in got)
    assert source.last_stats == CandidateStats(prompts=3, candidates=sum(map(len, got)), short=short,
                                               empty=sum(not c for c in got))
    assert short >= 1 and "fewer than 3 candidates" in caplog.text


@pytest.mark.parametrize("band", [(0.9, 0.8), (-0.1, 0.5), (0.5, 1.1), (0.5,), "ab"])
def test_bad_band(band):
    with pytest.raises(ValueError, match="band"):
        ContrastSource(band=band)


def test_bad_requests(corpus, tmp_path):
    source = ContrastSource(corpus, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="num_candidates"):
        source.candidates(QUERIES, GOLDEN, num_candidates=0)
    with pytest.raises(ValueError, match="differ in length"):
        source.candidates(QUERIES, GOLDEN[:1], num_candidates=1)
    with pytest.raises(ValueError, match="search_k"):
        ContrastSource(corpus, search_k=0)
    assert source.candidates([], [], 2) == [] and source.last_stats.prompts == 0


def _count_encoded(monkeypatch) -> list[int]:
    """Patch SentenceEncoder.encode to record how many texts each call embeds."""
    calls, original = [], SentenceEncoder.encode

    def counting(self, texts, progress=False):
        calls.append(len(texts))
        return original(self, texts, progress)

    monkeypatch.setattr(SentenceEncoder, "encode", counting)
    return calls


def test_cache_reused_by_a_second_source(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path / "root"))
    calls = _count_encoded(monkeypatch)
    first = ContrastSource(corpus).candidates(QUERIES, GOLDEN, 5)
    assert sorted(calls) == [len(QUERIES), len(CORPUS)]
    assert list((tmp_path / "root" / "contrast").glob("*.emb.npy"))
    calls.clear()
    assert ContrastSource(corpus).candidates(QUERIES, GOLDEN, 5) == first
    assert calls == [len(QUERIES)]  # the corpus came from the cache


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape"])
def test_corrupt_embedding_cache_is_rebuilt(corpus, tmp_path, monkeypatch, caplog, damage):
    first = ContrastSource(corpus, cache_dir=str(tmp_path)).candidates(QUERIES, GOLDEN, 5)
    (path,) = tmp_path.glob("*.emb.npy")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    else:
        np.save(path, np.ones((3, 384), np.float32))
    calls = _count_encoded(monkeypatch)
    with caplog.at_level(logging.WARNING):
        again = ContrastSource(corpus, cache_dir=str(tmp_path)).candidates(QUERIES, GOLDEN, 5)
    assert again == first and "corrupt embedding cache" in caplog.text
    assert len(CORPUS) in calls and np.load(path).shape == (len(CORPUS), 384)


def test_ivf_source_and_corrupt_index_cache(corpus, tmp_path, caplog):
    # 16 entries -> one IVF cell, so the approximate search is exact here.
    flat = ContrastSource(corpus, band=(0.3, 0.95), cache_dir=str(tmp_path)).candidates(QUERIES, GOLDEN, 4)
    ivf = ContrastSource(corpus, band=(0.3, 0.95), index="ivf", cache_dir=str(tmp_path))
    assert ivf.candidates(QUERIES, GOLDEN, 4) == flat
    (path,) = tmp_path.glob("*.faiss")
    path.write_bytes(path.read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        again = ContrastSource(corpus, band=(0.3, 0.95), index="ivf", cache_dir=str(tmp_path))
        assert again.candidates(QUERIES, GOLDEN, 4) == flat
    assert "corrupt contrast index cache" in caplog.text and path.stat().st_size > 50
    # The IVF index's in-band recall was measured (one cell: exact), the flat one's is not needed.
    assert again.index_recall.recall == 1.0 and again.index_recall.queries == len(CORPUS)


def test_flat_source_measures_no_recall(corpus, tmp_path):
    source = ContrastSource(corpus, cache_dir=str(tmp_path))
    source.prepare()
    assert source.index_recall is None


def test_pooling_reaches_the_encoder_and_keys_the_cache(corpus, tmp_path):
    """Switching pooling must not reuse the other pooling's cached corpus embeddings."""
    mean = ContrastSource(corpus, band=(0.3, 0.95), cache_dir=str(tmp_path))
    cls = ContrastSource(corpus, band=(0.3, 0.95), cache_dir=str(tmp_path), pooling="cls")
    for source in (mean, cls):
        source.prepare()
    assert (mean._encoder.pooling, cls._encoder.pooling) == ("mean", "cls")  # auto -> the bundled model's mean
    paths = sorted(tmp_path.glob("*.emb.npy"))
    assert len(paths) == 2
    assert not np.allclose(np.load(paths[0]), np.load(paths[1]), atol=1e-3)
    with pytest.raises(ValueError, match="pooling"):
        ContrastSource(corpus, pooling="max")


def test_index_builder_on_random_unit_vectors():
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.1 * rng.standard_normal((50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = build_index(vectors, "auto")
    assert isinstance(flat, faiss.IndexFlatIP) and resolve_index_kind("auto", 50_000) == "ivf"
    ivf = build_index(vectors, "ivf", nprobe=8)
    assert isinstance(ivf, faiss.IndexIVFFlat) and ivf.nlist == 4000 // 39 and ivf.nprobe == 8
    exact_s, exact_i = flat.search(queries, 10)
    np.testing.assert_allclose(exact_s, np.einsum("qkd,qd->qk", vectors[exact_i], queries), atol=1e-5)
    _, approx_i = ivf.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_i, exact_i)])
    assert recall > 0.6
    ivf.nprobe = ivf.nlist  # visiting every cell makes IVF exact
    np.testing.assert_array_equal(ivf.search(queries, 10)[1][:, 0], exact_i[:, 0])
