"""SEAM_GPT (LLMSource) against the real openai client and the tests' own HTTP server, and with a local model.

Nothing is patched in the client: every request goes over HTTP to `FakeOpenAI`. Back-off waits are
recorded through the backend's replaceable ``_sleep``. The back ends alone: tests/llm/test_chat.py.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from openai_server import MODEL, Failure, FakeOpenAI, asked_n, numbered_reply, question_of, recording_backend
from seam_lightning.seam.sources.llm.prompts import (
    NUMBERED_WORSE_ANSWERS_PROMPT,
    WORSE_ANSWERS_PROMPT,
    check_template,
    render_worse_answers_prompt,
)
from seam_lightning.seam.sources.base import CandidateStats
from seam_lightning.llm.chat import ChatBackendError, OpenAIBackend, TransformersBackend
from seam_lightning.llm.completion_cache import CompletionCache, completion_key
from seam_lightning.seam.sources.llm.source import LLMSource

QUESTIONS = ["What is 2 + 2?", "Who wrote Hamlet?", "What does `len` return?"]
GOLDEN = ["4", "Shakespeare.", "The number of items."]


def source(server_or_backend, tmp_path, **kwargs) -> LLMSource:
    b = server_or_backend
    if isinstance(b, FakeOpenAI):
        b = recording_backend(b)
    kwargs.setdefault("progress", False)
    return LLMSource(b, cache_dir=str(tmp_path / "llm"), **kwargs)


# ----------------------------------------------------------------------------- the prompt


def test_prompt_renders_the_paper_prompt():
    prompt = render_worse_answers_prompt(None, "Q {with braces}?", "A }{", 5)
    assert prompt == WORSE_ANSWERS_PROMPT.format(question="Q {with braces}?", answer="A }{", n=5)
    assert "[Question] Q {with braces}?\n\n[Answer]\n\nA }{\n\n" in prompt
    assert "generate 5 distinct answers" in prompt and prompt.count("A }{") == 2  # both {answer} slots


def test_prompt_renders_the_earlier_numbered_wording_by_name():
    prompt = render_worse_answers_prompt("numbered", "Q {with braces}?", "A }{", 5)
    assert prompt == NUMBERED_WORSE_ANSWERS_PROMPT.format(question="Q {with braces}?", answer="A }{", n=5)
    assert "[Question]\nQ {with braces}?\n[Answer]\nA }{\n" in prompt
    assert "Write 5 different answers" in prompt and "numbered list" in prompt


@pytest.mark.parametrize(
    "template, message",
    [
        ("{question} {answer}", r"lacks the placeholder\(s\) \{n\}"),
        ("{question}", r"lacks the placeholder\(s\) \{answer\}, \{n\}"),
        ("{question} {answer} {n} {extra}", r"unknown placeholder \{extra\}"),
        ("{question} {answer} {n} {", "not a valid format string"),
        ("{question} {answer} {n:03d}", "must be plain"),
        ("{question} {answer!r} {n}", "must be plain"),
        ("{question} {answer} {0} {n}", r"unknown placeholder \{0\}"),
    ],
)
def test_bad_templates_are_named(template, message):
    with pytest.raises(ValueError, match=message):
        check_template(template)
    with pytest.raises(ValueError, match=message):
        LLMSource(OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1"), prompt_template=template)


def test_custom_template_with_literal_braces(server, tmp_path):
    template = ("Write {n} different answers. Q: {question}\nA: {answer}\nGive {n} wrong answers as JSON {{like this}}:\n"
                "[Question]\n{question}\n[Answer]\n")
    src = source(server, tmp_path, prompt_template=template)
    out = src.candidates(QUESTIONS[:1], GOLDEN[:1], 2)
    assert len(out[0]) == 2
    assert server.prompts[0] == render_worse_answers_prompt(template, QUESTIONS[0], GOLDEN[0], 2)
    assert "{like this}" in server.prompts[0]


# ----------------------------------------------------------------------------- answers and rounds


def test_answers_parsed_in_order(server, tmp_path):
    src = source(server, tmp_path, concurrency=3)
    out = src.candidates(QUESTIONS, GOLDEN, 3)
    assert out == [[f"Wrong answer {i} to {q!r}" for i in (1, 2, 3)] for q in QUESTIONS]
    assert src.last_stats == CandidateStats(prompts=3, candidates=9, short=0, empty=0)
    assert len(server.requests) == 3 and src.last_requests == 3 and src.last_cache_hits == 0
    req = server.requests[0]
    assert req["model"] == MODEL and req["temperature"] == 1.0 and req["max_tokens"] == 102  # ceil(34 * 3)
    assert req.get("stream") in (False, None) and len(req["messages"]) == 1 and req["messages"][0]["role"] == "user"


def test_too_few_answers_asks_again_for_the_rest(tmp_path):
    calls = []

    def reply(request):  # first round: 2 answers, whatever was asked; later rounds: what was asked
        prompt = request["messages"][-1]["content"]
        calls.append(asked_n(prompt))
        k = 2 if len(calls) == 1 else asked_n(prompt)
        start = 1 if len(calls) == 1 else 100
        return "\n".join(f"{i + 1}. wrong {start + i}" for i in range(k))

    with FakeOpenAI(reply=reply) as server:
        out = source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 5)
        assert out == [["wrong 1", "wrong 2", "wrong 100", "wrong 101", "wrong 102"]]
        assert calls == [5, 3]
        assert server.prompts[1] == render_worse_answers_prompt(None, QUESTIONS[0], GOLDEN[0], 3)
        assert "generate 3 distinct answers" in server.prompts[1]
        assert [r["max_tokens"] for r in server.requests] == [170, 102]  # the budget follows the answers asked for


def test_rounds_are_bounded_and_deduplicated(tmp_path):
    # Always the same single answer plus the golden one: no progress after round 1.
    with FakeOpenAI(reply=lambda r: f"1. same old\n2. {GOLDEN[0]}\n3.   {GOLDEN[0]}  ") as server:
        src = source(server, tmp_path, max_rounds=3)
        out = src.candidates(QUESTIONS[:1], GOLDEN[:1], 4)
        assert out == [["same old"]]
        assert len(server.requests) == 3  # max_rounds requests, no more
        assert src.last_stats == CandidateStats(prompts=1, candidates=1, short=1, empty=0)


def test_never_more_than_n(tmp_path):
    with FakeOpenAI(reply=lambda r: "\n".join(f"- extra {i}" for i in range(10))) as server:
        out = source(server, tmp_path).candidates(QUESTIONS, GOLDEN, 3)
        assert [len(c) for c in out] == [3, 3, 3] and len(server.requests) == 3


def test_greedy_stops_when_a_round_adds_nothing(tmp_path):
    with FakeOpenAI(reply=lambda r: "nothing useful") as server:
        out = source(server, tmp_path, temperature=0.0, max_rounds=5).candidates(QUESTIONS[:1], GOLDEN[:1], 3)
        assert out == [["nothing useful"]]
        # Round 2 (asking for 2) adds nothing; greedy round 3 would get the same reply again.
        assert len(server.requests) == 2


def test_duplicate_examples_are_asked_once_and_empty_input(server, tmp_path):
    src = source(server, tmp_path)
    out = src.candidates([QUESTIONS[0], QUESTIONS[1], QUESTIONS[0]], [GOLDEN[0], GOLDEN[1], GOLDEN[0]], 2)
    assert out[0] == out[2] and out[0] is not out[2] and len(server.requests) == 2
    assert src.candidates([], [], 2) == [] and src.last_stats == CandidateStats(0, 0, 0, 0)
    with pytest.raises(ValueError, match="num_candidates"):
        src.candidates(QUESTIONS, GOLDEN, 0)
    with pytest.raises(ValueError, match="differ in length"):
        src.candidates(QUESTIONS, GOLDEN[:1], 2)


def test_seed_is_sent_and_part_of_the_key(server, tmp_path):
    src = source(server, tmp_path, seed=7)
    src.candidates(QUESTIONS[:2], GOLDEN[:2], 2)
    seeds = [r["seed"] for r in server.requests]
    assert len(set(seeds)) == 2 and all(isinstance(s, int) and s >= 0 for s in seeds)
    source(server, tmp_path, seed=7).candidates(QUESTIONS[:2], GOLDEN[:2], 2)
    assert len(server.requests) == 2  # same seed: cached
    source(server, tmp_path, seed=8).candidates(QUESTIONS[:2], GOLDEN[:2], 2)
    assert len(server.requests) == 4  # another seed: new requests


# ----------------------------------------------------------------------------- retries and errors


def test_429_then_500_then_success_backs_off_growing(server, tmp_path):
    b = recording_backend(server, backoff_seconds=1.0, max_backoff_seconds=60.0)
    server.fail_next(Failure(429), Failure(500))
    out = source(b, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 2)
    assert len(out[0]) == 2
    assert len(server.requests) == 3
    assert len(b.delays) == 2 and 1.0 <= b.delays[0] <= 1.1 and 2.0 <= b.delays[1] <= 2.2
    assert b.usage.requests == 3 and b.usage.retries == 2


def test_401_fails_at_once_naming_the_key_variable(server, tmp_path):
    b = recording_backend(server, api_key_env="MY_LLM_KEY")
    server.fail_next(Failure(401))
    with pytest.raises(ChatBackendError, match=r"HTTP 401.*MY_LLM_KEY"):
        source(b, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 2)
    assert len(server.requests) == 1 and b.delays == []


def test_404_fails_at_once_naming_model_and_url(server, tmp_path):
    b = OpenAIBackend("no-such-model", base_url=server.url)
    with pytest.raises(ChatBackendError) as err:
        source(b, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 2)
    assert "'no-such-model' not found at " + server.url in str(err.value) and "HTTP 404" in str(err.value)
    assert len(server.requests) == 1


def test_a_refused_request_costs_only_its_example(server, tmp_path, caplog):
    server.fail_next(Failure(400))  # e.g. the first prompt is too long for the model
    src = source(server, tmp_path, concurrency=1)
    with caplog.at_level(logging.WARNING, logger="seam_lightning.seam.sources.llm.source"):
        out = src.candidates(QUESTIONS, GOLDEN, 2)
    assert out[0] == [] and [len(c) for c in out[1:]] == [2, 2]
    assert src.last_rejected == 1 and src.last_stats.empty == 1
    assert "no more candidates for the example 'What is 2 + 2?'" in caplog.text
    # Not cached: a rerun asks again for that example only.
    assert source(server, tmp_path).candidates(QUESTIONS, GOLDEN, 2)[0] != []
    assert len(server.requests) == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout"):
        OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1", timeout=0)
    with pytest.raises(ValueError, match="backoff"):
        OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1", backoff_seconds=5, max_backoff_seconds=1)
    b = OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1")
    for kwargs, name in [({"max_rounds": 0}, "max_rounds"), ({"concurrency": 0}, "concurrency"),
                         ({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temperature")]:
        with pytest.raises(ValueError, match=name):
            LLMSource(b, **kwargs)
    with pytest.raises(TypeError, match="ChatBackend"):
        LLMSource("gpt-4o")


# ----------------------------------------------------------------------------- usage


def test_usage_tally_and_cost(server, tmp_path, caplog):
    b = recording_backend(server, price_per_1m_prompt_tokens=2.5, price_per_1m_completion_tokens=10.0)
    server.fail_next(Failure(429))
    with caplog.at_level(logging.INFO, logger="seam_lightning.seam.sources.llm.source"):
        source(b, tmp_path).candidates(QUESTIONS, GOLDEN, 2)
    successful = [r for r in server.requests][1:]  # the first one was the 429
    prompt_tokens = sum(len(r["messages"][-1]["content"].split()) for r in successful)
    completion_tokens = sum(len(numbered_reply(r).split()) for r in successful)
    u = b.usage
    assert (u.requests, u.retries, u.prompt_tokens, u.completion_tokens) == (4, 1, prompt_tokens, completion_tokens)
    assert u.cost_usd == pytest.approx((prompt_tokens * 2.5 + completion_tokens * 10.0) / 1e6)
    assert "4 requests (1 retries)" in caplog.text and f"${u.cost_usd:.4f}" in caplog.text
    assert recording_backend(server).usage.cost_usd is None  # no prices, no cost


# ----------------------------------------------------------------------------- cache


def test_cache_second_source_makes_no_requests(server, tmp_path):
    first = source(server, tmp_path)
    out = first.candidates(QUESTIONS, GOLDEN, 3)
    lines = first.cache_path.read_text().splitlines()
    assert len(lines) == 3 and {json.loads(line)["model"] for line in lines} == {first.backend.name}
    n = len(server.requests)
    second = source(server, tmp_path)
    assert second.candidates(QUESTIONS, GOLDEN, 3) == out
    assert len(server.requests) == n and second.last_requests == 0 and second.last_cache_hits == 3
    assert second.backend.usage.requests == 0


def test_cache_keys_separate_what_changes_the_reply(server, tmp_path):
    source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 2)
    for kwargs in ({"temperature": 0.5}, {"max_tokens": 100}):
        source(server, tmp_path, **kwargs).candidates(QUESTIONS[:1], GOLDEN[:1], 2)
    source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 3)  # another n: another prompt
    assert len(server.requests) == 4
    keys = {completion_key("b", "p", 1.0, 10, r) for r in range(3)}
    assert len(keys) == 3  # the round index is in the key


def test_cache_rounds_are_cached_too(tmp_path):
    replies = iter(["1. a", "1. b\n2. c"])
    with FakeOpenAI(reply=lambda r: next(replies)) as server:
        assert source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 3) == [["a", "b", "c"]]
        assert source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 3) == [["a", "b", "c"]]
        assert len(server.requests) == 2


def test_cache_one_file_per_backend(server, tmp_path):
    a = source(server, tmp_path)
    b = LLMSource(OpenAIBackend(MODEL, base_url=server.url.replace("127.0.0.1", "localhost")),
                  cache_dir=str(tmp_path / "llm"), progress=False)
    assert a.cache_path != b.cache_path and a.cache_path.parent == b.cache_path.parent
    assert a.cache_path.suffix == ".jsonl"


def test_cache_default_dir_is_under_cache_root(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path / "root"))
    src = LLMSource(recording_backend(server), progress=False)
    assert src.cache_path.parent == tmp_path / "root" / "llm"


def test_truncated_last_line_is_skipped_with_a_warning(server, tmp_path, caplog):
    first = source(server, tmp_path)
    out = first.candidates(QUESTIONS[:2], GOLDEN[:2], 2)
    path = first.cache_path
    with open(path, "a") as f:
        f.write('{"key": "0123", "text": "half a li')  # a kill mid-write
    with caplog.at_level(logging.WARNING, logger="seam_lightning.seam.sources.llm.source"):
        second = source(server, tmp_path)
        assert second.candidates(QUESTIONS[:2], GOLDEN[:2], 2) == out
    assert f"{path} line 3: skipping a corrupt LLM cache line" in caplog.text
    assert second.last_cache_hits == 2
    # A new completion starts on a fresh line: the file stays readable.
    second.candidates(QUESTIONS[2:], GOLDEN[2:], 2)
    caplog.clear()
    cache = CompletionCache(path)
    with caplog.at_level(logging.WARNING, logger="seam_lightning.seam.sources.llm.source"):
        assert len(cache) == 3
    assert caplog.text.count("skipping a corrupt LLM cache line") == 1


def test_corrupt_lines_in_the_middle_are_skipped(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"key": "k1", "text": "t1", "prompt_tokens": 1, "completion_tokens": 2, "model": "m"})
    path.write_bytes(b"\n".join([good.encode(), b"not json", b'{"no_key": 1}', b"\xff\xfe", b"[1, 2]",
                                 json.dumps({"key": "k2", "text": "t2"}).encode(), b""]))
    with caplog.at_level(logging.WARNING, logger="seam_lightning.seam.sources.llm.source"):
        cache = CompletionCache(path)
        assert cache.get("k1").text == "t1" and cache.get("k1").completion_tokens == 2 and cache.get("k2").text == "t2"
    assert [f"line {i}:" in caplog.text for i in (2, 3, 4, 5)] == [True] * 4 and "line 1:" not in caplog.text


def test_unwritable_cache_costs_the_cache_not_the_run(server, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    src = LLMSource(recording_backend(server), cache_dir=str(blocker / "llm"), progress=False)
    with caplog.at_level(logging.WARNING, logger="seam_lightning.seam.sources.llm.source"):
        assert [len(c) for c in src.candidates(QUESTIONS, GOLDEN, 2)] == [2, 2, 2]
    assert "cannot write the LLM cache" in caplog.text


CHILD = """
import sys
from seam_lightning.llm import OpenAIBackend
from seam_lightning.seam import LLMSource
src = LLMSource(OpenAIBackend({model!r}, base_url={url!r}, timeout=120, max_retries=0),
                concurrency=1, cache_dir={cache_dir!r}, progress=False)
