"""split_answers: numbered, labelled, bulleted and paragraph replies; preambles, nesting, code, junk."""

import pytest

from seam_lightning.seam.sources.llm.replies import split_answers


@pytest.mark.parametrize(
    "reply",
    [
        "1. alpha\n2. beta\n3. gamma",
        "1) alpha\n2) beta\n3) gamma",
        "(1) alpha\n(2) beta\n(3) gamma",
        "[1] alpha\n[2] beta\n[3] gamma",
        "1: alpha\n2: beta\n3: gamma",
        "**1.** alpha\n**2.** beta\n**3.** gamma",
        "### 1. alpha\n### 2. beta\n### 3. gamma",
        "Answer 1: alpha\nAnswer 2: beta\nAnswer 3: gamma",
        "Answer #1: alpha\nAnswer #2: beta\nAnswer #3: gamma",
        "**Answer 1:** alpha\n**Answer 2:** beta\n**Answer 3:** gamma",
        "**Answer 1**: alpha\n**Answer 2**: beta\n**Answer 3**: gamma",
        "Response 1 - alpha\nResponse 2 - beta\nResponse 3 - gamma",
        "Response 1 — alpha\nResponse 2 — beta\nResponse 3 — gamma",
        "Worse answer 1. alpha\nWorse answer 2. beta\nWorse answer 3. gamma",
        "- alpha\n- beta\n- gamma",
        "* alpha\n* beta\n* gamma",
        "• alpha\n• beta\n• gamma",
        "alpha\n\nbeta\n\ngamma",
        "alpha\n\n\n\nbeta\n  \t\ngamma",
        "1.  alpha  \n\n2.\tbeta\n\n\n3. gamma\n\n",
        "\r\n1. alpha\r\n2. beta\r\n3. gamma\r\n",
        '1. "alpha"\n2. “beta”\n3. \'gamma\'',
        "1. alpha\n---\n2. beta\n---\n3. gamma\n---",
        "  1. alpha\n  2. beta\n  3. gamma",
    ],
)
def test_formats(reply):
    assert split_answers(reply) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    "preamble",
    ["Here are 3 worse answers:", "Sure! Here are three lower-quality answers:", "Certainly.", "Answers:"],
)
@pytest.mark.parametrize("body", ["1. alpha\n2. beta", "- alpha\n- beta", "Answer 1: alpha\nAnswer 2: beta"])
def test_preamble_dropped_before_a_list(preamble, body):
    assert split_answers(f"{preamble}\n\n{body}") == ["alpha", "beta"]
    assert split_answers(f"{preamble}\n{body}") == ["alpha", "beta"]


def test_preamble_dropped_before_paragraphs():
    assert split_answers("Here are two worse answers:\n\nalpha one\n\nbeta two") == ["alpha one", "beta two"]
    # A first paragraph that is an answer stays.
    assert split_answers("Paris is in Spain.\n\nParis is a planet.") == ["Paris is in Spain.", "Paris is a planet."]


def test_closing_note_dropped():
    reply = "1. alpha\n2. beta\n\nNote: each answer contains deliberate errors."
    assert split_answers(reply) == ["alpha", "beta"]
    assert split_answers("alpha\n\nbeta\n\nI hope these help!") == ["alpha", "beta"]


def test_multi_line_items_stay_together():
    reply = (
        "1. First line of alpha\n   second line of alpha\n\n   a second paragraph of alpha\n"
        "2. beta, with code:\n   ```python\n   x = 1\n   ```\n"
        "3. gamma"
    )
    assert split_answers(reply) == [
        "First line of alpha\nsecond line of alpha\n\na second paragraph of alpha",
        "beta, with code:\n```python\nx = 1\n```",
        "gamma",
    ]


def test_labelled_header_on_its_own_line():
    reply = "**Answer 1:**\nalpha line\n\nmore alpha\n\n**Answer 2:**\nbeta\n\n### Answer 3\ngamma"
    assert split_answers(reply) == ["alpha line\n\nmore alpha", "beta", "gamma"]


