from pathlib import Path

from seam_lightning.cache import cache_root


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("SEAM_LIGHTNING_CACHE")
    assert cache_root() == Path.home() / ".cache" / "seam_lightning"
