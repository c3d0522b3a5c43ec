"""Tests for seam_lightning.data.records: readers, validation and error messages."""
import json
import os
import re

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never touch the network from tests

import pytest

from seam_lightning.data.records import DataError, DataSource, Record, load_records


def write_jsonl(path, rows):
    """Write `rows` (dicts, or raw str lines) as JSON lines and return the path as str."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def write_parquet(path, rows):
    """Write `rows` (dicts) to a Parquet file and return the path as str."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def test_jsonl_happy_path_with_mapping_and_position_ids(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "Q0", "answer": "A0", "x": 1},
                                          {"question": "  Q1 ", "answer": "A1"}])
    recs = load_records(DataSource(p, fields={"instruction": "question", "unused": "zzz"}),
                        ["instruction", "answer"])
    assert recs == [Record(0, {"instruction": "Q0", "answer": "A0"}, f"{p} line 1"),
                    Record(1, {"instruction": "  Q1 ", "answer": "A1"}, f"{p} line 2")]


def test_id_field(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"uid": 42, "t": "a"}, {"uid": 7, "t": "b"}])
    assert [r.id for r in load_records(DataSource(p, id_field="uid"), ["t"])] == [42, 7]


def test_limit_stops_before_bad_records(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"t": "a"}, {"t": "b"}, {"t": 3}, "not json"])
    recs = load_records(DataSource(p, limit=2), ["t"])
    assert [r.text["t"] for r in recs] == ["a", "b"]


def test_blank_lines_skipped_and_line_numbers_kept(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"t": "a"}, "", "   ", {"t": "b"}])
    recs = load_records(DataSource(p), ["t"])
    assert [(r.id, r.origin) for r in recs] == [(0, f"{p} line 1"), (1, f"{p} line 4")]


def test_missing_field_names_mapping_and_available_fields(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "q"}, {"prompt": "q"}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 2: missing field 'question' "
                                                  "(mapped from 'instruction'); record has fields ['prompt']")):
        load_records(DataSource(p, fields={"instruction": "question"}), ["instruction"])


def test_wrong_type(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"t": "a"}, {"t": 5}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 2: field 't' must be a string, got int")):
        load_records(DataSource(p), ["t"])


def test_empty_text(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"t": ""}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 1: field 't' is empty")):
        load_records(DataSource(p), ["t"])


def test_whitespace_only_text(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"t": "a"}, {"t": "a"}, {"t": " \n\t"}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 3: field 't' is empty")):
        load_records(DataSource(p), ["t"])


def test_undecodable_line_reports_its_line_number(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"t": "a"}\n\n{"t": "b"}\n{"t\xff": "c"}\n{"t": "d"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path} line 4: not valid UTF-8 (byte 0xff at position 3)")):
        load_records(DataSource(str(path)), ["t"])


def test_invalid_json(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"t": "a"}, '{"t": '])
    with pytest.raises(DataError, match=re.escape(f"{p} line 2: invalid JSON: ")):
        load_records(DataSource(p), ["t"])


def test_non_object_line(tmp_path):
    p = write_jsonl(tmp_path / "d.json", [{"t": "a"}, "[1, 2]"])
    with pytest.raises(DataError, match=re.escape(f"{p} line 2: expected a JSON object, got list")):
        load_records(DataSource(p), ["t"])


def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=re.escape(f"{p}: no such file")):
        load_records(DataSource(p), ["t"])


def test_empty_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DataError, match=re.escape(f"{path}: no records")):
        load_records(DataSource(str(path)), ["t"])


def test_duplicate_id_names_both_origins(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "t": "a"}, {"id": 2, "t": "b"}, {"id": 1, "t": "c"}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 3: duplicate id 1 (also used at {p} line 1)")):
        load_records(DataSource(p, id_field="id"), ["t"])


@pytest.mark.parametrize("bad, type_name", [("7", "str"), (True, "bool"), (1.5, "float")])
def test_non_int_id(tmp_path, bad, type_name):
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": 0, "t": "a"}, {"id": bad, "t": "b"}])
    with pytest.raises(DataError, match=re.escape(f"{p} line 2: id field 'id' must be an integer, got {type_name}")):
        load_records(DataSource(p, id_field="id"), ["t"])


def test_parquet_happy_path(tmp_path):
    p = write_parquet(tmp_path / "d.parquet", [{"q": "a", "extra": 1}, {"q": "b", "extra": 2}])
    recs = load_records(DataSource(p, fields={"prompt": "q"}), ["prompt"])
    assert recs == [Record(0, {"prompt": "a"}, f"parquet {p} record 0"),
                    Record(1, {"prompt": "b"}, f"parquet {p} record 1")]


def test_parquet_missing_field_names_record(tmp_path):
    p = write_parquet(tmp_path / "d.parquet", [{"q": "a"}, {"q": None}])
    with pytest.raises(DataError, match=re.escape(f"parquet {p} record 1: field 'q' must be a string")):
        load_records(DataSource(p), ["q"])
    with pytest.raises(DataError, match=re.escape(f"parquet {p} record 0: missing field 'prompt'")):
        load_records(DataSource(p), ["prompt"])


@pytest.fixture
def saved_dataset_dict(tmp_path):
    """A DatasetDict with a 'train' split saved with save_to_disk."""
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(
        [{"text": "hello", "label": 1}, {"text": "world", "label": 0}])})
    path = str(tmp_path / "saved")
    dd.save_to_disk(path)
    return path


def test_datasets_saved_dir(saved_dataset_dict):
    recs = load_records(DataSource(saved_dataset_dict, split="train", id_field="label"), ["text"])
    where = f"dataset {saved_dataset_dict!r} split 'train'"
    assert recs == [Record(1, {"text": "hello"}, f"{where} record 0"),
                    Record(0, {"text": "world"}, f"{where} record 1")]


def test_datasets_unknown_split_lists_available(saved_dataset_dict):
    msg = f"dataset {saved_dataset_dict!r} split 'test': no such split; available splits: ['train']"
    with pytest.raises(DataError, match=re.escape(msg)):
        load_records(DataSource(saved_dataset_dict, split="test"), ["text"])


def test_datasets_loader_failure_is_wrapped(tmp_path):
    p = str(tmp_path / "not_a_dataset")
    with pytest.raises(DataError, match=re.escape(f"dataset {p!r} split 'train': cannot load: ")) as info:
        load_records(DataSource(p), ["text"])
    assert info.value.__cause__ is not None
