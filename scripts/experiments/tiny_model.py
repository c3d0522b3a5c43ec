"""The benchmarks' quick path: a tiny random llama built from a config by the tests' own builder."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / "tests"


def tiny_model_dir(hidden_size: int = 64) -> str:
    """A fresh tiny model folder (model and tokenizer) in a temporary directory; nothing is downloaded."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from tiny import build_tiny_model_dir

    return str(build_tiny_model_dir(Path(tempfile.mkdtemp()) / "tiny", hidden_size=hidden_size))
