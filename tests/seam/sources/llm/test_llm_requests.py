"""SEAM_GPT as the paper asks and as the authors' code does (Appendix D.1): the verbatim Prompt 2,
one request for N answers or N requests for one answer each, system messages, token budgets.

Real back ends only: the openai client against the tests' HTTP server, and the tiny local model.
"""

import itertools
import threading
from pathlib import Path

import pytest

from openai_server import MODEL, Failure, FakeOpenAI, question_of
from seam_lightning.llm.chat import OpenAIBackend, TransformersBackend, chat_text
from seam_lightning.llm.completion_cache import completion_key
from seam_lightning.seam.sources.llm.prompts import (
    AUTHORS_SYSTEM_MESSAGE,
    NUMBERED_WORSE_ANSWERS_PROMPT,
    PAPER_SINGLE_ANSWER_PROMPT,
    PAPER_WORSE_ANSWERS_PROMPT,
    WORSE_ANSWERS_PROMPT,
    WORSE_ANSWERS_PROMPTS,
    render_worse_answers_prompt,
    worse_answers_template,
)
from seam_lightning.seam.sources.llm.source import LLMSource

PAPER_PROMPT_2 = Path(__file__).with_name("paper_prompt_2.txt")
"""Prompt 2 (paper Appendix D.1) copied character for character from paper.txt lines 371-385, one line per line."""

QUESTIONS = ["What is 2 + 2?", "Who wrote Hamlet?"]
GOLDEN = ["4", "Shakespeare."]
NOWHERE = "http://127.0.0.1:9/v1"


def source(server, tmp_path, **kwargs) -> LLMSource:
    kwargs.setdefault("progress", False)
    return LLMSource(OpenAIBackend(MODEL, base_url=server.url), cache_dir=str(tmp_path / "llm"), **kwargs)


def counting_reply():
    """A reply function giving a new long answer per request: 'Long wrong answer k to <question>.'"""
    counter, lock = itertools.count(1), threading.Lock()

    def reply(request):
        with lock:
            k = next(counter)
        return f"  Long wrong answer {k} to {question_of(request['messages'][-1]['content'])}.\n1. a list\n2. inside it\n"

    return reply


# ----------------------------------------------------------------------------- the prompts


def test_default_prompt_is_the_papers_prompt_2():
    printed = PAPER_PROMPT_2.read_text(encoding="utf-8").removesuffix("\n")  # the file ends its last line
    # The paper's own slots are the placeholders, and its number of answers is 30.
    assert render_worse_answers_prompt(None, "{question}", "{answer}", 30) == printed
    assert WORSE_ANSWERS_PROMPT is PAPER_WORSE_ANSWERS_PROMPT is WORSE_ANSWERS_PROMPTS["paper"]
    assert worse_answers_template(None) is PAPER_WORSE_ANSWERS_PROMPT


def test_the_paper_prompt_is_what_the_server_gets(tmp_path):
    with FakeOpenAI() as server:
        assert source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 3) == [
            [f"Wrong answer {i} to {QUESTIONS[0]!r}" for i in (1, 2, 3)]]
        assert server.prompts == [PAPER_WORSE_ANSWERS_PROMPT.format(question=QUESTIONS[0], answer=GOLDEN[0], n=3)]
        assert server.systems == [None]  # the paper names no system message for Prompt 2


def test_a_reply_in_separate_paragraphs_as_prompt_2_asks(tmp_path):
    reply = "Here are 3 answers:\n\nFive, since two and two\nmake five.\n\nHamlet wrote it.\n\nIt depends on the weather."
    with FakeOpenAI(reply=lambda r: reply) as server:
        assert source(server, tmp_path).candidates(QUESTIONS[:1], GOLDEN[:1], 3) == [
            ["Five, since two and two\nmake five.", "Hamlet wrote it.", "It depends on the weather."]]


def test_named_templates_and_clear_errors():
    assert set(WORSE_ANSWERS_PROMPTS) == {"paper", "paper_single", "numbered"}
    assert worse_answers_template("numbered") is NUMBERED_WORSE_ANSWERS_PROMPT
    assert worse_answers_template(None, "per_answer") is PAPER_SINGLE_ANSWER_PROMPT
    assert worse_answers_template("paper", "per_answer") is PAPER_WORSE_ANSWERS_PROMPT  # {n} is 1 there
    single = render_worse_answers_prompt(None, "Q?", "A.", 1, requests="per_answer")
    assert "generate an answer that is of lower quality" in single and "paragraphs" not in single
    assert single.endswith("[Question] Q?\n\n[Answer]\n\nA.\n\n[The Start of Assistant's Answer]\n\nA.\n\n"
                           "[The End of Assistant's Answer]")
    backend = OpenAIBackend(MODEL, base_url=NOWHERE)
    for kwargs, message in [
        ({"prompt_template": "numberd"}, r"no template named 'numberd'; the named ones are numbered, paper, paper_single"),
        ({"prompt_template": "paper_single"}, r"lacks the placeholder\(s\) \{n\}"),  # "one" must say how many
        ({"prompt_template": "{question} {answer} {k}", "requests": "per_answer"}, r"unknown placeholder \{k\}"),
        ({"requests": "many"}, r"requests must be one of 'one', 'per_answer', got 'many'"),
        ({"requests": "per_answer", "temperature": 0.0}, "needs temperature > 0"),
        ({"max_tokens": 100, "tokens_per_answer": 10}, "not both"),
        ({"tokens_per_answer": 0}, "tokens_per_answer must be >= 1"),
        ({"system_prompt": 3}, "system_prompt must be a string"),
    ]:
        with pytest.raises(ValueError, match=message):
            LLMSource(backend, **kwargs)


