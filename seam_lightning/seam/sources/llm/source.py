"""SEAM_GPT: a chat model writes N worse answers r* for each (I, r).

Three parts, each in its own module:

- a `ChatBackend` (:mod:`seam_lightning.llm.chat`) turns one prompt into one
  `Completion`: `OpenAIBackend` talks to any OpenAI-compatible endpoint (OpenAI,
  vLLM, llama.cpp server, ...) through the ``openai`` client, `TransformersBackend`
  samples from a local causal LM;
- a `CompletionCache` (:mod:`seam_lightning.llm.completion_cache`) keeps every completion on disk the moment it arrives
  (append-only JSONL, fsync'ed), so a crash or Ctrl-C loses nothing paid for
  and a rerun asks only for what is missing;
- `LLMSource` renders the paper's Prompt 2 (`seam_lightning.seam.sources.llm.prompts`) and asks
  either once for all N answers, splitting the reply (`seam_lightning.seam.sources.llm.replies`),
  or N times for one answer each; when answers are missing it asks again for the
  rest, up to ``max_rounds`` rounds per prompt.
"""


from __future__ import annotations

import hashlib
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from tqdm import tqdm

from seam_lightning.cache import cache_root
from seam_lightning.seam.sources.llm.prompts import AUTHORS_SYSTEM_MESSAGE, render_worse_answers_prompt, worse_answers_template
from seam_lightning.seam.sources.llm.replies import split_answers
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats, check_request, normalise_whitespace
from seam_lightning.llm.chat import ChatBackend, ChatRequestRejected, Completion
from seam_lightning.llm.completion_cache import CompletionCache, completion_key

log = logging.getLogger(__name__)


def _preview(text: str, width: int = 60) -> str:
    text = normalise_whitespace(text)
    return text if len(text) <= width else text[: width - 3] + "..."


TOKENS_PER_ANSWER: Mapping[str, int] = MappingProxyType({"one": 34, "per_answer": 128})
"""Default reply budget per answer asked for, by request mode.

"one": 34 tokens, about what the package's former fixed budget of 1,024 tokens per reply
gave each of the paper's 30 answers (1024 / 30 = 34.1). "per_answer": 128 tokens, where
the authors' released code cuts each worse answer (its PM scoring keeps an answer's first
128 tokens).
"""

RequestMode = Literal["one", "per_answer"]


