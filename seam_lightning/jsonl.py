"""JSON-lines files that survive a crash: append-only logs and whole files renamed into place.

Appending (caches, progress) writes one fsync'ed line per entry.
A line is one ``write`` to an ``O_APPEND`` file, so processes appending to the same
file (DDP ranks) do not interleave on a local file system. A line cut short by a
kill is skipped with a warning naming the file and line; the next append starts on
a fresh line. Text stays UTF-8 as written, except the three characters that
``str.splitlines`` treats as line breaks, which are escaped so that every reader
sees one object per line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seam_lightning.files import write_text_atomic

log = logging.getLogger(__name__)

# Generated text can hold these, and json.dumps(ensure_ascii=False) leaves them raw;
# str.splitlines (and editors) would then cut a record in two. Outside strings JSON
# never contains them, so escaping them is always valid JSON for the same object.
_LINE_BREAKS_JSON_LEAVES_RAW = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(obj: Any, sort_keys: bool = False) -> str:
    """``obj`` as one JSON line (with its ``\\n``) that no line splitter cuts: UTF-8 kept, line breaks escaped."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=sort_keys).translate(_LINE_BREAKS_JSON_LEAVES_RAW) + "\n"


def read_jsonl(path: str | Path, parse: Callable[[dict[str, Any]], Any], what: str = "cache"
               ) -> tuple[list[Any], bool]:
    """``parse`` applied to each line's object, skipping (with a warning) lines that fail.

    Returns ``(entries, open_line)``; ``open_line`` is True when the file ends without a
    newline (a kill mid-write), so the next append must begin with one. A missing file
    is empty.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    entries = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise TypeError(f"a line must hold a JSON object, not {type(obj).__name__}")
            entries.append(parse(obj))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s line %d: skipping a corrupt %s line (%s: %s)", path, lineno, what, type(e).__name__, e)
    return entries, bool(data) and not data.endswith(b"\n")


def append_jsonl(path: str | Path, objects: list[dict[str, Any]], open_line: bool = False) -> None:
    """Append ``objects`` as lines with one ``write`` and fsync before returning (raises OSError)."""
    if not objects:
        return
    path = Path(path)
    text = "".join(json_line(obj) for obj in objects)
    data = (("\n" if open_line else "") + text).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view):]
        os.fsync(fd)  # on disk before we move on: a crash now loses nothing already computed
    finally:
        os.close(fd)


def write_jsonl_atomic(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines to ``path`` atomically (:func:`seam_lightning.files.atomic_path`)."""
    return write_text_atomic(path, "".join(json_line(row) for row in rows))
