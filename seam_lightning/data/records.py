"""Read raw records from JSONL, Parquet or `datasets` sources and validate them.

Every problem is raised as a `DataError` whose message names the file (or data
set), the line or record, and the field, so a bad row can be found and fixed.
"""
from __future__ import annotations

import codecs
import itertools
import json
import os
import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

JSONL_SUFFIXES = (".jsonl", ".jsonlines", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
_BATCH = 1024  # rows per Arrow batch when iterating a `datasets.Dataset`

Row = tuple[str, Any]  # (origin, raw record as parsed; validated later)


class DataError(ValueError):
    """Bad input data; the message names the file, the line or record, and the field."""


@dataclass(frozen=True)
class DataSource:
    """Where one data set comes from (typed so LightningCLI/jsonargparse can read it from YAML)."""

    path: str
    split: str = "train"
    fields: dict[str, str] = field(default_factory=dict)
    id_field: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class Record:
    """One validated record: a stable id, its canonical texts, and where it came from."""

    id: int
    text: dict[str, str]
    origin: str


def _iter_jsonl(path: str) -> Iterator[Row]:
    """Yield (origin, parsed line) from a JSON-lines file, skipping blank lines.

    The file is read in binary so a bad byte is reported with its own line number
    instead of failing the whole read with an offset into the file.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            origin = f"{path} line {lineno}"
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # written by some editors
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{origin}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at position {e.start})"
                ) from e
            try:
                value = json.loads(line)
            except RecursionError:
                raise DataError(f"{origin}: invalid JSON: nested too deeply") from None
            except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
                raise DataError(f"{origin}: invalid JSON: {e}") from e
            if not isinstance(value, dict):
                raise DataError(f"{origin}: expected a JSON object, got {type(value).__name__}")
            yield origin, value


def _iter_parquet(path: str, columns: list[str]) -> Iterator[Row]:
    """Yield (origin, row dict) from a Parquet file, numbering records from 0."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types (ArrowInvalid, OSError, ...)
        raise DataError(f"{path}: cannot read Parquet file: {e}") from e
    # Drop unused columns before to_pylist() (cheap, zero-copy), but only when all
    # are present, so a missing-field error can still list what the record has.
    if all(c in table.column_names for c in columns):
        table = table.select(columns)
    for i, row in enumerate(table.to_pylist()):
        yield f"parquet {path} record {i}", row


def _open_dataset(path: str, split: str) -> Any:
    """Load one split of a `datasets` source: a save_to_disk dir, a hub name or a local path."""
    import datasets

    where = f"dataset {path!r} split {split!r}"
    saved = os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")
    )
    try:
        ds = datasets.load_from_disk(path) if saved else datasets.load_dataset(path, split=split)
    except Exception as e:  # missing files, unknown split, no network, ... all look alike to the user
        raise DataError(f"{where}: cannot load: {type(e).__name__}: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{where}: no such split; available splits: {sorted(ds)}")
        ds = ds[split]
    return ds


def _iter_dataset(path: str, split: str, columns: list[str]) -> Iterator[Row]:
    """Yield (origin, row dict) from a `datasets` split, reading Arrow batches lazily."""
    ds = _open_dataset(path, split)
    # Same reasoning as for Parquet: skip decoding unused (possibly heavy) columns.
    if all(c in ds.column_names for c in columns):
        ds = ds.select_columns(columns)
    i = 0
    for batch in ds.iter(batch_size=_BATCH):
        names = list(batch)
        for values in zip(*(batch[n] for n in names)):
            yield f"dataset {path!r} split {split!r} record {i}", dict(zip(names, values))
            i += 1


def _iter_rows(source: DataSource, columns: list[str]) -> Iterator[Row]:
    """Pick the reader for `source.path` and yield (origin, raw record)."""
    path = os.path.expanduser(source.path)
    if path.startswith("demo://"):
        # Imported lazily: the demo module is optional for plain-file users.
        from seam_lightning.data.demo import resolve_demo_uri

        path = str(resolve_demo_uri(path))
    suffix = os.path.splitext(path)[1].lower()
    if suffix in JSONL_SUFFIXES + PARQUET_SUFFIXES and not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if suffix in JSONL_SUFFIXES:
        return _iter_jsonl(path)
    if suffix in PARQUET_SUFFIXES:
        return _iter_parquet(path, columns)
    return _iter_dataset(path, source.split, columns)


def _text_field(row: dict, origin: str, name: str, column: str) -> str:
    """Return the validated text of `column` (canonical `name`), kept as-is."""
    if column not in row:
        hint = f" (mapped from {name!r})" if column != name else ""
        keys = list(row)
        # Keys are shown cut at 40 characters: a stray 1 MB key must not flood the message.
        shown = [k if len(k) <= 40 else f"{k[:37]}..." for k in map(str, keys[:10])]
        shown += ["..."] if len(keys) > 10 else []
        raise DataError(f"{origin}: missing field {column!r}{hint}; record has fields {shown}")
    value = row[column]
    if not isinstance(value, str):
        raise DataError(f"{origin}: field {column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{origin}: field {column!r} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone \ud800 escape in JSON; tokenizers reject it
        raise DataError(f"{origin}: field {column!r} holds an unpaired surrogate "
                        f"{value[e.start]!r} at character {e.start}") from e
    return value


def _record_id(row: dict, origin: str, id_field: str) -> int:
    """Return the integer id stored in `id_field` (bool is rejected: it is not an id)."""
    if id_field not in row:
        raise DataError(f"{origin}: missing id field {id_field!r}")
    value = row[id_field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{origin}: id field {id_field!r} must be an integer, got {type(value).__name__}")
    if not -(2**63) <= value < 2**63:  # ids become int64 tensors in every batch
        raise DataError(f"{origin}: id field {id_field!r} must fit in a signed 64-bit integer, "
                        f"got {reprlib.repr(value)}")
    return value


def load_records(source: DataSource, required: Sequence[str]) -> list[Record]:
    """Read every record of `source`, keep the canonical `required` fields (mapped through source.fields), validate them."""
    if source.limit is not None and source.limit < 1:
        raise DataError(f"{source.path}: limit must be a positive integer, got {source.limit!r}")
    mapping = {name: source.fields.get(name, name) for name in required}
    columns = list(dict.fromkeys([*mapping.values(), *([source.id_field] if source.id_field else [])]))
    rows = _iter_rows(source, columns)
    # islice stops reading at `limit`, so later (unvalidated) records cost nothing.
    records: list[Record] = []
    seen: dict[int, str] = {}
    for position, (origin, row) in enumerate(itertools.islice(rows, source.limit)):
        text = {name: _text_field(row, origin, name, col) for name, col in mapping.items()}
        rid = _record_id(row, origin, source.id_field) if source.id_field else position
        if rid in seen:
            raise DataError(f"{origin}: duplicate id {rid} (also used at {seen[rid]})")
        seen[rid] = origin
        records.append(Record(id=rid, text=text, origin=origin))
    if not records:
        raise DataError(f"{source.path}: no records")
    return records
