"""The prompt that asks a chat model for worse answers (SEAM_GPT), in one place.

It follows the paper's Prompt 2 (Appendix D.1 of arXiv 2406.07971): given a
question and its correct answer, write answers of lower quality whose mistakes
vary — factual errors, misreading the question, irrelevant content, poor
grammar. Ours asks for all ``{n}`` answers in one reply, as a numbered list that
:func:`seam_lightning.seam.replies.split_answers` parses, and shows the correct
answer once.

A user template replaces the whole text; it must contain exactly the fields
``{question}``, ``{answer}`` and ``{n}`` (write a literal brace as ``{{`` or ``}}``).
"""

from __future__ import annotations

from string import Formatter

WORSE_ANSWERS_PROMPT = """\
Below is a question with its correct answer. Write {n} different answers to the same question that
are clearly worse than the correct one. Make each answer flawed in its own way: wrong facts,
a misreading of what was asked, content that does not address the question, or careless grammar.
Keep the answers plausible at first glance, and vary their mistakes.

[Question]
{question}
[Answer]
{answer}

Reply with the {n} answers only, as a numbered list (1., 2., ...), one answer per item.
"""
"""The worse-answers prompt (the paper's Prompt 2, asking for ``{n}`` answers at once)."""

FIELDS = frozenset({"question", "answer", "n"})
"""The placeholders a worse-answers template must use, each at least once, and no others."""


def check_template(template: str) -> None:
    """Raise ValueError naming what is wrong unless ``template`` uses exactly {question}, {answer}, {n}."""
    check_placeholders(template, FIELDS, "prompt_template")


def check_placeholders(template: str, fields: frozenset[str], name: str) -> None:
    """Raise ValueError naming what is wrong unless ``template`` uses each of ``fields``, plainly, and no other.

    ``name`` is how the error calls the template (an argument name, "judge template").
    """
    if not isinstance(template, str):
        raise ValueError(f"{name} must be a string, got {type(template).__name__}")
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as e:  # a lone '{' or '}'
        raise ValueError(
            f"{name} is not a valid format string ({e}); write a literal brace as '{{{{' or '}}}}'"
        ) from None
    allowed = ", ".join("{" + f + "}" for f in sorted(fields))
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in fields:
            raise ValueError(
                f"{name} has an unknown placeholder {{{field}}}; allowed are {allowed} "
                "(write a literal brace as '{{' or '}}')"
            )
        if spec or conversion:
            # '{n:03d}' or '{answer!r}' would change the text the cache key and the model see.
            raise ValueError(f"{name}: placeholder {{{field}}} must be plain, without a format spec or !conversion")
        used.add(field)
    missing = sorted(fields - used)
    if missing:
        raise ValueError(f"{name} lacks the placeholder(s) " + ", ".join("{" + m + "}" for m in missing)
                         + f"; it needs {allowed}")


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
