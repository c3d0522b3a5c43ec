"""Files and folders that are either the old version or the complete new one, never half of one.

Every file the package writes whole (checkpoints, JSON and JSONL results, scores,
demo data, caches, exports, the WordNet copy) goes through :func:`atomic_path` or
:func:`atomic_directory`: the new content is written beside its final place,
flushed to disk, renamed over the old one in a single step, and the folder's
entry is flushed too, so a crash or a power cut leaves the previous version or
the new one, and readers on other ranks never see a partial file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SHARED_FILE_MODE = 0o644
"""Mode of written files: temporary files start private (0600), but caches and results may be shared."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it replaces ``path``.

    After the ``with`` body the temporary file is fsync'ed, made readable to others,
    renamed over ``path`` and the folder fsync'ed; if the body raises, the temporary
    file is removed and ``path`` is left as it was. The name is unique per process and
    call, so DDP ranks writing the same file at once do not collide (the last rename wins,
    each one whole).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, SHARED_FILE_MODE)
        os.replace(tmp, path)  # atomic: tmp is in the same folder, hence on the same file system
        fsync_directory(path.parent)  # the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends on every platform) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(path: str | Path, payload: Any, default: Callable[[Any], Any] | None = None,
               allow_nan: bool = False) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically.

    ``default`` and ``allow_nan`` as in :func:`json.dumps` (by default a NaN is an error,
    raised before anything is written, rather than a file other tools cannot parse).
    """
    text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=allow_nan, default=default) + "\n"
    return write_text_atomic(path, text)


def write_cache_file(path: str | Path, write: Callable[[Path], None]) -> bool:
    """``write(temporary path)`` then put it at ``path`` atomically; a failure costs the cache, never the run.

    For caches only: a read-only or full disk gives a warning and False instead of an error.
    """
    try:
        with atomic_path(path) as tmp:
            write(tmp)
        return True
    except (OSError, RuntimeError) as e:  # faiss reports I/O errors as RuntimeError
        log.warning("cannot write cache %s (%s); continuing without it", path, e)
        return False


@contextmanager
def atomic_directory(path: str | Path, keep_existing: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; on success it replaces the folder ``path``.

    The old folder, if any, is moved aside, the new one renamed into place and the old one
    deleted. With ``keep_existing`` an existing ``path`` (e.g. built meanwhile by another
    rank) is kept and the new folder dropped. If another process puts a folder at ``path``
    between our two renames, theirs is kept. If the body raises, ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; models and corpora may be shared
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        if keep_existing and path.exists():
            return
        old = path.with_name(f".{path.name}.old.{os.getpid()}.{uuid.uuid4().hex[:12]}")
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():
                raise  # not a race with another writer: a real failure
        fsync_directory(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_directory(directory: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    # Reopened rather than fsync'ed by the writer: many writers (torch.save, pyarrow,
    # faiss, save_pretrained) take a path and close their own handle.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
