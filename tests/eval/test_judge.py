"""The judge: rating parsing on well-formed and malformed replies, and LLMJudge against the tests' OpenAI server."""

import json
import logging
import random
import re
from pathlib import Path

import pytest

from openai_server import MODEL, Failure, FakeOpenAI
from seam_lightning.eval.judge import (
    JUDGE_PROMPT,
    JUDGE_PROMPTS,
    PAPER_JUDGE_PROMPT,
    REWORDED_JUDGE_PROMPT,
    LLMJudge,
    check_judge_template,
    parse_rating,
    render_judge_prompt,
)
from seam_lightning.llm.chat import OpenAIBackend

QUESTIONS = ["What is 2 + 2?", "Who wrote Hamlet?", "What does `len` return?", "Name a prime."]
ANSWERS = ["4", "Shakespeare.", "no idea", "7"]


# ----------------------------------------------------------------------------- parse_rating


@pytest.mark.parametrize("reply, rating", [
    ("[[7]]", 7.0),
    ("[[ 7 ]]", 7.0),
    ("[[7.5]]", 7.5),
    ("[[7/10]]", 7.0),
    ("[[ 8 / 10 ]]", 8.0),
    ("[[6 out of 10]]", 6.0),
    ("[[10]]", 10.0),
    ("[[1]]", 1.0),
    ("[[0]]", 0.0),  # Appendix C.2: scores range from 0 to 10
    ("[[ 0 ]]", 0.0),
    ("[[0.5]]", 0.5),
    ("[[0/10]]", 0.0),
    ("Off topic. Rating: [[0]]", 0.0),
    ("Rating: 0", 0.0),
    ("0/10", 0.0),
    ("Useless, 0 out of 10.", 0.0),
    ("[[10.0]]", 10.0),
    ("The answer is correct and complete.\n\nRating: [[8]]", 8.0),
    ("Rating: [[8]] because it is fine.", 8.0),
    ("First I thought [[3]], but on reflection [[9]].", 9.0),
    ("Format: [[rating]]. My verdict: [[6]]", 6.0),
    ("[[6]] (I was asked for [[rating]])", 6.0),
    ("Rating: 7", 7.0),
    ("rating: 7.5", 7.5),
    ("I would give it a rating of 7/10.", 7.0),
    ("Rating: **6**", 6.0),
    ("Overall I rated it 4.", 4.0),
    ("Solid answer, 7/10.", 7.0),
    ("Solid answer, 9 out of 10", 9.0),
    ("On a scale of 1 to 10 the rating is 3", 3.0),
])
def test_ratings_are_read(reply, rating):
    assert parse_rating(reply) == rating


@pytest.mark.parametrize("reply", [
    "", "   ", "[[]]", "[[ ]]", "[[ten]]", "[[seven/10]]", "[[11]]", "[[-3]]", "[[-0]]", "[[-0.5]]", "[[10.5]]",
    "[[1e3]]", "[[nan]]", "[[inf]]", "[[7/5]]", "[[7", "7]]", "[7]",
    "Rating: -1", "rating: 12", "17/100", "-0/10", "11/10",
    "I cannot rate this answer.", "Please rate the answer on a scale of 1 to 10.",
    "Please rate the answer on a scale of 0 to 10.", "My rating: 0-10 is the scale.",
    "ß∂ƒ©˙∆˚¬…æ «»“‘ 😀🙃 \x00\x1f\ud800", "[[٧]]", "[[７]]", "[[" * 100_000, "]]" * 100_000,
    "[[" + " " * 200_000, "1" * 200_000, "rating " * 50_000, "[[" + "9" * 5000 + "]]",
])
def test_no_rating_gives_none(reply):
    assert parse_rating(reply) is None


def test_out_of_range_last_bracket_is_not_replaced_by_an_earlier_one():
    assert parse_rating("[[7]] ... no, [[11]]") is None


@pytest.mark.parametrize("value", [None, 7, 7.0, b"[[7]]", ["[[7]]"]])
def test_non_strings_give_none(value):
    assert parse_rating(value) is None


def test_never_raises_on_random_text():
    rng = random.Random(0)
    alphabet = "[]0123456789./ -+ratingRATINGoutf\n\t\u00e9\u4e2d\U0001f600\ud800"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        rating = parse_rating(text)
        assert rating is None or 0.0 <= rating <= 10.0


# ----------------------------------------------------------------------------- the prompt


