"""SEAM_GPT: a chat model writes N worse answers r* for each (I, r).

Three parts, each in its own module:

- a `ChatBackend` (:mod:`seam_lightning.seam.chat`) turns one prompt into one
  `Completion`: `OpenAIBackend` talks to any OpenAI-compatible endpoint (OpenAI,
  vLLM, llama.cpp server, ...) through the ``openai`` client, `TransformersBackend`
  samples from a local causal LM;
- a `CompletionCache` (:mod:`seam_lightning.seam.completion_cache`) keeps every completion on disk the moment it arrives
  (append-only JSONL, fsync'ed), so a crash or Ctrl-C loses nothing paid for
  and a rerun asks only for what is missing;
- `LLMSource` renders the paper's Prompt 2 (`seam_lightning.seam.prompts`), splits
  each reply into answers (`seam_lightning.seam.replies`) and, when a reply holds
  fewer than N, asks again for the rest, up to ``max_rounds`` requests per prompt.
"""


from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from seam_lightning.cache import cache_root
from seam_lightning.seam.prompts import check_template, render_worse_answers_prompt
from seam_lightning.seam.replies import split_answers
from seam_lightning.seam.sources.base import CandidateSource, CandidateStats, check_request, normalise_whitespace
from seam_lightning.seam.chat import ChatBackend, ChatRequestRejected, Completion
from seam_lightning.seam.completion_cache import CompletionCache, completion_key

log = logging.getLogger(__name__)


def _preview(text: str, width: int = 60) -> str:
    text = normalise_whitespace(text)
    return text if len(text) <= width else text[: width - 3] + "..."


class LLMSource(CandidateSource):
    """SEAM_GPT candidates: a chat model's worse answers to each (instruction, golden response).

    For each example the paper's Prompt 2 asks for N worse answers; the reply is split
    into answers. When it holds fewer than N new ones, the model is asked again for the
    remaining number, up to ``max_rounds`` requests per example. Answers equal to the
    golden response or to an earlier answer (up to whitespace) are dropped; at most N
    are returned. Every completion is cached on disk as it arrives (see `CompletionCache`).

    Args:
        backend: the chat model (`OpenAIBackend`, `TransformersBackend`, or your own `ChatBackend`).
        prompt_template: replaces `WORSE_ANSWERS_PROMPT`; needs {question}, {answer} and {n}.
        temperature: sampling temperature (the paper's code uses 1.0).
        max_tokens: token budget of one reply (all its answers together).
        max_rounds: requests per example at most (1 = never ask again for the rest).
        concurrency: examples in flight at once (threads; requests are I/O bound).
        cache_dir: where completions are kept; default ``cache_root()/"llm"``.
        progress: show a progress bar over the examples.
        seed: when set, each request gets a seed derived from it and the request
            (reproducible where the back-end honours seeds); it becomes part of the cache key.
    """

    def __init__(
        self,
        backend: ChatBackend,
        prompt_template: str | None = None,
        temperature: float = 1.0,
        max_tokens: int = 1024,
        max_rounds: int = 3,
        concurrency: int = 4,
        cache_dir: str | None = None,
        progress: bool = True,
        seed: int | None = None,
    ) -> None:
        if not isinstance(backend, ChatBackend):
            raise TypeError(f"backend must be a ChatBackend (e.g. OpenAIBackend), got {type(backend).__name__}")
        if prompt_template is not None:
            check_template(prompt_template)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        for label, value in (("max_tokens", max_tokens), ("max_rounds", max_rounds), ("concurrency", concurrency)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        self.backend, self.prompt_template = backend, prompt_template
        self.temperature, self.max_tokens, self.max_rounds = temperature, max_tokens, max_rounds
        self.concurrency, self.cache_dir, self.progress, self.seed = concurrency, cache_dir, progress, seed
        # Of the latest `candidates` call: completions served from the cache, requests made.
        self.last_cache_hits = 0
        self.last_requests = 0
        self.last_rejected = 0  # examples whose request the endpoint refused (see ChatRequestRejected)
        self._cache: CompletionCache | None = None
        self._count_lock = threading.Lock()

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
        """Ask until n new answers or max_rounds requests; each round asks for the number still missing."""
        out, seen = [], {normalise_whitespace(golden)}
        for round_index in range(self.max_rounds):
            need = n - len(out)
            if need <= 0:
                break
            prompt = render_worse_answers_prompt(self.prompt_template, question, golden, need)
            try:
                reply = self._complete(prompt, round_index)
            except ChatRequestRejected as e:
                # Not cached: a rerun (maybe with a larger model or max_tokens) asks again.
                log.warning("llm: no more candidates for the example %r: %s", _preview(question), e)
                with self._count_lock:
                    self.last_rejected += 1
                break
            added = 0
            for answer in split_answers(reply.text):
                key = normalise_whitespace(answer)
                if key in seen:
                    continue
                seen.add(key)
                out.append(answer)
                added += 1
                if len(out) == n:
                    break
            if not added and self.temperature == 0:
                break  # greedy decoding would give the same reply to the same prompt
        return out

    def _complete(self, prompt: str, round_index: int) -> Completion:
        """The cached reply for this request, else a new one (cached before it is used)."""
        key = completion_key(self.backend.name, prompt, self.temperature, self.max_tokens, round_index, self.seed)
        hit = self._cache.get(key)
        if hit is not None:
            with self._count_lock:
                self.last_cache_hits += 1
            return hit
        # A seed per request, from the key: reproducible, and distinct across prompts and rounds.
        seed = None if self.seed is None else int(key[:8], 16) & 0x7FFFFFFF
        completion = self.backend.complete(prompt, temperature=self.temperature, max_tokens=self.max_tokens, seed=seed)
        self._cache.put(key, completion, model=self.backend.name)
        with self._count_lock:
            self.last_requests += 1
        return completion
