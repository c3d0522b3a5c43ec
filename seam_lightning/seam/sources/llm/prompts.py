"""The prompts that ask a chat model for worse answers (SEAM_GPT), in one place.

The default is the paper's Prompt 2 (Appendix D.1 of arXiv 2406.07971), verbatim:
given a question and its correct answer, write ``{n}`` answers of lower quality
whose mistakes vary (factual errors, misreading the question, irrelevant content,
poor grammar), as separate paragraphs. Named alternatives (`WORSE_ANSWERS_PROMPTS`):

- ``"paper"``: Prompt 2 as printed, the number of answers ("30") as ``{n}``;
- ``"paper_single"``: Prompt 2 in the singular, one answer per request, as the
  authors' released code asks (``LLMSource(requests="per_answer")``);
- ``"numbered"``: the package's earlier wording, asking for a numbered list.

A template is either one of those names or a whole text with the fields
``{question}``, ``{answer}`` and ``{n}`` (write a literal brace as ``{{`` or ``}}``);
a one-answer-per-request template may leave ``{n}`` out (it is rendered as 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from seam_lightning.llm.templates import check_placeholders, resolve_template

# Prompt 2 as printed in paper.txt (lines 371-385), character for character, except "30" -> "{n}".
# Where we had to interpret the extracted text:
# - The line breaks are the extracted ones (a blank line between blocks, "[Question] {question}"
#   on one line); we keep them rather than guess the original layout.
# - "[System]" heads the printed prompt; it stays a line of the text (the whole text is sent as
#   one user message), since the paper names no separate system message for Prompt 2.
# - The paper's own slots "{question}" and "{answer}" are the package's placeholders; the golden
#   answer fills both "{answer}" slots, as printed (the authors' released code does the same).
# The question and answer blocks that close Prompt 2; its one-answer form keeps them as printed.
_PROMPT_2_BLOCKS = (
    "[Question] {question}\n"
    "\n"
    "[Answer]\n"
    "\n"
    "{answer}\n"
    "\n"
    "[The Start of Assistant's Answer]\n"
    "\n"
    "{answer}\n"
    "\n"
    "[The End of Assistant's Answer]"
)

PAPER_WORSE_ANSWERS_PROMPT = (
    "[System]\n"
    "\n"
    "Using the question and its correct answer provided below, generate {n} distinct answers that are of "
    "lower quality. Each response should include one or more of the following characteristics: factual "
    "inaccuracies, misunderstandings of the core question, irrelevant information, or grammatical errors. "
    "The answers should vary in their mistakes to cover a range of common errors seen in similar topics. "
    "Format the responses as separate paragraphs for each answer.\n"
    "\n"
    + _PROMPT_2_BLOCKS
)
"""The paper's Prompt 2 (Appendix D.1), verbatim, asking for ``{n}`` worse answers in one reply."""

# Prompt 2 in the singular (our adaptation, the layout of Prompt 2 kept): "generate {n} distinct
# answers ... Each response" becomes "generate an answer ... The response", and the request for
# separate paragraphs goes, as in the authors' released code, which asks for one answer per request.
PAPER_SINGLE_ANSWER_PROMPT = (
    "[System]\n"
    "\n"
    "Using the question and its correct answer provided below, generate an answer that is of lower quality. "
    "The response should include one or more of the following characteristics: factual inaccuracies, "
    "misunderstandings of the core question, irrelevant information, or grammatical errors. The answers "
    "should vary in their mistakes to cover a range of common errors seen in similar topics.\n"
    "\n"
    + _PROMPT_2_BLOCKS
)
"""Prompt 2 asking for one worse answer (``requests="per_answer"``); fields {question} and {answer}."""

NUMBERED_WORSE_ANSWERS_PROMPT = """\
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
"""The package's earlier wording of Prompt 2: ``{n}`` answers as a numbered list, the correct answer shown once."""

WORSE_ANSWERS_PROMPT = PAPER_WORSE_ANSWERS_PROMPT
"""The default worse-answers prompt: the paper's Prompt 2."""

WORSE_ANSWERS_PROMPTS: Mapping[str, str] = MappingProxyType({
    "paper": PAPER_WORSE_ANSWERS_PROMPT,
    "paper_single": PAPER_SINGLE_ANSWER_PROMPT,
    "numbered": NUMBERED_WORSE_ANSWERS_PROMPT,
})
"""The worse-answers templates by name (``prompt_template: numbered`` in a config)."""

DEFAULT_PROMPT_NAMES: Mapping[str, str] = MappingProxyType({"one": "paper", "per_answer": "paper_single"})
"""The template each request mode uses unless told otherwise."""

AUTHORS_SYSTEM_MESSAGE = "You generate responses to questions with lower quality. Your generated responses are long."
"""The system message of the authors' released SEAM_GPT code (one long worse answer per request)."""

FIELDS = frozenset({"question", "answer", "n"})
"""The placeholders a worse-answers template must use, each at least once, and no others."""

def check_template(template: str) -> None:
    """Raise ValueError naming what is wrong unless ``template`` uses exactly {question}, {answer}, {n}."""
    check_placeholders(template, FIELDS, "prompt_template")


def worse_answers_template(template: str | None, requests: str = "one") -> str:
    """The checked worse-answers template text for a request mode (paper Appendix D.1).

    ``template`` is a name of `WORSE_ANSWERS_PROMPTS`, a template text, or None for the
    mode's default (`DEFAULT_PROMPT_NAMES`). ``requests="one"`` asks for all answers in
    one reply, so the template needs {n}; ``"per_answer"`` asks for one answer per
    request, so {n} is optional there (rendered as 1).
    """
    if requests not in DEFAULT_PROMPT_NAMES:
        raise ValueError(f"requests must be one of {', '.join(map(repr, DEFAULT_PROMPT_NAMES))}, got {requests!r}")
    if template is None:
        template = DEFAULT_PROMPT_NAMES[requests]
    if requests == "one":
        return resolve_template(template, WORSE_ANSWERS_PROMPTS, FIELDS, "prompt_template")
    return resolve_template(template, WORSE_ANSWERS_PROMPTS, FIELDS - {"n"}, "prompt_template",
                            optional=frozenset({"n"}))


def render_worse_answers_prompt(template: str | None, question: str, answer: str, n: int, requests: str = "one") -> str:
    """The prompt asking for ``n`` worse answers to (question, correct answer).

    ``template``: as `worse_answers_template` takes it (None = the mode's default).
    """
    text = worse_answers_template(template, requests)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    # str.format inserts the values verbatim: braces inside a question or answer are safe.
    return text.format(question=question, answer=answer, n=n)
