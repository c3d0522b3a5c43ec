"""Reading evaluation data: columns of texts from any data source, with field mappings."""

from __future__ import annotations

from typing import Sequence

from seam_lightning.data.records import DataSource, load_records


def parse_fields(spec: str | None) -> dict[str, str]:
    """``"instruction=prompt,chosen=good"`` → ``{"instruction": "prompt", "chosen": "good"}`` (canonical=column)."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise ValueError(f"bad field mapping {item!r}: write canonical=column, e.g. instruction=prompt")
        mapping[name.strip()] = column.strip()
    return mapping


def load_columns(path: str, fields: Sequence[str], limit: int | None = None, split: str = "train",
                 mapping: dict[str, str] | None = None) -> dict[str, list[str]]:
    """The texts of ``fields`` from a JSONL/Parquet file, a `datasets` source or ``demo://<split>``, column by column."""
    records = load_records(DataSource(path, split=split, fields=dict(mapping or {}), limit=limit), list(fields))
    return {name: [record.text[name] for record in records] for name in fields}
