"""Subsets of a data source are written in its own format, columns and order."""

import csv
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from seam_lightning.data.records import DataSource, load_records
from seam_lightning.data.subsets import subset_suffix, write_subsets

ROWS = [{"prompt": f"Question {i}, with a comma", "completion": f"Answer {i}\non two lines", "extra": str(i)}
        for i in range(6)]


def _split(source, tmp_path, positions):
    total = len(load_records(source, ["instruction", "response"]))
    suffix = subset_suffix(source)
    kept, pruned = tmp_path / f"kept{suffix}", tmp_path / f"pruned{suffix}"
    rest = [p for p in range(total) if p not in positions]
    write_subsets(source, total, {kept: rest, pruned: positions})
    return kept, pruned


def test_jsonl_lines_are_copied_byte_for_byte_skipping_blank_lines_and_honouring_limit(tmp_path):
    lines = [json.dumps(r, indent=None, separators=(",", ":")) for r in ROWS]
    path = tmp_path / "in.jsonl"
    path.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]))  # a blank line, and no final newline
    kept, pruned = _split(DataSource(str(path), limit=5), tmp_path, [1, 4])
    assert kept.read_text().splitlines() == [lines[0], lines[2], lines[3]]  # row 5 lies beyond the limit
    assert pruned.read_text() == lines[1] + "\n" + lines[4] + "\n"


def test_csv_keeps_header_delimiter_and_quoted_cells(tmp_path):
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        path = tmp_path / f"in{suffix}"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["prompt", "completion", "extra"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(ROWS)
        kept, pruned = _split(DataSource(str(path)), tmp_path, [0, 5])
        with open(pruned, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            assert reader.fieldnames == ["prompt", "completion", "extra"]
            assert list(reader) == [ROWS[0], ROWS[5]]
        with open(kept, newline="") as fh:
            assert list(csv.DictReader(fh, delimiter=delimiter)) == ROWS[1:5]


def test_parquet_keeps_schema_and_order(tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.Table.from_pylist([{**r, "n": i} for i, r in enumerate(ROWS)])
    pq.write_table(table, path)
    kept, pruned = _split(DataSource(str(path)), tmp_path, [3, 1])
    assert pq.read_table(pruned).equals(table.take([1, 3]))
    assert pq.read_table(kept).schema.equals(table.schema)


def test_datasets_folder_is_saved_with_its_features(tmp_path):
    saved = tmp_path / "ds"
    ds = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": r["prompt"]},
                                                   {"role": "assistant", "content": r["completion"]}],
                                      "extra": r["extra"]} for r in ROWS])
    ds.save_to_disk(str(saved))
    kept, pruned = _split(DataSource(str(saved)), tmp_path, [2])
    assert subset_suffix(DataSource(str(saved))) == ""
    back = datasets.load_from_disk(str(pruned))
    assert back.features == ds.features and back.to_list() == [ds[2]]
    assert datasets.load_from_disk(str(kept))["extra"] == ["0", "1", "3", "4", "5"]
