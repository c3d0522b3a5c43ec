"""JSON-lines files: one object per line for every reader, crash-cut lines skipped."""

import json

import pytest

from seam_lightning.jsonl import append_jsonl, json_line, read_jsonl, write_jsonl_atomic

# What a 135M model writes: the three characters str.splitlines breaks on but JSON
# leaves raw, control characters, non-ASCII text and a lone surrogate's replacement.
GENERATED = "a\x85b\u2028c\u2029d\x1de\x0bf\x0cg\x1c\r\nπ—\ufffd"


@pytest.mark.parametrize("write", ["append", "atomic"])
def test_generated_text_keeps_one_object_per_line_for_splitlines(tmp_path, write):
    rows = [{"candidates": [GENERATED, "ok"], "i": 0}, {"text": GENERATED * 2, "i": 1}]
    path = tmp_path / "rows.jsonl"
    if write == "append":
        append_jsonl(path, rows[:1])
        append_jsonl(path, rows[1:])
    else:
        write_jsonl_atomic(path, rows)
    text = path.read_text(encoding="utf-8")
    # The readers users reach for: str.splitlines, iterating the file, and ours.
    assert [json.loads(line) for line in text.splitlines()] == rows
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == rows
    assert read_jsonl(path, dict) == (rows, False)
    assert "π—" in text  # non-ASCII text stays readable UTF-8


def test_json_line_is_plain_json_with_one_newline():
    line = json_line({"b": GENERATED, "a": 1}, sort_keys=True)
    assert line.endswith("\n") and line.count("\n") == 1 and len(line.splitlines()) == 1
    assert json.loads(line) == {"a": 1, "b": GENERATED}
    assert line.startswith('{"a": 1')


def test_a_line_cut_by_a_kill_is_skipped_and_the_next_append_starts_fresh(tmp_path):
    path = tmp_path / "cache.jsonl"
    append_jsonl(path, [{"i": 0}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"i": 1, "text": "cut sh')  # killed mid-write
    entries, open_line = read_jsonl(path, dict)
    assert entries == [{"i": 0}] and open_line
    append_jsonl(path, [{"i": 2}], open_line=open_line)
    assert read_jsonl(path, dict) == ([{"i": 0}, {"i": 2}], False)
