"""An LLM judge: a chat model rates each (question, answer) on a scale of 0 to 10.

`JUDGE_PROMPT` is the paper's Prompt 1 (Appendix C.1; MT-Bench single-answer
grading), verbatim: an impartial judge explains briefly, then gives the rating as
``[[rating]]``. `parse_rating` reads that rating out of any reply, from 0 to 10 as
Appendix C.2 gives the range; `LLMJudge` asks a `ChatBackend` for many pairs at
once, with every reply cached on disk the way `LLMSource` caches its candidates,
so a rerun asks for nothing it already has.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from types import MappingProxyType

from tqdm import tqdm

from seam_lightning.cache import cache_root
from seam_lightning.llm.chat import ChatBackend, ChatRequestRejected
from seam_lightning.llm.completion_cache import CompletionCache, completion_key
from seam_lightning.llm.templates import check_placeholders, resolve_template

log = logging.getLogger(__name__)

# Prompt 1 as printed in paper.txt (lines 342-348), character for character. Where we had to
# interpret the extracted text:
# - The line breaks are the extracted ones: "[Question] {question} [The Start of Assistant's
#   Answer] {answer}" stands on one line, as printed (MT-Bench's own template breaks it up).
# - "[System]" heads the printed prompt; it stays a line of the text, sent as one user message.
# - The paper's own slots "{question}" and "{answer}" are the package's placeholders.
# The prompt asks for "a scale of 1 to 10"; Appendix C.2 gives the scores as 0 to 10, and
# `parse_rating` accepts that range.
PAPER_JUDGE_PROMPT = (
    "[System]\n"
    "\n"
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by "
    "providing a short explanation. Be as objective as possible. After providing your explanation, please rate "
    "the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: "
    "\"Rating: [[5]]\".\n"
    "\n"
    "[Question] {question} [The Start of Assistant's Answer] {answer}\n"
    "\n"
    "[The End of Assistant's Answer]"
)
"""The paper's Prompt 1 (Appendix C.1), verbatim; fields {question} and {answer}."""

REWORDED_JUDGE_PROMPT = """\
Please act as an impartial judge and evaluate the quality of the answer that an AI assistant gave to
the user question below. Consider how helpful, relevant, accurate, deep and detailed the answer is.
Begin with a short explanation of your judgement, as objective as you can make it. Then rate the
answer on a scale of 1 to 10, strictly in this format: "[[rating]]", for example "Rating: [[5]]".

[Question]
{question}

[The Start of the Assistant's Answer]
{answer}
[The End of the Assistant's Answer]
"""
"""The package's earlier wording of Prompt 1, each block on lines of its own; fields {question} and {answer}."""

JUDGE_PROMPT = PAPER_JUDGE_PROMPT
"""The default judge prompt: the paper's Prompt 1."""

JUDGE_PROMPTS: Mapping[str, str] = MappingProxyType({"paper": PAPER_JUDGE_PROMPT, "reworded": REWORDED_JUDGE_PROMPT})
"""The judge templates by name (``LLMJudge(backend, template="reworded")``)."""

JUDGE_FIELDS = frozenset({"question", "answer"})
MIN_RATING, MAX_RATING = 0.0, 10.0
"""The judge's score range, Appendix C.2: "a quality score, ranging from 0 to 10"."""

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_OUT_OF_TEN = r"\s*(?:/|out\s+of)\s*10(?:\.0*)?(?![0-9.])"
# Inside [[ ]]: a number, optionally "/10" or "out of 10"; a sign is read so that "-3" is rejected, not read as 3.
_BRACKET_CONTENT = re.compile(rf"\s*([+-]?{_NUMBER})(?:{_OUT_OF_TEN})?\s*", re.ASCII | re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[([^\[\]]*)\]\]")
# "Rating: 7", "rating of 7/10", "rated it 8", "Rating: **6**" — not the range in "rating from 1 to 10".
_RATING_WORD = re.compile(
    rf"\brat(?:ing|ed|e)\b[^0-9\n+-]{{0,24}}?([+-]?{_NUMBER})(?!\s*(?:to|-|–)\s*[0-9])(?![0-9])",
    re.ASCII | re.IGNORECASE,
)
_OUT_OF = re.compile(rf"(?<![0-9.])([+-]?{_NUMBER}){_OUT_OF_TEN}", re.ASCII | re.IGNORECASE)


def check_judge_template(template: str) -> None:
    """Raise ValueError naming what is wrong unless ``template`` uses exactly {question} and {answer}."""
    check_placeholders(template, JUDGE_FIELDS, "judge template")


def judge_template(template: str) -> str:
    """The checked template text for ``template``: a name of `JUDGE_PROMPTS` or a template text."""
    return resolve_template(template, JUDGE_PROMPTS, JUDGE_FIELDS, "judge template")


def render_judge_prompt(template: str, question: str, answer: str) -> str:
    """The judge prompt for one (question, answer); braces inside either are inserted verbatim."""
    return template.format(question=question, answer=answer)


def _in_range(text: str) -> float | None:
    if text.startswith("-"):
        return None  # "-3", and "-0": a negative rating is malformed, never clipped or read as 0
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and MIN_RATING <= value <= MAX_RATING else None


