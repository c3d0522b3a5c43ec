"""The prompt that asks a chat model for worse answers (SEAM_GPT), in one place.

Source of the wording. The paper's Prompt 2 (Appendix D.1 of arXiv 2406.07971)
could not be read from the stored copies available when this was written; the
text below is the authors' own prompt from their released code
(github.com/TaiMingLu/seamless, ``code/retrival/gpt/retrival.py``, ``get_prompt``),
which the paper's appendix reproduces in spirit. Two changes, both needed to ask
for N answers in one reply rather than one answer per completion (the released
code requests ``n=k`` completions of a one-answer prompt):

- "generate an answer that is of lower quality" became "generate {n} answers
  that are of lower quality", and a last line asks for a numbered list, which
  `seam_lightning.seam.replies.split_answers` parses;
- the released prompt repeats the golden answer inside a
  "[The Start of Assistant's Answer] ... [The End of Assistant's Answer]" block
  (a copy of the "[Answer]" block, apparently a leftover of a judge template);
  it is left out, so the golden answer appears once.

The released code also sends the system message "You generate responses to
questions with lower quality. Your generated responses are long."; a
`ChatBackend` sends one user message, so that sentence is not sent.

A user template replaces the whole text; it must contain exactly the fields
``{question}``, ``{answer}`` and ``{n}`` (write a literal brace as ``{{`` or ``}}``).
"""

from __future__ import annotations

from string import Formatter

WORSE_ANSWERS_PROMPT = """\
Using the question and its correct answer provided below, generate {n} answers that are of
lower quality. The response should include one or more of the following characteristics: factual
inaccuracies, misunderstandings of the core question, irrelevant information, or grammatical errors.
The answers should vary in their mistakes to cover a range of common errors seen in similar topics.
[Question]
{question}
[Answer]
{answer}
Write the {n} answers as a numbered list (1., 2., ...), one answer per item, and nothing else.
"""
"""Prompt 2 of the paper, adapted to ask for ``{n}`` answers at once (see the module docstring)."""

FIELDS = frozenset({"question", "answer", "n"})
"""The placeholders a worse-answers template must use, each at least once, and no others."""


def check_template(template: str) -> None:
    """Raise ValueError naming what is wrong unless ``template`` uses exactly {question}, {answer}, {n}."""
    if not isinstance(template, str):
        raise ValueError(f"prompt_template must be a string, got {type(template).__name__}")
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as e:  # a lone '{' or '}'
        raise ValueError(
            f"prompt_template is not a valid format string ({e}); write a literal brace as '{{{{' or '}}}}'"
        ) from None
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            raise ValueError(
                f"prompt_template has an unknown placeholder {{{field}}}; allowed are {{question}}, {{answer}} "
                "and {n} (write a literal brace as '{{' or '}}')"
            )
        if spec or conversion:
            # '{n:03d}' or '{answer!r}' would change the text the cache key and the model see.
            raise ValueError(f"prompt_template: placeholder {{{field}}} must be plain, without a format spec or !conversion")
        used.add(field)
    missing = sorted(FIELDS - used)
    if missing:
        raise ValueError(
            "prompt_template lacks the placeholder(s) " + ", ".join("{" + m + "}" for m in missing)
            + "; a worse-answers template needs {question}, {answer} and {n}"
        )


def render_worse_answers_prompt(template: str | None, question: str, answer: str, n: int) -> str:
    """The prompt asking for ``n`` worse answers to (question, correct answer); None = `WORSE_ANSWERS_PROMPT`."""
    if template is None:
        template = WORSE_ANSWERS_PROMPT
    else:
        check_template(template)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    # str.format inserts the values verbatim: braces inside a question or answer are safe.
    return template.format(question=question, answer=answer, n=n)
