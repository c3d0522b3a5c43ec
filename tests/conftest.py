import os
import sys
from pathlib import Path

import pytest

# Tests never reach a hub; offline mode also makes a missing file fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from openai_server import FakeOpenAI  # noqa: E402
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


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    """Never send a developer's real key to the test server, nor a request to their endpoint; local
    endpoints get 'EMPTY'."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server():
    """The tests' OpenAI-compatible server (tests/openai_server.py) with its default numbered replies."""
    with FakeOpenAI() as running:
        yield running
