"""Atomic files and folders: the old version or the complete new one, never half of one."""

import json
import os
import stat

import pytest

from seam_lightning.files import atomic_directory, atomic_path, write_cache_file, write_json, write_text_atomic


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "result.txt"
    write_text_atomic(path, "old\n")
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path  # beside it: the rename stays on one file system
        tmp.write_text("new\n")
        assert path.read_text() == "old\n"  # readers see the old file until the rename
    assert path.read_text() == "new\n"
    assert _names(path.parent) == ["result.txt"]


def test_a_crash_in_the_body_keeps_the_old_file(tmp_path):
    path = tmp_path / "result.txt"
    write_text_atomic(path, "old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert _names(tmp_path) == ["result.txt"]


def test_written_files_are_readable_by_others(tmp_path):
    path = write_text_atomic(tmp_path / "shared.txt", "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_write_json_refuses_nan_before_touching_the_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(ValueError):
        write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    write_json(path, {"a": float("nan")}, allow_nan=True)
    assert path.read_text() == '{\n  "a": NaN\n}\n'


def test_write_cache_file_warns_instead_of_failing(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    assert write_cache_file(blocker / "cache.bin", lambda tmp: tmp.write_bytes(b"1")) is False
    assert "cannot write cache" in caplog.text
    assert write_cache_file(tmp_path / "cache.bin", lambda tmp: tmp.write_bytes(b"1")) is True
    assert (tmp_path / "cache.bin").read_bytes() == b"1"


def test_atomic_directory_replaces_the_folder(tmp_path):
    target = tmp_path / "export"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert _names(target) == ["b.txt"]  # the whole folder replaced, not merged
    assert _names(tmp_path) == ["export"]


def test_atomic_directory_keeps_the_old_folder_on_error_and_the_existing_one_when_asked(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "partial").write_text("x")
            raise RuntimeError("killed")
    assert _names(target) == ["config.json"]
    with atomic_directory(target, keep_existing=True) as tmp:  # another rank built it first
        (tmp / "mine.json").write_text("{}")
    assert _names(target) == ["config.json"]
    assert _names(tmp_path) == ["model"]