# ----------------------------------------------------------------------------- requests="one"


@pytest.mark.parametrize("kwargs, budget", [({}, 34 * 4), ({"tokens_per_answer": 2.5}, 10),
                                            ({"tokens_per_answer": 2.6}, 11), ({"max_tokens": 500}, 500)])
def test_one_request_budget_scales_with_the_answers_asked_for(tmp_path, kwargs, budget):
    with FakeOpenAI() as server:
        src = source(server, tmp_path, **kwargs)
        assert src.budget(4) == budget
        src.candidates(QUESTIONS[:1], GOLDEN[:1], 4)
        assert [r["max_tokens"] for r in server.requests] == [budget]


def test_one_request_with_a_system_message_is_cached_under_it(tmp_path):
    with FakeOpenAI() as server:
        out = source(server, tmp_path, system_prompt="You are a careless student.").candidates(QUESTIONS, GOLDEN, 2)
        assert server.systems == ["You are a careless student."] * 2
        assert [m["role"] for m in server.requests[0]["messages"]] == ["system", "user"]
        assert source(server, tmp_path, system_prompt="You are a careless student.").candidates(
            QUESTIONS, GOLDEN, 2) == out
        assert len(server.requests) == 2  # same system message: from the cache
        source(server, tmp_path, system_prompt="You are a sloppy student.").candidates(QUESTIONS, GOLDEN, 2)
        source(server, tmp_path).candidates(QUESTIONS, GOLDEN, 2)
        assert len(server.requests) == 6 and server.systems[4:] == [None, None]  # another or none: asked again


# ----------------------------------------------------------------------------- requests="per_answer"


def test_per_answer_sends_n_requests_as_the_authors_code(tmp_path):
    with FakeOpenAI(reply=counting_reply()) as server:
        src = source(server, tmp_path, requests="per_answer", concurrency=1)
        out = src.candidates(QUESTIONS, GOLDEN, 3)
        # Each reply is one answer, whole: its own list stays in it.
        assert out == [[f"Long wrong answer {k} to {q}.\n1. a list\n2. inside it" for k in ks]
                       for q, ks in zip(QUESTIONS, [(1, 2, 3), (4, 5, 6)])]
        assert len(server.requests) == 6 and src.last_requests == 6
        assert server.systems == [AUTHORS_SYSTEM_MESSAGE] * 6
        assert all([m["role"] for m in r["messages"]] == ["system", "user"] for r in server.requests)
        assert server.prompts[:3] == [PAPER_SINGLE_ANSWER_PROMPT.format(question=QUESTIONS[0], answer=GOLDEN[0])] * 3
        assert {r["max_tokens"] for r in server.requests} == {128} and {r["temperature"] for r in server.requests} == {1.0}


def test_per_answer_requests_are_distinct_cache_entries_found_again(tmp_path):
    with FakeOpenAI(reply=counting_reply()) as server:
        first = source(server, tmp_path, requests="per_answer").candidates(QUESTIONS[:1], GOLDEN[:1], 3)
        again = source(server, tmp_path, requests="per_answer")
        assert again.candidates(QUESTIONS[:1], GOLDEN[:1], 3) == first
        assert len(server.requests) == 3 and again.last_cache_hits == 3 and again.last_requests == 0
        more = source(server, tmp_path, requests="per_answer")
        out = more.candidates(QUESTIONS[:1], GOLDEN[:1], 5)  # a larger N asks only for the two missing
        assert out[0][:3] == first[0] and len(out[0]) == 5
        assert more.last_cache_hits == 3 and more.last_requests == 2 and len(server.requests) == 5
        # Another system message (or none, with "") is another request.
        source(server, tmp_path, requests="per_answer", system_prompt="").candidates(QUESTIONS[:1], GOLDEN[:1], 1)
        assert len(server.requests) == 6 and server.systems[-1] is None
    keys = {completion_key("b", "p", 1.0, 128, 0, answer_index=i) for i in range(3)}
    assert len(keys) == 3 and completion_key("b", "p", 1.0, 128, 0) not in keys
    assert completion_key("b", "p", 1.0, 128, 0, system="s") != completion_key("b", "p", 1.0, 128, 0)


