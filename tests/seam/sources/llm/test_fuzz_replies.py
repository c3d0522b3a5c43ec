"""Fuzz tests for split_answers: any text gives a short list of clean answers, quickly.

Contract checked on arbitrary input: never raises; returns distinct, non-empty,
stripped strings; at most one answer per non-blank line; each answer is a piece
of the reply (whitespace aside: markers, quotes and rules are only removed at its
edges); ``limit`` keeps a prefix. Well-formed lists come back item for item.
"""
import re
import time

import pytest

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from seam_lightning.seam.sources.llm.replies import split_answers  # noqa: E402

FUZZ = settings(derandomize=True, database=None, deadline=2000, max_examples=300)

# Pieces that steer the splitter into its branches: markers, fences, rules, quotes, odd line breaks.
PIECES = [
    "\n", "\n\n", "\r\n", "\r", "  ", "\t", "1. ", "2. ", "3) ", "10: ", "(4) ", "[5] ", "**6.** ", "### ", "#",
    "Answer 1: ", "**Response 2** - ", "Worse answer 3. ", "- ", "* ", "• ", "+ ", "```", "~~~", "---", "***",
    '"', "“", "”", "'", "«", "»", "Note: ", "I hope this helps", "Here are 3 answers:", "Sure!", "\u2028", "\x0b",
    "\x0c", "\x1c", "\x85", "\x00", "\ufeff", "1.", "1234567890.", "__", "    1. ",
]
replies = st.lists(st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
                             st.sampled_from(PIECES)), max_size=40).map("".join)


def _squash(text: str) -> str:
    return "".join(text.split())


def _check_contract(reply: str, answers: list[str]) -> None:
    assert isinstance(answers, list) and all(isinstance(a, str) for a in answers)
    assert all(a and a == a.strip() for a in answers)
    assert len(set(answers)) == len(answers)
    lines = reply.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert len(answers) <= sum(1 for line in lines if line.strip())
    squashed = _squash(reply)
    assert all(_squash(a) in squashed for a in answers)


@FUZZ
@given(replies, st.integers(0, 5))
def test_any_reply_gives_clean_answers(reply, limit):
    answers = split_answers(reply)
    _check_contract(reply, answers)
    assert split_answers(reply, limit=limit) == answers[:limit]
    assert split_answers(reply) == answers


@settings(FUZZ, max_examples=100)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=2000))
def test_any_unicode_text(reply):
    _check_contract(reply, split_answers(reply))


# One-line items that survive cleaning unchanged: a letter somewhere (not a "---" rule), no
# quotes around them, no fence, no line break; unique so that none is dropped as a duplicate.
item = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"], include_characters=".,;!?()-:/"),
               min_size=1, max_size=40).map(str.strip).filter(lambda s: any(c.isalpha() for c in s))
MARKERS = {  # style -> marker of item k
    "dot": "{k}. ", "paren": "{k}) ", "colon": "{k}: ", "round": "({k}) ", "square": "[{k}] ", "bold": "**{k}.** ",
    "heading": "### {k}. ", "label": "Answer {k}: ", "bold-label": "**Response {k}:** ", "dash": "- ", "star": "* ",
    "dot-bullet": "• ",
}


@FUZZ
@given(st.lists(item, min_size=2, max_size=15, unique=True), st.sampled_from(sorted(MARKERS)),
       st.sampled_from(["", "  ", "\t"]), st.sampled_from(["\n", "\n\n", "\r\n"]),
       st.sampled_from(["", "Here are some worse answers:\n", "Sure!\n\n"]))
def test_well_formed_lists_come_back_item_for_item(items, style, indent, sep, preamble):
    reply = preamble + sep.join(indent + MARKERS[style].format(k=k) + text for k, text in enumerate(items, 1))
    assert split_answers(reply) == items


@FUZZ
@given(st.lists(item, min_size=1, max_size=10, unique=True))
def test_paragraphs_come_back_whole(paragraphs):
    # Left out, by design: paragraphs that start like a list item, an intro ("Sure", "...:")
    # or a closing note ("Note", "I hope"): those are split out or dropped.
    odd = re.compile(r"[-*•+(\[]|\d|answer|response|sure|certainly|ok|of course|absolutely|here|below|the following"
                     r"|note|these|each|all of|i hope|hope|let me|feel free|.*:$", re.IGNORECASE)
    paragraphs = [p for p in paragraphs if not odd.match(p)]
    if len(paragraphs) > 1:
        assert split_answers("\n\n".join(paragraphs)) == paragraphs


ADVERSARIAL = {
    "1.-repeated": "1." * 10_000,
    "stars": "*" * 50_000,
    "newlines": "\n" * 100_000,
    "digits-and-dots": "1234567890." * 10_000,
    "digit-lines": "\n".join(["1" * 5_000 + "." + "2" * 5_000] * 20),
    "spaces-then-text": " " * 50_000 + "x",  # was 30 s: [ \t]* runs met in _LABELLED
    "tabs": "\t" * 50_000,
    "label-then-spaces": "Answer 1" + " " * 50_000 + "x",
    "hash-then-spaces": "#" + " " * 50_000 + "x",
    "bold-then-spaces": "**" + " " * 50_000 + "x",
    "worse-then-spaces": "worse" + " " * 50_000 + "answer",
    "many-spaced-lines": ("    " * 500 + "y\n") * 200,
    "leading-rules": "1.\n" + "---\n" * 100_000 + "a\n2. b",  # was quadratic: pop(0) in _clean
    "fences": "```\n" * 50_000,
    "open-fence": "```\n" + "1. a\n" * 20_000,
    "same-number": "1. a\n" * 30_000,
    "many-items": "\n".join(f"{i % 999 + 1}. item {i}" for i in range(20_000)),
    "nested": "\n".join("  " * (i % 50) + f"{i % 9 + 1}. x{i}" for i in range(20_000)),
    "bullets": "- " * 30_000,
    "brackets": "([" * 30_000,
    "quotes": '"' * 50_000,
    "blank-line-runs": ("a\n" + " \t\n" * 1000) * 100,
    "one-huge-line": "word " * 200_000,
}


@pytest.mark.parametrize("reply", list(ADVERSARIAL.values()), ids=list(ADVERSARIAL))
def test_adversarial_inputs_are_fast(reply):
    start = time.perf_counter()
    answers = split_answers(reply)
    elapsed = time.perf_counter() - start
    _check_contract(reply, answers)
    assert elapsed < 2.0, f"{elapsed:.1f} s"
