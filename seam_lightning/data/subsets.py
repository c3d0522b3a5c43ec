"""Write a subset of a data source in the source's own format, columns and order.

A scoring job splits D_rl into the prompts it keeps and those it prunes; another
trainer (TRL, OpenRLHF, verl) must read the kept file exactly as it read the
original. So the rows are copied from the source as they are, not rebuilt from our
canonical fields: JSON lines byte for byte, CSV/TSV rows with the same header and
delimiter, Parquet rows with the same schema, a `datasets` split with the same
features (``save_to_disk``). Each output is written atomically.

Rows are numbered as :func:`seam_lightning.data.records.load_records` numbers them
(blank lines skipped, at most ``source.limit``), so position ``i`` is the ``i``-th record.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import os
from collections.abc import Collection
from pathlib import Path

from seam_lightning.data.records import (
    CSV_DELIMITERS,
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    DataError,
    DataSource,
    iter_csv,
    open_dataset,
)
from seam_lightning.files import atomic_directory, atomic_path


def subset_suffix(source: DataSource) -> str:
    """The file suffix a subset of ``source`` gets (``""``: a `datasets` folder)."""
    suffix = os.path.splitext(_local_path(source))[1].lower()
    return suffix if suffix in (*JSONL_SUFFIXES, *PARQUET_SUFFIXES, *CSV_DELIMITERS) else ""


def write_subsets(source: DataSource, total: int, parts: dict[str | Path, Collection[int]]) -> list[Path]:
    """Write, for each ``{path: positions}``, the source's records at those positions (0-based, < ``total``).

    ``total`` is how many records were read (``source.limit`` or the whole source); rows
    after it are in no part. Returns the written paths, in ``parts`` order.
    """
    path = _local_path(source)
    wanted = {Path(out): set(positions) for out, positions in parts.items()}
    for out, positions in wanted.items():
        if positions and not 0 <= min(positions) <= max(positions) < total:
            raise ValueError(f"{out}: positions must lie in [0, {total})")
    suffix = subset_suffix(source)
    if suffix in JSONL_SUFFIXES:
        _write_jsonl_subsets(path, total, wanted)
    elif suffix in CSV_DELIMITERS:
        _write_csv_subsets(path, CSV_DELIMITERS[suffix], total, wanted)
    elif suffix in PARQUET_SUFFIXES:
        _write_parquet_subsets(path, wanted)
    else:
        _write_dataset_subsets(source, wanted)
    return list(wanted)


def _local_path(source: DataSource) -> str:
    path = os.path.expanduser(source.path)
    if path.startswith("demo://"):
        from seam_lightning.data.demo import resolve_demo_uri

        path = str(resolve_demo_uri(path))
    return path


def _write_jsonl_subsets(path: str, total: int, wanted: dict[Path, set[int]]) -> None:
    """Copy each record's line as it is (byte for byte, a final newline added where missing)."""
    lines: dict[Path, list[bytes]] = {out: [] for out in wanted}
    with open(path, "rb") as fh:
        records = (raw for raw in fh if raw.strip())
        for position, raw in enumerate(itertools.islice(records, total)):
            if position == 0:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            for out, positions in wanted.items():
                if position in positions:
                    lines[out].append(raw if raw.endswith(b"\n") else raw + b"\n")
    for out, chunk in lines.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"".join(chunk))


def _write_csv_subsets(path: str, delimiter: str, total: int, wanted: dict[Path, set[int]]) -> None:
    rows = [row for _, row in itertools.islice(iter_csv(path, delimiter, None), total)]
    header = _csv_columns(path, delimiter)
    for out, positions in wanted.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header, delimiter=delimiter)
            writer.writeheader()
            writer.writerows(row for position, row in enumerate(rows) if position in positions)


def _csv_columns(path: str, delimiter: str) -> list[str]:
    """The header row of a CSV/TSV file (its first non-blank row)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for cells in csv.reader(fh, delimiter=delimiter):
            if cells:
                return cells
    raise DataError(f"{path}: no header row")


def _write_parquet_subsets(path: str, wanted: dict[Path, set[int]]) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for out, positions in wanted.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            pq.write_table(table.take(sorted(positions)), tmp)


def _write_dataset_subsets(source: DataSource, wanted: dict[Path, set[int]]) -> None:
    dataset = open_dataset(os.path.expanduser(source.path), source.split)
    for out, positions in wanted.items():
        with atomic_directory(out) as tmp:
            dataset.select(sorted(positions)).save_to_disk(str(tmp))
