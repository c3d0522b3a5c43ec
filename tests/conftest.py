import os
import sys
from pathlib import Path

import pytest

# Tests never reach a hub; offline mode also makes a missing file fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny llama with a ChatML chat template."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-chat"), chat_template=True)


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory) -> Path:
    """A tiny llama whose tokenizer has no chat template (plain prompt template)."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-plain"), chat_template=False)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep each test session's package cache (demo data, bundled models) out of the user's."""
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