def parse_rating(reply: str) -> float | None:
    """The rating in a judge's reply, or None when there is none in [0, 10] (Appendix C.2). Never raises.

    The last ``[[x]]`` holding a number wins (``[[7]]``, ``[[ 7.5 ]]``, ``[[7/10]]``, ``[[0]]``);
    brackets holding no number (``[[rating]]``, ``[[ten]]``) are ignored. Without any,
    the last "Rating: 7" / "rating of 7/10" is read, then the last bare "7/10". A value
    outside [0, 10] (``[[11]]``, ``[[-3]]``) gives None, not a clipped rating.
    """
    if not isinstance(reply, str) or not reply:
        return None
    try:
        numbers = [m.group(1) for m in map(_BRACKET_CONTENT.fullmatch, _BRACKETS.findall(reply)) if m]
        if numbers:
            return _in_range(numbers[-1])
        for pattern in (_RATING_WORD, _OUT_OF):
            last = None
            for last in pattern.finditer(reply):
                pass
            if last is not None:
                return _in_range(last.group(1))
    except Exception:  # e.g. MemoryError on an absurd reply: no rating rather than a crash
        log.debug("parse_rating failed on a reply of %d characters", len(reply), exc_info=True)
    return None


class LLMJudge:
    """Ratings from 0 to 10 (Appendix C.2) of answers to questions, by a chat model, cached on disk.

    Args:
        backend: the judge model (`OpenAIBackend`, `TransformersBackend`, or your own `ChatBackend`).
        cache_path: the JSONL file replies are kept in; default
            ``cache_root()/"judge"/<hash of the back-end name>.jsonl``.
        template: a name of `JUDGE_PROMPTS` (``paper``: the paper's Prompt 1, the default;
            ``reworded``: the package's earlier wording) or a template text with exactly
            {question} and {answer}. The judge keeps the text in ``self.template``.
        temperature: sampling temperature of the judge (0 = greedy, as MT-Bench).
        max_tokens: token budget of one reply (explanation and rating).
        max_workers: requests in flight at once (threads; requests are I/O bound).
        progress: show a progress bar over the pairs.
    """

    def __init__(
        self,
        backend: ChatBackend,
        cache_path: str | None = None,
        template: str = "paper",
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_workers: int = 4,
        progress: bool = True,
    ) -> None:
        if not isinstance(backend, ChatBackend):
            raise TypeError(f"backend must be a ChatBackend (e.g. OpenAIBackend), got {type(backend).__name__}")
        template = judge_template(template)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        for label, value in (("max_tokens", max_tokens), ("max_workers", max_workers)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.backend, self.template = backend, template
        self.temperature, self.max_tokens, self.max_workers, self.progress = temperature, max_tokens, max_workers, progress
        digest = hashlib.sha256(backend.name.encode("utf-8")).hexdigest()[:16]
        self.cache = CompletionCache(Path(cache_path) if cache_path else cache_root() / "judge" / f"{digest}.jsonl")
        # Of the latest `rate` call: replies served from the cache, requests made, requests refused.
        self.last_cache_hits = self.last_requests = self.last_rejected = 0
        self._count_lock = threading.Lock()

    def rate(self, questions: list[str], answers: list[str]) -> list[float | None]:
        """A rating in [0, 10] per (question, answer), in input order; None where the reply held none."""
        if len(questions) != len(answers):
            raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
        for label, texts in (("questions", questions), ("answers", answers)):
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise TypeError(f"{label}[{bad}] must be a string, got {type(texts[bad]).__name__}")
        self.cache.load()
        self.last_cache_hits = self.last_requests = self.last_rejected = 0
        unique = list(dict.fromkeys(zip(questions, answers)))  # identical pairs are asked once
        replies: dict[tuple[str, str], str | None] = {}
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, max(1, len(unique))), thread_name_prefix="judge")
        try:
            futures = {pool.submit(self._reply, q, a): (q, a) for q, a in unique}
            with tqdm(total=len(unique), desc="judge", unit="answer", disable=not self.progress) as bar:
                for future in as_completed(futures):
                    replies[futures[future]] = future.result()
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # what finished is already on disk
            raise
        pool.shutdown()
        texts = [replies[pair] for pair in zip(questions, answers)]
        ratings = [None if text is None else parse_rating(text) for text in texts]
        unparsable = [i for i, (t, r) in enumerate(zip(texts, ratings)) if t is not None and r is None]
        if unparsable:
            shown = ", ".join(map(str, unparsable[:20])) + (", ..." if len(unparsable) > 20 else "")
            first = " ".join(texts[unparsable[0]].split())
            log.warning("judge: %d of %d replies hold no rating in [%g, %g] (example index %s); the first reads %r",
                        len(unparsable), len(texts), MIN_RATING, MAX_RATING, shown,
                        first[:200] + ("..." if len(first) > 200 else ""))
        log.info("judge: %d answers, %d replies from the cache %s, %d new, %d refused",
                 len(texts), self.last_cache_hits, self.cache.path, self.last_requests, self.last_rejected)
        return ratings

    def _reply(self, question: str, answer: str) -> str | None:
        """The cached reply for this pair, else a new one (cached before it is used); None if refused."""
        prompt = render_judge_prompt(self.template, question, answer)
        key = completion_key(self.backend.name, prompt, self.temperature, self.max_tokens, 0)
        hit = self.cache.get(key)
        if hit is not None:
            with self._count_lock:
                self.last_cache_hits += 1
            return hit.text
        try:
            completion = self.backend.complete(prompt, temperature=self.temperature, max_tokens=self.max_tokens)
        except ChatRequestRejected as e:
            # Not cached: a rerun (maybe with a larger model) asks again.
            log.warning("judge: the endpoint refused to rate the answer to %r: %s", question[:60], e)
            with self._count_lock:
                self.last_rejected += 1
            return None
        self.cache.put(key, completion, model=self.backend.name)
        with self._count_lock:
            self.last_requests += 1
        return completion.text
