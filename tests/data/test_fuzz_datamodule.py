"""Fuzz tests for RLHFDataModule: small or empty JSONL sources, odd texts, any batch size and limits.

Each run either serves batches that hold every kept example once, with every field
within its token limit, or fails with a DataError that names the file.
"""
import json
import re

import pytest

from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tiny import build_tokenizer  # noqa: E402

from seam_lightning.data import DataError, DataSource, RLHFDataModule  # noqa: E402

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60)
TOKENIZERS = {chat: build_tokenizer(chat_template=chat) for chat in (True, False)}
FIELDS = ("instruction", "response", "chosen", "rejected")

texts = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=60).filter(str.strip),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Zs", "So", "Lo", "Mn"]), min_size=1, max_size=20)
    .filter(str.strip),  # control characters, odd spaces, symbols, combining marks
    st.sampled_from(["x" * 20_000, "é " * 5_000, "\x00" * 3_000 + "y", "<|im_end|>" * 500]),
)
rows = st.lists(st.fixed_dictionaries({f: texts for f in FIELDS}), max_size=5)


def _datamodule(path, **kwargs):
    source = DataSource(str(path))
    return RLHFDataModule(sft=source, sft_val=None, preference=source, preference_val=None, rl=source,
                          rl_val=None, **kwargs)


@FUZZ
@given(rows, st.sampled_from(["sft", "preference", "rl"]), st.integers(1, 8), st.integers(1, 12),
       st.integers(1, 12), st.sampled_from(["truncate", "drop"]), st.booleans(), st.booleans())
def test_loaders_serve_every_kept_example_or_fail_clearly(tmp_path_factory, records, stage, batch_size,
                                                          max_instruction, max_response, overlong, chat, blank):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_text("\n" * blank + "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    dm = _datamodule(path, batch_size=batch_size, max_instruction_tokens=max_instruction,
                     max_response_tokens=max_response, overlong=overlong)
    dm.connect(TOKENIZERS[chat], stage)
    if not records:
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: no records$"):
            dm.setup("fit")
        return
    try:
        dm.setup("fit")
    except DataError as e:
        assert overlong == "drop" and dm.stats[f"{stage}.dropped"] == len(records)
        assert str(e).startswith(f"{path}: every example was dropped as over-long")
        event("all dropped")
        return
    event(f"served, {dm.stats[f'{stage}.dropped']} dropped")
    kept = [e["id"] for e in dm.examples(stage)]
    assert len(kept) == len(records) - dm.stats[f"{stage}.dropped"]
    seen = []
    for batch in dm.train_dataloader():
        rows_per_example = 2 if stage == "preference" else 1
        assert batch["input_ids"].shape[0] == rows_per_example * len(batch["ids"]) <= rows_per_example * batch_size
        seen += batch["ids"].tolist()
    assert sorted(seen) == sorted(kept)
    eos = TOKENIZERS[chat].eos_token_id
    for example in dm.examples(stage):
        for name in ("response_ids", "chosen_ids", "rejected_ids"):
            if name in example:  # at most the limit, plus EOS for a response that was not cut
                assert len(example[name]) <= max_response + (example[name][-1:] == [eos])
        # The instruction is cut at its limit, then decoded and put in the template; a cut inside
        # a character decodes to U+FFFD, which re-encodes to up to 3 tokens: a few over, no more.
        template = len(dm.formatter.prompt_ids("").ids)
        assert len(example["prompt_ids"]) <= template + max_instruction + 3


def test_batch_larger_than_the_data_set_is_one_batch(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({f: f"{f} {i}" for f in FIELDS}) + "\n" for i in range(3)))
    dm = _datamodule(path, batch_size=64)
    dm.connect(TOKENIZERS[True], "sft")
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and sorted(batches[0]["ids"].tolist()) == [0, 1, 2]


def test_megabyte_texts_are_truncated(tmp_path):
    path = tmp_path / "d.jsonl"
    row = {f: "word " * 20_000 for f in FIELDS} | {"instruction": "word " * 200_000}  # 1 MB
    path.write_text(json.dumps(row) + "\n")
    dm = _datamodule(path, batch_size=2, max_instruction_tokens=8, max_response_tokens=8)
    dm.connect(TOKENIZERS[False], "preference")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[1] <= len(dm.formatter.prompt_ids("a").ids) + 16 + 8
    assert dm.stats["preference.prompt_truncated"] == dm.stats["preference.chosen_truncated"] == 1
