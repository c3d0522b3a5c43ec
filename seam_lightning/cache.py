"""Where seam-lightning keeps what it builds once: demo data, dequantised bundled models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SEAM_LIGHTNING_CACHE`` if set, else ``~/.cache/seam_lightning``."""
    env = os.environ.get("SEAM_LIGHTNING_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "seam_lightning"
