"""Reading evaluation data and writing result files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

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


def write_json(path: str | Path, payload: dict[str, Any], default: Callable[[Any], Any] | None = None,
               allow_nan: bool = False) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically: a temporary file beside it, then ``os.replace``.

    ``default`` and ``allow_nan`` as in :func:`json.dump` (by default a NaN is an error, not invalid JSON).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, ensure_ascii=False, allow_nan=allow_nan, default=default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a result file is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
