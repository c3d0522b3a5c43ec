"""Read raw records from JSONL, CSV, Parquet or `datasets` sources and validate them.

A record's canonical fields (``instruction``, ``response``, ``chosen``, ``rejected``)
come, in this order of precedence, from:

1. the columns ``DataSource.fields`` maps them to;
2. columns of the same name, when the record has every requested field as a string;
3. otherwise the record's own format, detected from its fields: TRL standard or
   conversational (``prompt``/``completion``, ``prompt``/``chosen``/``rejected``,
   ``messages``, implicit-prompt ``chosen``/``rejected``) or HH-RLHF text — see
   :mod:`seam_lightning.data.formats` for the rules, including how a conversational
   prompt becomes one instruction text. Fields that format does not supply are read
   as same-named columns.

CSV cells are all text; only the ``id_field`` column is read as an integer.

Every problem is raised as a `DataError` whose message names the file (or data
set), the line or record, and the field, so a bad row can be found and fixed.
"""
from __future__ import annotations

import codecs
import csv
import itertools
import json
import os
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from seam_lightning.data.formats import FormatError, convert, text_problem

JSONL_SUFFIXES = (".jsonl", ".jsonlines", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB per cell) is too small for long documents
# Longer digit strings stay text: int() refuses over 4300 digits, and no int64 id has 20.
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
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


def _decoded_lines(fh: Iterable[bytes], path: str) -> Iterator[str]:
    """Decode a binary file line by line, so a bad byte is reported with its own line number."""
    for lineno, raw in enumerate(fh, start=1):
        if lineno == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)  # Excel writes one
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} line {lineno}: not valid UTF-8 "
                            f"(byte 0x{raw[e.start]:02x} at position {e.start})") from e


def iter_csv(path: str, delimiter: str, id_field: str | None) -> Iterator[Row]:
    """Yield (origin, row dict) from a CSV/TSV file with a header row; origins give a record's first line.

    Cells are text, kept as written; the id column alone is parsed as an integer, since
    CSV has no types and ids must be integers.
    """
    # Raising the limit only lets larger cells through; nothing relies on the smaller one.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with open(path, "rb") as fh:
        # Lines keep their own line endings, which is what the csv module needs for quoted newlines.
        reader = csv.reader(_decoded_lines(fh, path), delimiter=delimiter)
        header: list[str] | None = None
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(f"{path} line {start}: invalid CSV: {e}") from e
            if not cells:
                continue  # a blank line
            if header is None:
                header = _csv_header(cells, path, start)
                continue
            origin = f"{path} line {start}"
            if len(cells) != len(header):
                raise DataError(f"{origin}: {len(cells)} cells, but the header has {len(header)} columns")
            row = dict(zip(header, cells))
            if id_field in row and _INTEGER.fullmatch(row[id_field].strip()):
                row[id_field] = int(row[id_field])
            yield origin, row


def _csv_header(cells: list[str], path: str, lineno: int) -> list[str]:
    """The column names; a repeated name would make one column silently hide another."""
    repeated = sorted({c for c in cells if cells.count(c) > 1})
    if repeated:
        raise DataError(f"{path} line {lineno}: header repeats column(s) {repeated}")
    return cells


def open_dataset(path: str, split: str) -> Any:
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
    ds = open_dataset(path, split)
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
    if suffix in (*JSONL_SUFFIXES, *PARQUET_SUFFIXES, *CSV_DELIMITERS) and not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if suffix in JSONL_SUFFIXES:
        return _iter_jsonl(path)
    if suffix in PARQUET_SUFFIXES:
        return _iter_parquet(path, columns)
    if suffix in CSV_DELIMITERS:
        return iter_csv(path, CSV_DELIMITERS[suffix], source.id_field)
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
    return _checked_text(row[column], origin, column)


def _checked_text(value: Any, origin: str, column: str) -> str:
    """Return `value` if it is usable text (see formats.text_problem), else fail naming `column`."""
    problem = text_problem(value)
    if problem:
        raise DataError(f"{origin}: field {column!r} {problem}")
    return value


def _record_texts(row: dict, origin: str, mapping: dict[str, str], explicit: Sequence[str]) -> dict[str, str]:
    """The canonical texts of one record, by the precedence in the module docstring."""
    unmapped = [name for name in mapping if name not in explicit]
    derived = {}
    # A record holding every requested field as text is canonical: its columns are read as they
    # are. A missing field, or a message list (conversational chosen/rejected), calls for its format.
    if any(not isinstance(row.get(name), str) for name in unmapped):
        try:
            derived = convert(row, unmapped)
        except FormatError as e:
            raise DataError(f"{origin}: {e}") from None
    texts = {}
    for name, column in mapping.items():
        if name in derived:
            texts[name] = _checked_text(derived[name].value, origin, derived[name].field)
        else:
            texts[name] = _text_field(row, origin, name, column)
    return texts


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
    """Read every record of `source`, keep the canonical `required` fields, validate them.

    Fields come from the columns source.fields maps them to, else from same-named
    columns or the record's own format (see the module docstring).
    """
    if source.limit is not None and source.limit < 1:
        raise DataError(f"{source.path}: limit must be a positive integer, got {source.limit!r}")
    mapping = {name: source.fields.get(name, name) for name in required}
    columns = list(dict.fromkeys([*mapping.values(), *([source.id_field] if source.id_field else [])]))
    rows = _iter_rows(source, columns)
    # islice stops reading at `limit`, so later (unvalidated) records cost nothing.
    records: list[Record] = []
    seen: dict[int, str] = {}
    for position, (origin, row) in enumerate(itertools.islice(rows, source.limit)):
        text = _record_texts(row, origin, mapping, list(source.fields))
        rid = _record_id(row, origin, source.id_field) if source.id_field else position
        if rid in seen:
            raise DataError(f"{origin}: duplicate id {rid} (also used at {seen[rid]})")
        seen[rid] = origin
        records.append(Record(id=rid, text=text, origin=origin))
    if not records:
        raise DataError(f"{source.path}: no records")
    return records