class LLMSource(CandidateSource):
    """SEAM_GPT candidates: a chat model's worse answers to each (instruction, golden response).

    Two ways to ask (``requests``), both from the paper's Appendix D.1:

    - ``"one"`` (default): one request per example asks for all N answers, as the
      paper's Prompt 2 does; the reply is split into answers (`split_answers`).
    - ``"per_answer"``: N separate requests per example, each for one long worse
      answer, as the authors' released code does: Prompt 2 in the singular
      (``"paper_single"``), their system message (`AUTHORS_SYSTEM_MESSAGE`), each
      reply limited to 128 tokens (where their scoring cuts an answer) and taken
      whole as one answer.

    Token budget of one reply: ``ceil(tokens_per_answer * k)`` for a request asking for
    k answers (k = the number still missing in "one" mode, 1 in "per_answer" mode);
    ``tokens_per_answer`` defaults to `TOKENS_PER_ANSWER` of the mode (34, so 1,020
    tokens for 30 answers at once; 128 per separate answer). ``max_tokens`` instead
    fixes the budget of every reply.

    When a round yields fewer than N new answers, the model is asked again for the
    remaining number, up to ``max_rounds`` rounds per example. Answers equal to the
    golden response or to an earlier answer (up to whitespace) are dropped; at most N
    are returned. Every completion is cached on disk as it arrives (see `CompletionCache`);
    the key holds the back end, prompt, system message, temperature, budget, seed, and
    the round ("one") or the request's index among the example's requests ("per_answer"),
    so a rerun, even with a larger N, asks only for what is missing.

    Args:
        backend: the chat model (`OpenAIBackend`, `TransformersBackend`, or your own `ChatBackend`).
        prompt_template: a name of `WORSE_ANSWERS_PROMPTS` (``paper``, ``paper_single``,
            ``numbered``) or a template text with {question}, {answer} and {n} ({n} optional
            with ``requests="per_answer"``, where it is 1). None: ``paper`` for "one",
            ``paper_single`` for "per_answer".
        temperature: sampling temperature (the paper's code uses 1.0).
        max_tokens: fixed token budget of every reply; None: scaled with the answers asked for (above).
        max_rounds: rounds of requests per example at most (1 = never ask again for the rest).
        concurrency: examples in flight at once (threads; requests are I/O bound; the
            "per_answer" requests of one example go one after another).
        cache_dir: where completions are kept; default ``cache_root()/"llm"``.
        progress: show a progress bar over the examples.
        seed: when set, each request gets a seed derived from it and the request
            (reproducible where the back-end honours seeds); it becomes part of the cache key.
        requests: ``"one"`` or ``"per_answer"`` (above).
        system_prompt: system message sent before each prompt. None: none for "one"
            (the paper gives none), `AUTHORS_SYSTEM_MESSAGE` for "per_answer"; "" sends none.
        tokens_per_answer: reply budget per answer asked for; None: `TOKENS_PER_ANSWER` of the mode.
    """

    def __init__(
        self,
        backend: ChatBackend,
        prompt_template: str | None = None,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        max_rounds: int = 3,
        concurrency: int = 4,
        cache_dir: str | None = None,
        progress: bool = True,
        seed: int | None = None,
        requests: RequestMode = "one",
        system_prompt: str | None = None,
        tokens_per_answer: float | None = None,
    ) -> None:
        if not isinstance(backend, ChatBackend):
            raise TypeError(f"backend must be a ChatBackend (e.g. OpenAIBackend), got {type(backend).__name__}")
        self._template = worse_answers_template(prompt_template, requests)  # checks requests, too
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if requests == "per_answer" and temperature == 0:
            raise ValueError("requests='per_answer' needs temperature > 0: greedy decoding would give "
                             "the same answer to each of the N requests")
        for label, value in (("max_tokens", max_tokens), ("max_rounds", max_rounds), ("concurrency", concurrency),
                             ("tokens_per_answer", tokens_per_answer)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if max_tokens is not None and tokens_per_answer is not None:
            raise ValueError("give max_tokens (a fixed budget per reply) or tokens_per_answer "
                             "(a budget scaled with the answers asked for), not both")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError(f"system_prompt must be a string or None, got {type(system_prompt).__name__}")
        self.backend, self.prompt_template, self.requests = backend, prompt_template, requests
        self.system_prompt = system_prompt
        self.temperature, self.max_tokens, self.max_rounds = temperature, max_tokens, max_rounds
        self.tokens_per_answer = TOKENS_PER_ANSWER[requests] if tokens_per_answer is None else tokens_per_answer
        self.concurrency, self.cache_dir, self.progress, self.seed = concurrency, cache_dir, progress, seed
        # Of the latest `candidates` call: completions served from the cache, requests made.
        self.last_cache_hits = 0
        self.last_requests = 0
        self.last_rejected = 0  # examples whose request the endpoint refused (see ChatRequestRejected)
        self._cache: CompletionCache | None = None
        self._count_lock = threading.Lock()

    @property
    def system(self) -> str | None:
        """The system message sent with each request (None: none)."""
        if self.system_prompt is None:
            return AUTHORS_SYSTEM_MESSAGE if self.requests == "per_answer" else None
        return self.system_prompt or None

    def budget(self, k: int) -> int:
        """Token budget of a reply that is to hold ``k`` answers: ``max_tokens``, else ceil(tokens_per_answer * k)."""
        return self.max_tokens if self.max_tokens is not None else math.ceil(self.tokens_per_answer * k)

    @property
    def cache_path(self) -> Path:
        """This back-end's cache file: one per back-end name."""
        root = Path(self.cache_dir) if self.cache_dir else cache_root() / "llm"
        return root / f"{hashlib.sha256(self.backend.name.encode('utf-8')).hexdigest()[:16]}.jsonl"

    def prepare(self) -> None:
        """Read the cache file (idempotent; `candidates` calls it)."""
        path = self.cache_path
        if self._cache is None or self._cache.path != path:
            self._cache = CompletionCache(path)
        self._cache.load()

    def candidates(self, instructions: list[str], responses: list[str], num_candidates: int) -> list[list[str]]:
        """Up to num_candidates worse answers per example, same order as the inputs."""
        check_request(instructions, responses, num_candidates)
        self.prepare()
        before = self.backend.usage
        self.last_cache_hits = self.last_requests = self.last_rejected = 0
        # Identical examples are asked once.
        unique = list(dict.fromkeys(zip(instructions, responses)))
        answers: dict[tuple[str, str], list[str]] = {}
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(unique))),
                                  thread_name_prefix="llm-source")
        try:
            futures = {pool.submit(self._answers, q, r, num_candidates): (q, r) for q, r in unique}
            with tqdm(total=len(unique), desc="llm candidates", unit="prompt", disable=not self.progress) as bar:
                for future in as_completed(futures):
                    answers[futures[future]] = future.result()
                    bar.update(1)
        except BaseException:
            # Ctrl-C or a fatal error: drop what has not started. What finished is already on disk.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        result = [list(answers[(q, r)]) for q, r in zip(instructions, responses)]
        self.last_stats = CandidateStats.of(result, num_candidates)
        spent = self.backend.usage.minus(before)
        log.info(
            "llm: %d prompts, %d candidates; %d prompts got fewer than %d (%d got none); "
            "%d replies from the cache %s, %d new, %d refused",
            self.last_stats.prompts, self.last_stats.candidates, self.last_stats.short, num_candidates,
            self.last_stats.empty, self.last_cache_hits, self._cache.path, self.last_requests, self.last_rejected,
        )
        log.info("llm: %s this call: %s; since start: %s", self.backend.name, spent.describe(),
                 self.backend.usage.describe())
        return result

    def _answers(self, question: str, golden: str, n: int) -> list[str]:
        """Ask until n new answers or max_rounds rounds; each round asks for the number still missing."""
        out, seen = [], {normalise_whitespace(golden)}
        asked = 0  # "per_answer": the example's requests so far; the next one's index in the cache key
        for round_index in range(self.max_rounds):
            need = n - len(out)
            if need <= 0:
                break
            if self.requests == "one":
                replies = self._one_request(question, golden, need, round_index)
            else:
                replies = self._separate_requests(question, golden, asked, need)
                asked += need
            added = 0
            try:
                for answers in replies:
                    for answer in answers:
                        key = normalise_whitespace(answer)
                        if key in seen:
                            continue
                        seen.add(key)
                        out.append(answer)
                        added += 1
                        if len(out) == n:
                            break
            except ChatRequestRejected as e:
                # Not cached: a rerun (maybe with a larger model or max_tokens) asks again.
                log.warning("llm: no more candidates for the example %r: %s", _preview(question), e)
                with self._count_lock:
                    self.last_rejected += 1
                break
            if not added and self.temperature == 0:
                break  # greedy decoding would give the same reply to the same prompt
        return out

    def _one_request(self, question: str, golden: str, k: int, round_index: int) -> Iterator[list[str]]:
        """The answers of one reply asking for ``k`` (Prompt 2, Appendix D.1)."""
        prompt = render_worse_answers_prompt(self._template, question, golden, k)
        yield split_answers(self._complete(prompt, self.budget(k), round_index=round_index).text)

    def _separate_requests(self, question: str, golden: str, first: int, k: int) -> Iterator[list[str]]:
        """The answers of ``k`` one-answer requests, numbered from ``first`` (the authors' released code).

        Each reply is one answer, taken whole (stripped): a long answer may hold lists of its own.
        """
        prompt = render_worse_answers_prompt(self._template, question, golden, 1, requests="per_answer")
        for index in range(first, first + k):
            text = self._complete(prompt, self.budget(1), answer_index=index).text.strip()
            yield [text] if text else []

    def _complete(self, prompt: str, max_tokens: int, round_index: int = 0,
                  answer_index: int | None = None) -> Completion:
        """The cached reply for this request, else a new one (cached before it is used)."""
        system = self.system
        key = completion_key(self.backend.name, prompt, self.temperature, max_tokens, round_index, self.seed,
                             system=system, answer_index=answer_index)
        hit = self._cache.get(key)
        if hit is not None:
            with self._count_lock:
                self.last_cache_hits += 1
            return hit
        # A seed per request, from the key: reproducible, and distinct across prompts, rounds and indices.
        seed = None if self.seed is None else int(key[:8], 16) & 0x7FFFFFFF
        # The system message only when there is one: back ends written before it existed still work.
        extra = {} if system is None else {"system": system}
        completion = self.backend.complete(prompt, temperature=self.temperature, max_tokens=max_tokens, seed=seed,
                                           **extra)
        self._cache.put(key, completion, model=self.backend.name)
        with self._count_lock:
            self.last_requests += 1
        return completion
