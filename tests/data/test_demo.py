"""Tests for the offline demo data set built from stdlib docstrings."""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from seam_lightning.data import demo
from seam_lightning.data.demo import (
    DEMO_SCHEME,
    DEMO_SPLITS,
    DEMO_VERSION,
    build_demo_data,
    demo_path,
    resolve_demo_uri,
)

REQUIRED = {
    "sft": ("instruction", "response", "source"),
    "preference": ("instruction", "chosen", "rejected", "rejected_source", "rejected_kind"),
    "rl": ("instruction", "response", "source"),
}


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The data set, built once for the whole module (building takes ~1 s)."""
    with warnings.catch_warnings():  # fail if the isolated build falls back in-process
        warnings.simplefilter("error")
        return build_demo_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def records(built) -> dict[str, list[dict]]:
    return {split: _read(path) for split, path in built.items()}


def test_six_files_and_counts(built, records):
    assert set(built) == set(DEMO_SPLITS)
    for split, path in built.items():
        assert path.name == f"{split}.jsonl" and path.is_file()
    # No temp files are left behind by the write-then-replace.
    assert sorted(p.name for p in next(iter(built.values())).parent.iterdir()) == sorted(
        f"{s}.jsonl" for s in DEMO_SPLITS)
    counts = {split: len(rows) for split, rows in records.items()}
    assert counts["sft_train"] >= 3000
    assert counts["preference_train"] >= 3000
    assert counts["rl_train"] >= 300
    assert counts["rl_val"] > 0 and counts["sft_val"] > 0
    # One preference pair per SFT item.
    assert counts["preference_train"] == counts["sft_train"]
    assert counts["preference_val"] == counts["sft_val"]


def test_records_have_required_fields(records):
    for split, rows in records.items():
        for row in rows:
            for key in REQUIRED[split.split("_")[0]]:
                assert isinstance(row.get(key), str) and row[key].strip(), (split, key, row)


def test_responses_are_clean_summaries(records):
    for split in ("sft_train", "sft_val", "rl_train", "rl_val"):
        for row in records[split]:
            text = row["response"]
            assert demo.MIN_CHARS <= len(text) <= demo.MAX_CHARS, row
            assert text == text.strip() and ">>>" not in text, row
            assert f"`{row['source']}`" in row["instruction"], row
    # Golden answers are unique across the whole data set.
    answers = [r["response"] for s in ("sft_train", "sft_val", "rl_train", "rl_val")
               for r in records[s]]
    assert len(answers) == len(set(answers))


def test_splits_are_disjoint(records):
    split_names = ("sft_train", "sft_val", "rl_train", "rl_val")
    for key in ("instruction", "source"):
        seen: dict[str, str] = {}
        for split in split_names:
            for row in records[split]:
                assert row[key] not in seen, (key, row[key], seen.get(row[key]), split)
                seen[row[key]] = split


def test_preference_pairs(records):
    for sft, pref in (("sft_train", "preference_train"), ("sft_val", "preference_val")):
        assert [r["instruction"] for r in records[sft]] == [p["instruction"] for p in records[pref]]
        assert [r["response"] for r in records[sft]] == [p["chosen"] for p in records[pref]]
    # Rejected answers never leak held-out (RL / validation) golden answers into training.
    held_out = {r["response"] for s in ("sft_val", "rl_train", "rl_val") for r in records[s]}
    assert not held_out & {p["rejected"] for p in records["preference_train"]}

    pairs = records["preference_train"] + records["preference_val"]
    assert all(p["rejected"] != p["chosen"] for p in pairs)
    assert all(p["rejected_source"] != p["source"] for p in pairs)
    kinds = [p["rejected_kind"] for p in pairs]
    assert set(kinds) == {"related", "random"}
    assert 0.3 < kinds.count("related") / len(kinds) < 0.7
    # "related" negatives mostly come from the same class or module.
    related = [p for p in pairs if p["rejected_kind"] == "related"]
    same_parent = sum(p["source"].rsplit(".", 1)[0] == p["rejected_source"].rsplit(".", 1)[0]
                      for p in related)
    assert same_parent / len(related) > 0.5


def test_near_duplicate_instructions_exist(records):
    sources = {r["source"] for s in ("sft_train", "sft_val", "rl_train", "rl_val")
               for r in records[s]}
    assert {"json.dump", "json.dumps", "json.load", "json.loads"} <= sources
    plural_pairs = [s for s in sources if s + "s" in sources]
    assert len(plural_pairs) >= 5
    modules = [s.rsplit(".", 1)[0] for s in sources if "." in s]
    assert max(modules.count(m) for m in set(modules)) >= 20


def test_two_builds_are_byte_identical(built, tmp_path):
    again = build_demo_data(tmp_path)
    for split in DEMO_SPLITS:
        assert again[split].read_bytes() == built[split].read_bytes(), split


def test_build_independent_of_hash_seed(built, tmp_path):
    """A fresh interpreter with another PYTHONHASHSEED writes the same bytes."""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    # Run the file as a script: it only needs the stdlib, so this is quick.
    proc = subprocess.run([sys.executable, demo.__file__, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for split in DEMO_SPLITS:
        assert split in proc.stdout
        assert (tmp_path / f"{split}.jsonl").read_bytes() == built[split].read_bytes(), split


def test_summarize_docstring():
    doc = """dumps(obj, *, skipkeys=False,
             indent=None) -> str

    Serialize ``obj`` to a JSON formatted ``str``.   More   text here.

    Example::

        >>> dumps(1)
    """
    assert demo.summarize_docstring(doc) == (
        "Serialize ``obj`` to a JSON formatted ``str``. More text here.")
    # A heading and field list are dropped, not collapsed into the answer.
    fields = "Parse a query given as a string argument.\n\nArguments:\n\nqs: the query\n\n" \
             "keep_blank_values: flag indicating\n    whether blanks are kept."
    assert demo.summarize_docstring(fields) == "Parse a query given as a string argument."
    assert demo.summarize_docstring("D.pop() -- remove and return the rightmost element") == (
        "Remove and return the rightmost element")
    assert demo.summarize_docstring("f(x) -> int") == ""
    assert demo.summarize_docstring("Too short.") == ""
    long_doc = "This sentence is rather long and quite wordy. " * 30
    summary = demo.summarize_docstring(long_doc)
    assert len(summary) <= demo.MAX_CHARS and summary.endswith(".")


def test_allowlist_is_fixed_and_safe():
    assert list(demo.MODULES) == sorted(set(demo.MODULES))
    unsafe = {"this", "antigravity", "turtle", "tkinter", "idlelib", "webbrowser", "readline"}
    assert not unsafe & {m.split(".")[0] for m in demo.MODULES}


def test_demo_path_builds_lazily(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path))
    root = tmp_path / DEMO_VERSION
    assert not root.exists()
    path = demo_path("rl_val")
    assert path == root / "rl_val.jsonl" and path.is_file()
    assert all((root / f"{s}.jsonl").is_file() for s in DEMO_SPLITS)
    # Present files are reused, not rebuilt.
    stamp = path.stat().st_mtime_ns
    assert resolve_demo_uri(f"{DEMO_SCHEME}rl_val") == path
    assert path.stat().st_mtime_ns == stamp
    # A missing file triggers a rebuild of the set.
    (root / "sft_val.jsonl").unlink()
    assert demo_path("sft_val").is_file()


def test_bad_inputs(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="sft_train"):
        demo_path("nope")
    for bad in ("sft_train", "file://sft_train", "DEMO://sft_train", "demo:/sft_train"):
        with pytest.raises(ValueError):
            resolve_demo_uri(bad)
    with pytest.raises(ValueError, match="preference_val"):
        resolve_demo_uri("demo://nope")
    assert not (tmp_path / DEMO_VERSION).exists()  # bad input builds nothing


def test_build_ignores_monkeypatched_stdlib(built, tmp_path, monkeypatch):
    """Libraries patch stdlib functions on import (torch: inspect.getfile); the data
    must not depend on that."""
    def foreign(*args, **kwargs):
        """A replacement function with a docstring long enough to be collected."""

    monkeypatch.setattr(fnmatch, "fnmatch", foreign)
    monkeypatch.setattr(textwrap, "shorten", foreign)
    again = build_demo_data(tmp_path)
    for split in DEMO_SPLITS:
        assert again[split].read_bytes() == built[split].read_bytes(), split


def test_load_items_falls_back_in_process(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.warns(UserWarning, match="in-process"):
        items = demo.load_items()
    assert len(items) > 3800 and items == sorted(items)
