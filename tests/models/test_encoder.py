"""SentenceEncoder: the bundled all-MiniLM-L6-v2, mean pooling, unit vectors, order-independent rows.

Pooling choices (cls | mean | pooler | auto) on a tiny BERT: test_pooling.py.
"""

from pathlib import Path

import numpy as np
import pytest

from seam_lightning.models.encoder import (
    SentenceEncoder,
    embedding_key,
    encode_cached,
    encoder_fingerprint,
    resolve_encoder,
    resolve_pooling,
    sentence_transformers_pooling,
)

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today.",
    "How do I sort a list in Python?",
    "What is the best way to sort a Python list?",
    "Short.",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    # batch_size 4 so that the six texts need two batches of different padding.
    return SentenceEncoder(batch_size=4)


def test_bundled_name_resolves_to_a_local_folder():
    folder = Path(resolve_encoder("bundled:all-MiniLM-L6-v2"))
    assert (folder / "config.json").is_file()
    assert resolve_encoder("princeton-nlp/sup-simcse-bert-base-uncased") == "princeton-nlp/sup-simcse-bert-base-uncased"
    with pytest.raises(ValueError, match="unknown bundled encoder"):
        resolve_encoder("bundled:no-such-encoder")


def test_rows_are_unit_float32(encoder):
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_order_independent(encoder):
    forward = encoder.encode(TEXTS)
    backward = encoder.encode(TEXTS[::-1])
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-6)
    # Repeated texts get identical rows.
    twice = encoder.encode([TEXTS[0], TEXTS[2], TEXTS[0]])
    np.testing.assert_array_equal(twice[0], twice[2])


def test_similar_sentences_are_closer(encoder):
    v = encoder.encode(TEXTS)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert v[3] @ v[4] > v[3] @ v[2] + 0.3
    # The value sentence-transformers gives for this pair: the pooling matches the reference.
    assert v[0] @ v[1] == pytest.approx(0.7553, abs=2e-3)


def test_fingerprint_depends_on_recipe():
    name = "bundled:all-MiniLM-L6-v2"
    assert encoder_fingerprint(name, 128) == encoder_fingerprint(name, 128)
    assert encoder_fingerprint(name, 128) != encoder_fingerprint(name, 64)
    assert encoder_fingerprint(name, 128, "mean") != encoder_fingerprint(name, 128, "cls")


def test_bundled_encoder_keeps_mean_pooling(encoder):
    """Its folder has a sentence-transformers pooling config saying mean: `auto` (the default) reads it,
    and the cache key is the one of the former always-mean recipe, so existing caches stay valid."""
    assert sentence_transformers_pooling(resolve_encoder("bundled:all-MiniLM-L6-v2")) == "mean"
    assert resolve_pooling("bundled:all-MiniLM-L6-v2") == "mean" and encoder.pooling == "mean"
    assert encoder.fingerprint() == encoder_fingerprint("bundled:all-MiniLM-L6-v2", 128)


def test_encode_cached_reuses_and_repairs(encoder, tmp_path, caplog):
    path = tmp_path / f"{embedding_key(encoder, TEXTS)}.emb.npy"
    first = encode_cached(encoder, TEXTS, path)
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    np.testing.assert_array_equal(encode_cached(encoder, TEXTS, path), first)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with caplog.at_level("WARNING"):
        again = encode_cached(encoder, TEXTS, path)
    assert "corrupt embedding cache" in caplog.text
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert np.load(path).shape == first.shape


def test_unwritable_cache_costs_the_cache_not_the_run(encoder, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level("WARNING"):
        vectors = encode_cached(encoder, TEXTS[:2], blocker / "x.emb.npy")
    assert vectors.shape == (2, encoder.dim) and "cannot write cache" in caplog.text
