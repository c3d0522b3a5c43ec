"""SentenceEncoder pooling (cls | mean | pooler | auto) on a tiny random BERT, against a plain AutoModel forward.

Paper §7.1 embeds with SimCSE, whose sentence vector comes from [CLS]; the
bundled all-MiniLM-L6-v2 mean-pools. The reference vectors are computed here
independently: one text per forward pass (no padding at all), pooled by hand.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerFast

from seam_lightning.models.encoder import (
    SentenceEncoder,
    embedding_key,
    encoder_fingerprint,
    pool,
    resolve_pooling,
    sentence_transformers_pooling,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = [
    "How do I sort a list in Python?",
    "What is the capital of France?",
    "Explain recursion to a child in two short sentences, please.",
    "Short.",
    "Bake bread.",
]
LOGGER = "seam_lightning.models.encoder"


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style (lower-case WordPiece, [CLS] ... [SEP]) tokenizer trained on TEXTS, offline."""
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(TEXTS * 4, trainers.WordPieceTrainer(vocab_size=150, special_tokens=SPECIALS))
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", padding_side="right",
    )


def _save_tiny_bert(path: Path, pooler: bool = True) -> Path:
    """A 2-layer BERT (hidden 32, random weights; without pooler head if not ``pooler``) and its tokenizer."""
    tokenizer = _wordpiece_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _write_st_config(path: Path, flags: dict) -> None:
    """sentence-transformers ``modules.json`` + ``1_Pooling/config.json`` with these ``pooling_mode_*`` flags."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    config = {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
              "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False, **flags}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> Path:
    """No sentence-transformers config: `auto` must fall back to mean."""
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-plain"))


def _with_st_config(plain: Path, path: Path, flags: dict) -> Path:
    """A copy of ``plain`` (same weights, same tokenizer: WordPiece training may order ties
    differently from run to run) plus a sentence-transformers pooling config."""
    shutil.copytree(plain, path)
    _write_st_config(path, flags)
    return path


@pytest.fixture(scope="module")
def cls_dir(plain_dir, tmp_path_factory) -> Path:
    return _with_st_config(plain_dir, tmp_path_factory.mktemp("st") / "tiny-bert-cls", {"pooling_mode_cls_token": True})


@pytest.fixture(scope="module")
def mean_dir(plain_dir, tmp_path_factory) -> Path:
    return _with_st_config(plain_dir, tmp_path_factory.mktemp("st") / "tiny-bert-mean",
                           {"pooling_mode_mean_tokens": True})


@pytest.fixture(scope="module")
def reference(plain_dir) -> dict[str, np.ndarray]:
    """Unit vectors per pooling from a plain AutoModel forward, one unpadded text at a time."""
    tokenizer = AutoTokenizer.from_pretrained(plain_dir)
    model = AutoModel.from_pretrained(plain_dir).eval()
    out = {"cls": [], "mean": [], "pooler": []}
    with torch.no_grad():
        for text in TEXTS:
            result = model(**tokenizer(text, return_tensors="pt"))
            hidden = result.last_hidden_state[0]  # [tokens, hidden], no padding
            out["cls"].append(hidden[0])
            out["mean"].append(hidden.mean(0))
            out["pooler"].append(result.pooler_output[0])
    return {k: torch.nn.functional.normalize(torch.stack(v), dim=-1).numpy() for k, v in out.items()}


def test_tiny_tokenizer_is_bert_like(plain_dir):
    tokenizer = AutoTokenizer.from_pretrained(plain_dir)
    ids = tokenizer(TEXTS[:2], padding=True)
    assert all(row[0] == tokenizer.cls_token_id for row in ids["input_ids"])
    assert tokenizer.padding_side == "right" and min(map(sum, ids["attention_mask"])) < len(ids["input_ids"][0])


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_pooling_equals_plain_forward(plain_dir, reference, pooling):
    # batch_size 2: texts of different lengths share padded batches.
    encoder = SentenceEncoder(str(plain_dir), batch_size=2, device="cpu", pooling=pooling)
    assert encoder.pooling == pooling
    np.testing.assert_allclose(encoder.encode(TEXTS), reference[pooling], atol=1e-5)


def test_poolings_differ(reference):
    # Otherwise the test above could not tell them apart.
    for a, b in [("cls", "mean"), ("cls", "pooler"), ("mean", "pooler")]:
        assert np.abs(reference[a] - reference[b]).max() > 0.1


@pytest.mark.parametrize("fixture, expected", [("cls_dir", "cls"), ("mean_dir", "mean")])
def test_auto_follows_the_sentence_transformers_config(request, reference, fixture, expected, caplog):
    folder = request.getfixturevalue(fixture)
    assert sentence_transformers_pooling(str(folder)) == expected
    with caplog.at_level(logging.INFO, logger=LOGGER):
        encoder = SentenceEncoder(str(folder), batch_size=2, device="cpu")  # pooling="auto" by default
    assert encoder.pooling == expected and "sentence-transformers pooling config" in caplog.text
    # A copy of plain_dir: the vectors are the reference ones.
    np.testing.assert_allclose(encoder.encode(TEXTS), reference[expected], atol=1e-5)


def test_auto_without_config_falls_back_to_mean_and_says_so(plain_dir, caplog):
    assert sentence_transformers_pooling(str(plain_dir)) is None
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert resolve_pooling(str(plain_dir), "auto") == "mean"
    assert "falling back to mean pooling" in caplog.text and str(plain_dir) in caplog.text


def test_auto_for_simcse_follows_the_authors_tool(plain_dir, tmp_path, caplog):
    """simcse.tool.SimCSE: pooler_output for sup models, cls_before_pooler when "unsup" is in the name."""
    sup = shutil.copytree(plain_dir, tmp_path / "sup-simcse-tiny-bert")
    unsup = shutil.copytree(plain_dir, tmp_path / "unsup-simcse-tiny-bert")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert resolve_pooling(str(sup)) == "pooler"
        assert resolve_pooling(str(unsup)) == "cls"
    assert "SimCSE authors' tool" in caplog.text and "falling back" not in caplog.text
    # A sentence-transformers config wins over the name; explicit values win over everything.
    _write_st_config(sup, {"pooling_mode_mean_tokens": True})
    assert resolve_pooling(str(sup)) == "mean" and resolve_pooling(str(sup), "cls") == "cls"


@pytest.mark.parametrize("flags", [
    {"pooling_mode_max_tokens": True},
    {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
    {"pooling_mode_lasttoken": True},
    {},
])
def test_unsupported_sentence_transformers_pooling_is_an_error(plain_dir, tmp_path, flags):
    folder = shutil.copytree(plain_dir, tmp_path / "model")
    _write_st_config(folder, flags)
    with pytest.raises(ValueError, match="implements only"):
        resolve_pooling(str(folder))
    assert resolve_pooling(str(folder), "mean") == "mean"  # an explicit choice overrides


def test_bad_pooling_value(plain_dir):
    with pytest.raises(ValueError, match="pooling must be one of"):
        SentenceEncoder(str(plain_dir), pooling="max")


def test_pooler_needs_trained_pooler_weights(tmp_path):
    folder = _save_tiny_bert(tmp_path / "no-pooler", pooler=False)
    with pytest.raises(ValueError, match="no trained pooler weights"):
        SentenceEncoder(str(folder), device="cpu", pooling="pooler")
    assert SentenceEncoder(str(folder), device="cpu", pooling="cls").pooling == "cls"


def test_cache_keys_depend_on_pooling(plain_dir, cls_dir):
    keys = {p: SentenceEncoder(str(plain_dir), device="cpu", pooling=p) for p in ("cls", "mean", "pooler")}
    prints = {p: e.fingerprint() for p, e in keys.items()}
    assert len(set(prints.values())) == 3
    assert len({embedding_key(e, TEXTS) for e in keys.values()}) == 3
    assert prints["mean"] == encoder_fingerprint(str(plain_dir), 128, "mean")
    # "auto" shares the entry of the pooling it resolves to.
    auto = SentenceEncoder(str(cls_dir), device="cpu")
    assert auto.fingerprint() == encoder_fingerprint(str(cls_dir), 128, "cls")
    with pytest.raises(ValueError, match="resolved pooling"):
        encoder_fingerprint(str(plain_dir), 128, "auto")


def test_cls_takes_the_first_real_token_under_left_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])

    class Out:
        last_hidden_state = hidden

    torch.testing.assert_close(pool(Out, mask, "cls"), torch.stack([hidden[0, 2], hidden[1, 0]]))
    torch.testing.assert_close(pool(Out, mask, "mean"), torch.stack([hidden[0, 2:].mean(0), hidden[1].mean(0)]))
    with pytest.raises(ValueError, match="pooling"):
        pool(Out, mask, "auto")
