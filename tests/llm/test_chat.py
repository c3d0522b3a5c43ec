"""The chat back ends (seam_lightning/llm/chat.py): OpenAIBackend against the real openai client and the tests'
own HTTP server (back-off, Retry-After, time-outs, errors that fail at once, the key), and TransformersBackend
on the tiny local model.

Nothing is patched in the client: every request goes over HTTP to `FakeOpenAI`. Back-off waits are recorded
through the backend's replaceable ``_sleep`` (`recording_backend`).
"""

import time

import pytest

from openai_server import MODEL, Failure, recording_backend
from seam_lightning.llm.chat import ChatBackendError, ChatRequestRejected, OpenAIBackend, TransformersBackend
from seam_lightning.seam.sources.llm.prompts import render_worse_answers_prompt


def test_backoff_is_capped(server):
    b = recording_backend(server, backoff_seconds=1.0, max_backoff_seconds=3.0, max_retries=4)
    server.fail_next(*[Failure(503)] * 4)
    b.complete("x", temperature=0.0, max_tokens=5)
    assert b.delays[-1] == 3.0 and all(d <= 3.0 for d in b.delays) and len(b.delays) == 4


# "300" and "0" are waited as asked: the openai client's own retries would give up at once on
# the first and back off on its own on the second (why OpenAIBackend keeps its retry loop).
@pytest.mark.parametrize("header, wait", [("7", 7.0), ("0.25", 0.25), ("300", 300.0), ("0", 0.0)])
def test_retry_after_is_honoured(server, header, wait):
    b = recording_backend(server)
    server.fail_next(Failure(429, retry_after=header))
    b.complete("x", temperature=0.0, max_tokens=5)
    assert b.delays == [wait] and len(server.requests) == 2


def test_retry_after_forms():
    from types import SimpleNamespace

    from email.utils import formatdate

    from seam_lightning.llm.chat import _retry_after

    def error(**headers):
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert _retry_after(error(**{"retry-after-ms": "1500"})) == 1.5
    assert _retry_after(error(**{"retry-after": "2"})) == 2.0
    assert 25 <= _retry_after(error(**{"retry-after": formatdate(time.time() + 30, usegmt=True)})) <= 30
    assert _retry_after(error(**{"retry-after": "soon"})) is None  # malformed: our own back-off
    assert _retry_after(error()) is None and _retry_after(RuntimeError("no response")) is None


def test_timeout_is_retried(server):
    b = recording_backend(server, timeout=0.3)
    server.fail_next(Failure.timeout(2.0))
    started = time.monotonic()
    completion = b.complete(render_worse_answers_prompt(None, "q", "a", 2), temperature=0.0, max_tokens=5)
    assert time.monotonic() - started < 2.0  # the client gave up on the slow reply
    assert completion.text.count("Wrong answer") == 2
    assert len(server.requests) == 2 and b.usage.retries == 1 and len(b.delays) == 1


def test_retries_run_out_with_a_clear_error(server):
    b = recording_backend(server, max_retries=2)
    server.fail_next(*[Failure(500)] * 5)
    with pytest.raises(ChatBackendError, match="giving up after 3 attempts; last error: HTTP 500"):
        b.complete("x", temperature=0.0, max_tokens=5)
    assert len(server.requests) == 3


@pytest.mark.parametrize("status, error", [(400, ChatRequestRejected), (422, ChatRequestRejected),
                                           (403, ChatBackendError), (418, ChatBackendError)])
def test_other_4xx_fail_at_once(server, status, error):
    b = recording_backend(server)
    server.fail_next(Failure(status))
    with pytest.raises(error, match=rf"(?=.*'fake-model')(?=.*HTTP {status})"):
        b.complete("x", temperature=0.0, max_tokens=5)
    assert len(server.requests) == 1 and b.delays == []


def test_api_key(monkeypatch, server):
    with pytest.raises(ValueError, match="set the environment variable SEAM_TEST_NO_KEY"):
        OpenAIBackend("gpt-4o", api_key_env="SEAM_TEST_NO_KEY")  # OpenAI's endpoint needs a key
    monkeypatch.setenv("SEAM_TEST_KEY", "sk-test-123")
    b = OpenAIBackend("gpt-4o", api_key_env="SEAM_TEST_KEY")
    assert b.base_url == "https://api.openai.com/v1" and b.client.api_key == "sk-test-123"
    assert OpenAIBackend(MODEL, base_url=server.url).client.api_key == "EMPTY"
    # The client is built with its own retries off, so ours are the only ones (chat.py says why).
    assert b.client.max_retries == 0


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(model=str(tiny_model_dir))


def test_transformers_backend_completes(tiny_backend):
    c = tiny_backend.complete("Say something wrong.", temperature=0.0, max_tokens=8)
    assert isinstance(c.text, str) and c.prompt_tokens > 0 and 1 <= c.completion_tokens <= 8
    assert tiny_backend.complete("Say something wrong.", temperature=0.0, max_tokens=8) == c  # greedy
    a = tiny_backend.complete("x", temperature=1.0, max_tokens=8, seed=3)
    assert tiny_backend.complete("x", temperature=1.0, max_tokens=8, seed=3) == a  # seeded sampling
    assert tiny_backend.usage.requests >= 4


def test_transformers_backend_leaves_the_global_rng_alone(tiny_backend):
    import torch

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    tiny_backend.complete("x", temperature=1.0, max_tokens=4)
    assert torch.equal(torch.rand(3), expected)


def test_transformers_backend_plain_prompt(tiny_plain_model_dir):
    c = TransformersBackend(model=str(tiny_plain_model_dir)).complete("hello", temperature=0.7, max_tokens=4)
    assert isinstance(c.text, str) and c.completion_tokens <= 4