src.candidates({questions!r}, {golden!r}, 2)
print("child finished", flush=True)
"""


def test_kill_mid_run_loses_nothing_paid_for(server, tmp_path):
    questions = [f"Question number {i}?" for i in range(6)]
    golden = [f"Golden answer {i}." for i in range(6)]
    cache_dir = tmp_path / "llm"
    server.stall_after(3)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    code = CHILD.format(model=MODEL, url=server.url, cache_dir=str(cache_dir), questions=questions, golden=golden)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        lines = 0
        while time.monotonic() < deadline and child.poll() is None:
            files = list(cache_dir.glob("*.jsonl"))
            lines = len(files[0].read_text().splitlines()) if files else 0
            if lines >= 3 and len(server.requests) >= 4:  # 3 answered, the 4th is stalled
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stdout.read().decode()
        assert lines == 3
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    server.release()  # the stalled request goes nowhere; the server replies normally again
    sent = len(server.requests)
    assert sent == 4

    src = LLMSource(recording_backend(server), concurrency=1, cache_dir=str(cache_dir), progress=False)
    out = src.candidates(questions, golden, 2)
    assert len(server.requests) - sent == 3  # only the missing prompts
    assert [question_of(p) for p in server.prompts[sent:]] == questions[3:]
    assert out == [[f"Wrong answer {i} to {q!r}" for i in (1, 2)] for q in questions]
    assert src.last_cache_hits == 3 and src.last_requests == 3


# ----------------------------------------------------------------------------- LightningCLI / jsonargparse


def test_built_from_config(server, tmp_path):
    from jsonargparse import ArgumentParser

    from seam_lightning.seam.sources.base import CandidateSource

    parser = ArgumentParser()
    parser.add_argument("--source", type=CandidateSource)
    config = parser.parse_object({"source": {
        "class_path": "seam_lightning.seam.sources.llm.source.LLMSource",
        "init_args": {
            "backend": {"class_path": "seam_lightning.llm.chat.OpenAIBackend",
                        "init_args": {"model": MODEL, "base_url": server.url, "max_retries": 2,
                                      "price_per_1m_prompt_tokens": 1.0}},
            "max_rounds": 2, "cache_dir": str(tmp_path / "cfg"), "progress": False,
        },
    }})
    src = parser.instantiate_classes(config).source
    assert isinstance(src, LLMSource) and isinstance(src.backend, OpenAIBackend)
    assert src.max_rounds == 2 and src.backend.max_retries == 2
    assert [len(c) for c in src.candidates(QUESTIONS[:1], GOLDEN[:1], 2)] == [2]


# ----------------------------------------------------------------------------- local transformers model


def test_llm_source_with_a_local_model(tiny_model_dir, tmp_path):
    b = TransformersBackend(model=str(tiny_model_dir))
    src = LLMSource(b, max_tokens=24, max_rounds=2, concurrency=2, cache_dir=str(tmp_path / "llm"), progress=False)
    out = src.candidates(QUESTIONS, GOLDEN, 3)
    assert len(out) == 3 and all(isinstance(c, list) and len(c) <= 3 for c in out)
    assert all(isinstance(a, str) and a for c in out for a in c)
    again = TransformersBackend(model=str(tiny_model_dir))
    src2 = LLMSource(again, max_tokens=24, max_rounds=2, cache_dir=str(tmp_path / "llm"), progress=False)
    assert src2.candidates(QUESTIONS, GOLDEN, 3) == out
    assert again._model is None and src2.last_requests == 0  # all from the cache: the model never loaded