def test_nested_numbered_list_stays_in_its_item():
    reply = "1. To fix it:\n   1. reinstall\n   2. reboot\n2. Ignore it.\n3. Blame the compiler."
    assert split_answers(reply) == ["To fix it:\n1. reinstall\n2. reboot", "Ignore it.", "Blame the compiler."]
    # Not indented, but the numbering restarts: still part of the first answer.
    reply = "1. Steps:\n1. reinstall\n2. Ignore it.\n3. Blame the compiler."
    assert split_answers(reply)[0] == "Steps:\n1. reinstall"


def test_nested_bullets_stay_in_their_item():
    assert split_answers("- alpha\n  - detail\n- beta") == ["alpha\n- detail", "beta"]


def test_labels_win_over_numbers_inside_answers():
    reply = "Answer 1:\n1. do x\n2. do y\nAnswer 2:\n1. do z"
    assert split_answers(reply) == ["1. do x\n2. do y", "1. do z"]


def test_markers_inside_code_fences_are_content():
    reply = "Use this:\n```\n1. not an item\n2. nor this\n- nor this\n```\n\nOr this instead."
    assert split_answers(reply) == ["Use this:\n```\n1. not an item\n2. nor this\n- nor this\n```", "Or this instead."]


def test_numbers_that_are_not_markers():
    assert split_answers("3.14 is exactly pi.\n\n12:30 is noon.") == ["3.14 is exactly pi.", "12:30 is noon."]
    assert split_answers("2019 was the year it shipped.") == ["2019 was the year it shipped."]
    assert split_answers("Answer 1 is obviously wrong here.") == ["Answer 1 is obviously wrong here."]


def test_single_item_list():
    assert split_answers("1. only one") == ["only one"]
    assert split_answers("Here is 1 worse answer:\n1. only one") == ["only one"]
    # A lone numbered line after real prose is part of that prose, not a list.
    text = "Reinstall the package first.\nThen check the path.\n1. is the usual step"
    assert split_answers(text) == [text]


def test_skipped_numbers_still_split():
    assert split_answers("1. alpha\n3. beta\n4. gamma") == ["alpha", "beta", "gamma"]


def test_empty_items_and_duplicates_dropped_in_order():
    assert split_answers("1. alpha\n2.\n3. beta\n4. alpha\n5.   \n6. gamma\n7. beta") == ["alpha", "beta", "gamma"]
    assert split_answers("- \"\"\n- alpha") == ["alpha"]


def test_quotes_only_when_they_wrap_the_item():
    assert split_answers('1. "alpha" and "beta"\n2. gamma') == ['"alpha" and "beta"', "gamma"]
    assert split_answers("1. 'a'\n2. «b»") == ["a", "b"]


@pytest.mark.parametrize("reply", ["", "   ", "\n\n\n", "---", "1.\n2.\n3.", "- \n- "])
def test_nothing_to_split(reply):
    assert split_answers(reply) == []


def test_plain_text_is_one_answer():
    assert split_answers("  Just one answer, with no structure.  ") == ["Just one answer, with no structure."]


def test_limit():
    reply = "1. a\n2. b\n3. c"
    assert split_answers(reply, limit=2) == ["a", "b"]
    assert split_answers(reply, limit=0) == []
    assert split_answers(reply, limit=10) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="limit"):
        split_answers(reply, limit=-1)


def test_malformed_mixed_reply():
    # No space after the first marker, a stray bullet inside an item, the last item cut off by max_tokens.
    reply = "Sure:\n\n1.alpha?\n2. beta\n- side note\n3. gam"
    assert split_answers(reply) == ["alpha?", "beta\n- side note", "gam"]


def test_unicode_and_windows_newlines_survive():
    assert split_answers("1. café ☕\r\n2. naïve — ok") == ["café ☕", "naïve — ok"]
