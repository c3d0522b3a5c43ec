"""The architecture matrix's checkpoints: one tiny random checkpoint per decoder family (``tests/families.py``),
built once per session, and the same with sliding windows shorter than the test sequences."""

from __future__ import annotations

import pytest
from families import FAMILIES, WINDOWED_FAMILIES, build_family_model_dir
from plain_reference import chat_ids
from transformers import AutoConfig

from seam_lightning.models.loading import load_policy, load_tokenizer

WINDOW = 4  # tokens a sliding-window layer sees; every test sequence is longer


def _built_once(tmp_path_factory, prefix: str, **options):
    """family -> its checkpoint folder, built on first use and kept for the session."""
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = build_family_model_dir(tmp_path_factory.mktemp(f"{prefix}-{family}"), family, **options)
        return built[family]

    return get


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    return _built_once(tmp_path_factory, "family")


@pytest.fixture(scope="session")
def windowed_dirs(tmp_path_factory):
    """Checkpoints whose sliding-window layers see WINDOW tokens."""
    return _built_once(tmp_path_factory, "windowed", sliding_window=WINDOW)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model_dir(family_dirs, family):
    return family_dirs(family)


@pytest.fixture(scope="module")
def model_type(model_dir) -> str:
    return AutoConfig.from_pretrained(model_dir).model_type


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return load_tokenizer(str(model_dir))


@pytest.fixture(scope="module")
def policy(model_dir):
    return load_policy(str(model_dir)).eval()


@pytest.fixture(scope="module")
def chats(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    return chat_ids(tokenizer)


@pytest.fixture(scope="module", params=WINDOWED_FAMILIES)
def windowed(request, windowed_dirs):
    """(policy, tokenizer, chats) of a windowed checkpoint."""
    path = windowed_dirs(request.param)
    tokenizer = load_tokenizer(str(path))
    policy = load_policy(str(path)).eval()
    assert policy.config.sliding_window == WINDOW
    chats = chat_ids(tokenizer)
    assert min(len(p) for p in chats[0]) > 2 * WINDOW
    return policy, tokenizer, chats