def test_prompt_asks_for_the_bracketed_rating():
    prompt = render_judge_prompt(JUDGE_PROMPT, "Q {x}?", "A }{")
    assert "Q {x}?" in prompt and "A }{" in prompt
    assert "[[rating]]" in prompt and "Rating: [[5]]" in prompt and "1 to 10" in prompt
    assert "impartial" in prompt and "short explanation" in prompt
    check_judge_template(JUDGE_PROMPT)


@pytest.mark.parametrize("template, message", [
    ("{question}", r"lacks the placeholder\(s\) \{answer\}"),
    ("plain text", r"lacks the placeholder\(s\) \{answer\}, \{question\}"),
    ("{question} {answer} {n}", r"unknown placeholder \{n\}"),
    ("{question} {answer} {", "not a valid format string"),
    ("{question} {answer!r}", "must be plain"),
    ("{question:>5} {answer}", "must be plain"),
    (3, "must be a string"),
])
def test_bad_templates_are_named(template, message):
    with pytest.raises(ValueError, match=message):
        check_judge_template(template)
    with pytest.raises(ValueError, match=message):
        LLMJudge(OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1"), template=template)


PAPER_PROMPT_1 = Path(__file__).with_name("paper_prompt_1.txt")
"""Prompt 1 (paper Appendix C.1) copied character for character from paper.txt lines 342-348, one line per line."""


def test_default_prompt_is_the_papers_prompt_1():
    printed = PAPER_PROMPT_1.read_text(encoding="utf-8").removesuffix("\n")  # the file ends its last line
    # The paper's own slots are the placeholders: filled with themselves, the prompt is the printed text.
    assert render_judge_prompt(JUDGE_PROMPT, "{question}", "{answer}") == printed
    assert JUDGE_PROMPTS["paper"] is JUDGE_PROMPT == PAPER_JUDGE_PROMPT
    assert LLMJudge(OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1")).template == JUDGE_PROMPT


def test_earlier_wording_by_name_and_unknown_names():
    backend = OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1")
    judge = LLMJudge(backend, template="reworded")
    assert judge.template is REWORDED_JUDGE_PROMPT is JUDGE_PROMPTS["reworded"]
    prompt = render_judge_prompt(judge.template, "Q?", "A.")
    assert "[Question]\nQ?\n\n[The Start of the Assistant's Answer]\nA.\n[The End of the Assistant's Answer]\n" in prompt
    assert "1 to 10" in prompt and "Rating: [[5]]" in prompt
    with pytest.raises(ValueError, match=r"no template named 'paperr'; the named ones are paper, reworded"):
        LLMJudge(backend, template="paperr")


def test_zero_is_a_rating_over_http_with_either_template(tmp_path):
    verdicts = {"4": "Correct. Rating: [[10]]", "Shakespeare.": "Off topic and wrong. Rating: [[0]]"}
    with FakeOpenAI(reply=lambda r: verdicts[re.search(r"Answer\]\s(.*?)\n", r["messages"][-1]["content"]).group(1)]) \
            as server:
        for name, template in JUDGE_PROMPTS.items():
            judge = judge_for(server, tmp_path / name, template=name)
            assert judge.rate(QUESTIONS[:2], ANSWERS[:2]) == [10.0, 0.0]
            expected = [render_judge_prompt(template, q, a) for q, a in zip(QUESTIONS[:2], ANSWERS[:2])]
            assert sorted(server.prompts[-2:]) == sorted(expected)


def test_bad_arguments():
    backend = OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(TypeError, match="ChatBackend"):
        LLMJudge("gpt-4o")
    for kwargs, message in (({"temperature": -1}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
                            ({"max_workers": 0}, "max_workers")):
        with pytest.raises(ValueError, match=message):
            LLMJudge(backend, **kwargs)


# ----------------------------------------------------------------------------- LLMJudge over HTTP


def scripted_reply(request: dict) -> str:
    """A verdict that depends on the answer inside the prompt: 'no idea' gets no rating at all."""
    prompt = request["messages"][-1]["content"]
    # The paper's layout ("[The Start of Assistant's Answer] A\n\n[The End") or the reworded one.
    answer = re.search(r"\[The Start of (?:the )?Assistant's Answer\]\s(.*?)\n+\[The End", prompt, re.DOTALL).group(1)
    verdicts = {"4": "Correct. Rating: [[9]]", "Shakespeare.": "Right but terse. [[ 6.5 ]]",
                "no idea": "I refuse to grade this.", "7": "Fine, 7/10."}
    return verdicts[answer]


def judge_for(server: FakeOpenAI, tmp_path, **kwargs) -> LLMJudge:
    kwargs.setdefault("progress", False)
    return LLMJudge(OpenAIBackend(MODEL, base_url=server.url), cache_path=str(tmp_path / "judge.jsonl"), **kwargs)


def test_ratings_unparsable_and_cache(tmp_path, caplog):
    with FakeOpenAI(reply=scripted_reply) as server:
        judge = judge_for(server, tmp_path, max_workers=3)
        with caplog.at_level(logging.WARNING, logger="seam_lightning.eval.judge"):
            ratings = judge.rate(QUESTIONS, ANSWERS)
        assert ratings == [9.0, 6.5, None, 7.0]
        assert "1 of 4 replies hold no rating" in caplog.text and "example index 2" in caplog.text
        assert len(server.requests) == 4 and judge.last_requests == 4 and judge.last_cache_hits == 0
        request = server.requests[0]
        assert request["temperature"] == 0.0 and request["max_tokens"] == 512 and len(request["messages"]) == 1
        assert sorted(server.prompts) == sorted(render_judge_prompt(JUDGE_PROMPT, q, a)
                                                for q, a in zip(QUESTIONS, ANSWERS))

        # A new judge on the same cache file: every reply from the file, re-parsed, no request.
        again = judge_for(server, tmp_path)
        assert again.rate(QUESTIONS, ANSWERS) == ratings
        assert len(server.requests) == 4 and again.last_requests == 0 and again.last_cache_hits == 4
    lines = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {line["text"] for line in lines} >= {"Correct. Rating: [[9]]"}


def test_cached_replies_are_parsed_again(tmp_path):
    """The cache holds reply texts, not ratings: a better parser applies to old replies."""
    with FakeOpenAI(reply=lambda r: "Rating: [[3]]") as server:
        assert judge_for(server, tmp_path).rate(QUESTIONS[:1], ANSWERS[:1]) == [3.0]
        entry = json.loads((tmp_path / "judge.jsonl").read_text())
        entry["text"] = "Changed my mind: [[5]]"
        (tmp_path / "judge.jsonl").write_text(json.dumps(entry) + "\n")
        assert judge_for(server, tmp_path).rate(QUESTIONS[:1], ANSWERS[:1]) == [5.0]
        assert len(server.requests) == 1


def test_duplicates_asked_once_and_empty_input(tmp_path):
    with FakeOpenAI(reply=scripted_reply) as server:
        judge = judge_for(server, tmp_path)
        assert judge.rate([QUESTIONS[0]] * 3, [ANSWERS[0]] * 3) == [9.0] * 3
        assert len(server.requests) == 1
        assert judge.rate([], []) == []
        with pytest.raises(ValueError, match="2 questions but 1 answers"):
            judge.rate(QUESTIONS[:2], ANSWERS[:1])
        with pytest.raises(TypeError, match=r"answers\[1\] must be a string"):
            judge.rate(QUESTIONS[:2], ["a", None])


def test_custom_template_and_settings_change_the_key(tmp_path):
    template = "Q: {question}\nA: {answer}\nReply with {{braces}} and [[rating]]."
    with FakeOpenAI(reply=lambda r: "[[4]]") as server:
        assert judge_for(server, tmp_path, template=template).rate(QUESTIONS[:1], ANSWERS[:1]) == [4.0]
        assert server.prompts == [f"Q: {QUESTIONS[0]}\nA: {ANSWERS[0]}\nReply with {{braces}} and [[rating]]."]
        judge_for(server, tmp_path, max_tokens=64).rate(QUESTIONS[:1], ANSWERS[:1])
        assert len(server.requests) == 2 and server.requests[1]["max_tokens"] == 64


def test_a_refused_request_gives_none_and_is_not_cached(tmp_path, caplog):
    with FakeOpenAI(reply=lambda r: "[[8]]") as server:
        server.fail_next(Failure(400))
        judge = judge_for(server, tmp_path, max_workers=1)
        with caplog.at_level(logging.WARNING, logger="seam_lightning.eval.judge"):
            assert judge.rate(QUESTIONS[:2], ANSWERS[:2]) == [None, 8.0]
        assert judge.last_rejected == 1 and "refused to rate" in caplog.text
        assert judge.rate(QUESTIONS[:2], ANSWERS[:2]) == [8.0, 8.0]
        assert judge.last_requests == 1 and judge.last_cache_hits == 1


def test_default_cache_is_per_backend_under_the_package_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAM_LIGHTNING_CACHE", str(tmp_path / "cache"))
    a = LLMJudge(OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1"), progress=False)
    b = LLMJudge(OpenAIBackend("other", base_url="http://127.0.0.1:9/v1"), progress=False)
    assert a.cache.path.parent == tmp_path / "cache" / "judge" and a.cache.path != b.cache.path