def test_per_answer_seeds_differ_per_request_and_repeat_per_run(tmp_path):
    with FakeOpenAI(reply=counting_reply()) as server:
        source(server, tmp_path / "a", requests="per_answer", seed=7, concurrency=1).candidates(
            QUESTIONS[:1], GOLDEN[:1], 3)
        source(server, tmp_path / "b", requests="per_answer", seed=7, concurrency=1).candidates(
            QUESTIONS[:1], GOLDEN[:1], 3)
        seeds = [r["seed"] for r in server.requests]
        assert len(set(seeds[:3])) == 3 and seeds[3:] == seeds[:3]


def test_per_answer_asks_again_for_duplicates_and_empty_replies(tmp_path):
    replies = iter(["same answer", "  same answer ", "", GOLDEN[0], "new answer"])
    with FakeOpenAI(reply=lambda r: next(replies)) as server:
        src = source(server, tmp_path, requests="per_answer", concurrency=1, max_rounds=2, tokens_per_answer=50)
        assert src.candidates(QUESTIONS[:1], GOLDEN[:1], 3) == [["same answer", "new answer"]]
        # Round 1: 3 requests, 1 new answer; round 2: the 2 missing (the golden one is dropped); no round 3.
        assert len(server.requests) == 5 and src.last_stats.short == 1
        assert {r["max_tokens"] for r in server.requests} == {50}


def test_per_answer_refused_request_costs_only_its_example(tmp_path):
    with FakeOpenAI(reply=counting_reply()) as server:
        server.fail_next(Failure(400))
        src = source(server, tmp_path, requests="per_answer", concurrency=1)
        out = src.candidates(QUESTIONS, GOLDEN, 2)
        assert out[0] == [] and len(out[1]) == 2 and src.last_rejected == 1


# ----------------------------------------------------------------------------- the local transformers back end


def test_chat_text_places_the_system_message(tiny_model_dir, tiny_plain_model_dir):
    from seam_lightning.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    with_system = chat_text(tok, "the prompt", "the system")
    assert with_system.index("the system") < with_system.index("the prompt")
    assert with_system == tok.apply_chat_template(
        [{"role": "system", "content": "the system"}, {"role": "user", "content": "the prompt"}],
        tokenize=False, add_generation_prompt=True)
    assert "the system" not in chat_text(tok, "the prompt")
    plain = load_tokenizer(str(tiny_plain_model_dir))
    assert chat_text(plain, "the prompt", "the system") == "the system\n\nthe prompt"
    assert chat_text(plain, "the prompt") == "the prompt"


def test_chat_text_folds_the_system_message_where_the_template_refuses_it(tiny_model_dir):
    from seam_lightning.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('System role not supported') }}{% endif %}"
                         "<user>{{ m['content'] }}</user>{% endfor %}<model>")
    assert chat_text(tok, "the prompt", "the system") == "<user>the system\n\nthe prompt</user><model>"


def test_transformers_backend_takes_a_system_message(tiny_model_dir):
    backend = TransformersBackend(model=str(tiny_model_dir))
    plain = backend.complete("Say something wrong.", temperature=0.0, max_tokens=4)
    told = backend.complete("Say something wrong.", temperature=0.0, max_tokens=4, system=AUTHORS_SYSTEM_MESSAGE)
    assert told.prompt_tokens > plain.prompt_tokens + 10  # the system turn was in the input


def test_per_answer_with_the_local_model(tiny_model_dir, tmp_path):
    kwargs = dict(requests="per_answer", tokens_per_answer=6, seed=0, cache_dir=str(tmp_path / "llm"), progress=False)
    src = LLMSource(TransformersBackend(model=str(tiny_model_dir)), **kwargs)
    out = src.candidates(QUESTIONS, GOLDEN, 2)
    assert all(len(c) <= 2 and all(isinstance(a, str) and a for a in c) for c in out)
    assert src.last_requests >= 4 and src.backend.usage.completion_tokens <= 6 * src.last_requests
    again = LLMSource(TransformersBackend(model=str(tiny_model_dir)), **kwargs)
    assert again.candidates(QUESTIONS, GOLDEN, 2) == out
    assert again.backend._model is None and again.last_requests == 0  # all from the cache: the model never loaded


def test_modes_from_a_config(tmp_path):
    from jsonargparse import ArgumentParser

    from seam_lightning.seam.sources.base import CandidateSource

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--source", type=CandidateSource)
    init = {"backend": {"class_path": "seam_lightning.llm.chat.OpenAIBackend",
                        "init_args": {"model": MODEL, "base_url": NOWHERE}},
            "requests": "per_answer", "prompt_template": "paper", "tokens_per_answer": 96,
            "cache_dir": str(tmp_path), "progress": False}
    config = parser.parse_object({"source": {"class_path": "seam_lightning.seam.sources.llm.source.LLMSource",
                                             "init_args": init}})
    src = parser.instantiate_classes(config).source
    assert (src.requests, src.budget(1), src.system) == ("per_answer", 96, AUTHORS_SYSTEM_MESSAGE)
    with pytest.raises(Exception, match=r"per_answer.*Got value: many"):
        parser.parse_object({"source": {"class_path": "seam_lightning.seam.sources.llm.source.LLMSource",
                                        "init_args": {**init, "requests": "many"}}})
