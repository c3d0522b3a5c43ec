"""Chat back ends: one prompt in, one `Completion` out.

`OpenAIBackend` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp
server, Ollama) through the ``openai`` client, with a retry policy of its own;
`TransformersBackend` samples from a local causal LM. Both keep a token tally.
"""

from __future__ import annotations

import copy
import email.utils
import logging
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Callable
from urllib.parse import urlparse

from seam_lightning.models.loading import DEFAULT_MODEL

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
DUMMY_KEY = "EMPTY"  # what local servers (vLLM, llama.cpp) accept when they check no key
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


# --------------------------------------------------------------------------- back-ends


@dataclass(frozen=True)
class Completion:
    """One reply of a chat model and what it cost in tokens."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Usage:
    """Requests and tokens a back-end has spent since it was built.

    requests: requests sent, failed attempts included; retries: those that repeated
    a failed one; cost_usd: None unless the back-end was given token prices.
    Completions served from the cache cost nothing and are not counted.
    """

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    def minus(self, earlier: "Usage") -> "Usage":
        """What was spent between ``earlier`` and this snapshot."""
        cost = None if self.cost_usd is None else self.cost_usd - (earlier.cost_usd or 0.0)
        return Usage(
            self.requests - earlier.requests, self.retries - earlier.retries,
            self.prompt_tokens - earlier.prompt_tokens, self.completion_tokens - earlier.completion_tokens, cost,
        )

    def describe(self) -> str:
        cost = "" if self.cost_usd is None else f", ${self.cost_usd:.4f}"
        return (f"{self.requests} requests ({self.retries} retries), "
                f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens{cost}")


class _Tally:
    """A thread-safe running `Usage` (several `LLMSource` workers share one back-end)."""

    def __init__(self, price_prompt: float | None = None, price_completion: float | None = None):
        self._priced = price_prompt is not None or price_completion is not None
        self._prices = (price_prompt or 0.0, price_completion or 0.0)
        self._usage = Usage(cost_usd=0.0 if self._priced else None)
        self._lock = threading.Lock()

    def add(self, requests: int = 0, retries: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            u = self._usage
            cost = u.cost_usd
            if self._priced:
                cost += (prompt_tokens * self._prices[0] + completion_tokens * self._prices[1]) / 1e6
            self._usage = replace(
                u, requests=u.requests + requests, retries=u.retries + retries,
                prompt_tokens=u.prompt_tokens + prompt_tokens,
                completion_tokens=u.completion_tokens + completion_tokens,
                cost_usd=cost,
            )

    def snapshot(self) -> Usage:
        with self._lock:
            return self._usage


class ChatBackendError(RuntimeError):
    """A chat request that failed for good: bad key, unknown model, retries used up, ..."""


class ChatRequestRejected(ChatBackendError):
    """The endpoint refused this one request (HTTP 400/413/422, e.g. a prompt too long for the model).

    Other requests may well succeed: `LLMSource` gives that example no further
    candidates and goes on, where a bad key or model stops the whole call.
    """


class ChatBackend(ABC):
    """One prompt in (a user message, optionally after a system message), one `Completion` out.

    Must be safe to call from several threads.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Identifies the model (and endpoint): completions are cached under it."""

    @abstractmethod
    def complete(self, prompt: str, *, temperature: float, max_tokens: int, seed: int | None = None,
                 system: str | None = None) -> Completion:
        """The model's reply to ``prompt``; temperature 0 means greedy. Raises `ChatBackendError` on failure.

        ``system``: a system message sent before the prompt (None: none). Callers pass it only
        when set, so back ends written before it existed keep working without it.
        """

    @property
    def usage(self) -> Usage:
        """Requests and tokens spent since this back-end was built (zero for back-ends that do not count)."""
        return Usage()


def _host(url: str) -> str:
    return (urlparse(url).hostname or "").lower()


def _is_local(url: str) -> bool:
    host = _host(url)
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def _is_official(url: str) -> bool:
    host = _host(url)
    return host == "openai.com" or host.endswith(".openai.com")


def _retryable(status: int) -> bool:
    """Statuses worth another try: timeout, conflict, rate limit, server errors (those the openai client retries)."""
    return status in (408, 409, 429) or status >= 500


def _retry_after(error: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``retry-after`` seconds or HTTP date), or None."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None  # a malformed header: fall back to our own back-off


class OpenAIBackend(ChatBackend):
    """Chat completions from an OpenAI-compatible endpoint, with our own retries and a usage tally.

    Args:
        model: model name as the endpoint knows it (``gpt-4o``, or what ``vllm serve`` was given).
        base_url: endpoint, e.g. ``http://localhost:8000/v1``; None = ``$OPENAI_BASE_URL`` or OpenAI's.
        api_key_env: environment variable holding the key. Without it, a non-OpenAI endpoint
            gets the placeholder key ``EMPTY``; OpenAI's own endpoint is an error.
        timeout: seconds per request.
        max_retries: further attempts after a timeout, connection error, HTTP 408/409/429 or 5xx.
            Other errors (401, 403, 404, 400, ...) are raised at once: repeating cannot fix them.
        backoff_seconds, max_backoff_seconds: wait before retry k is ``backoff_seconds * 2**k`` (plus up
            to 10% jitter), at most ``max_backoff_seconds``; a ``Retry-After`` header overrides it.
        price_per_1m_prompt_tokens, price_per_1m_completion_tokens: USD prices; with either set,
            `usage` reports a cost.
    """

    # Not constructor arguments: a function is no config value, and LightningCLI builds this
    # class from YAML. Tests (or a caller wanting other pacing) replace them on an instance:
    # ``backend._sleep = delays.append``.
    _sleep: Callable[[float], None] = staticmethod(time.sleep)
    _jitter: float = 0.1  # workers that failed together should not all retry at the same instant

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        price_per_1m_prompt_tokens: float | None = None,
        price_per_1m_completion_tokens: float | None = None,
    ) -> None:
        if not model:
            raise ValueError("model must name the model to ask, e.g. 'gpt-4o'")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_seconds < 0 or max_backoff_seconds < backoff_seconds:
            raise ValueError(
                f"need 0 <= backoff_seconds <= max_backoff_seconds, got {backoff_seconds} and {max_backoff_seconds}"
            )
        for label, price in (("price_per_1m_prompt_tokens", price_per_1m_prompt_tokens),
                             ("price_per_1m_completion_tokens", price_per_1m_completion_tokens)):
            if price is not None and price < 0:
                raise ValueError(f"{label} must be >= 0, got {price}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff_seconds, self.max_backoff_seconds = backoff_seconds, max_backoff_seconds
        self._api_key()  # a missing key for OpenAI's endpoint fails now, not after the first batch
        self._tally = _Tally(price_per_1m_prompt_tokens, price_per_1m_completion_tokens)
        self._rng = random.Random()
        self._client = None
        self._client_lock = threading.Lock()
        self._warned_length = False

    @property
    def name(self) -> str:
        return f"openai:{self.model}@{self.base_url}"

    @property
    def usage(self) -> Usage:
        return self._tally.snapshot()

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if _is_official(self.base_url):
            raise ValueError(
                f"no API key for {self.base_url}: set the environment variable {self.api_key_env} "
                "(or name another one with api_key_env)"
            )
        if not _is_local(self.base_url):
            log.info("%s is not set; sending the placeholder key %r to %s", self.api_key_env, DUMMY_KEY, self.base_url)
        return DUMMY_KEY

    @property
    def client(self):
        """The ``openai.OpenAI`` client, built on first use with its own retries off (`complete` says why)."""
        with self._client_lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(
                    api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout, max_retries=0
                )
            return self._client

    def complete(self, prompt: str, *, temperature: float, max_tokens: int, seed: int | None = None,
                 system: str | None = None) -> Completion:
        import openai

        request = {
            "model": self.model,
            "messages": chat_messages(prompt, system),
            "temperature": temperature,
            "stream": False,
        }
        # OpenAI's newer models accept only max_completion_tokens; many compatible servers only max_tokens.
        request["max_completion_tokens" if _is_official(self.base_url) else "max_tokens"] = max_tokens
        if seed is not None:
            request["seed"] = seed
        client = self.client
        # Our loop, not the client's max_retries: the client would retry the same failures
        # (408/409/429/5xx, timeouts, connection errors), but it cannot keep what this does:
        # - its back-off is fixed (0.5 s doubling up to 8 s, openai module constants), where
        #   backoff_seconds and max_backoff_seconds are settings of ours (from YAML too);
        # - it raises at once on a Retry-After above 2 minutes (and ignores "0"), where we
        #   wait as long as the server asked;
        # - it waits inside the client with time.sleep, so `_sleep` (tests, a caller's
        #   pacing) never sees the waits, and the usage tally would learn of the attempts
        #   only after the call instead of as each one is sent.
        # What the status means (clear 401/404 errors, ChatRequestRejected) is ours either way.
        for attempt in range(self.max_retries + 1):
            self._tally.add(requests=1, retries=int(attempt > 0))
            try:
                response = client.chat.completions.create(**request)
            except openai.APIStatusError as e:
                if not _retryable(e.status_code):
                    raise self._fatal(e) from e
                error = e
            except openai.APIConnectionError as e:  # APITimeoutError included
                error = e
            else:
                return self._completion(response, max_tokens)
            if attempt == self.max_retries:
                raise ChatBackendError(
                    f"{self.name}: giving up after {attempt + 1} attempts; last error: {_describe(error)}"
                ) from error
            delay = self._delay(attempt, error)
            log.warning("%s: %s; retry %d/%d in %.1f s",
                        self.name, _describe(error), attempt + 1, self.max_retries, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, error: Exception) -> float:
        """The server's Retry-After when it sent one, else exponential back-off with a little jitter."""
        asked = _retry_after(error)
        if asked is not None:
            return asked
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** attempt)
        return min(self.max_backoff_seconds, base * (1.0 + self._jitter * self._rng.random()))

    def _fatal(self, e) -> ChatBackendError:
        """A clear error for a status that retrying cannot fix."""
        said = f" (server says: {_server_message(e)})"
        status = e.status_code
        if status == 401:
            missing = "" if os.environ.get(self.api_key_env) else (
                f"; {self.api_key_env} is not set, so {DUMMY_KEY!r} was sent")
            return ChatBackendError(
                f"{self.base_url} rejected the API key (HTTP 401) for model {self.model!r}: "
                f"put a valid key in the environment variable {self.api_key_env}{missing}{said}"
            )
        if status == 403:
            return ChatBackendError(
                f"{self.base_url} denied access (HTTP 403) to model {self.model!r} "
                f"for the key in {self.api_key_env}{said}"
            )
        if status == 404:
            return ChatBackendError(
                f"model {self.model!r} not found at {self.base_url} (HTTP 404): check `model` and `base_url`{said}"
            )
        error = ChatRequestRejected if status in (400, 413, 422) else ChatBackendError
        return error(f"{self.base_url} refused the request for model {self.model!r} (HTTP {status}){said}")

    def _completion(self, response, max_tokens: int) -> Completion:
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        self._tally.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        if choice is not None and choice.finish_reason == "length" and not self._warned_length:
            self._warned_length = True  # once: the same limit cuts most replies
            log.warning("%s: a reply was cut at max_tokens=%d; its last answer may be incomplete "
                        "(raise max_tokens)", self.name, max_tokens)
        return Completion(text, prompt_tokens, completion_tokens)


def chat_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """The chat messages of one request: the system message when given, then the prompt as the user turn."""
    user = {"role": "user", "content": prompt}
    return [user] if system is None else [{"role": "system", "content": system}, user]


def chat_text(tokenizer, prompt: str, system: str | None = None) -> str:
    """The text a local model is given for one request, ready for generation.

    With a chat template: the system and user turns through it, plus the generation
    prompt. A template that refuses a system turn (Gemma's) gets the system message
    folded into the user turn, a blank line apart; so does a tokenizer without a
    template, which gets the plain text.
    """
    if not getattr(tokenizer, "chat_template", None):
        return prompt if system is None else f"{system}\n\n{prompt}"
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(chat_messages(prompt, system), tokenize=False, add_generation_prompt=True)
    except TemplateError:
        if system is None:
            raise
        log.info("the chat template refuses a system turn; sending the system message inside the user turn")
        return tokenizer.apply_chat_template(chat_messages(f"{system}\n\n{prompt}"), tokenize=False,
                                             add_generation_prompt=True)


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status is not None else f"{type(error).__name__}: {error}"


def _server_message(e) -> str:
    message = getattr(e, "message", None) or str(e)
    return message if len(message) <= 300 else message[:300] + "..."


class TransformersBackend(ChatBackend):
    """Replies sampled from a local causal LM (offline; loaded on first use).

    The prompt goes through the tokenizer's chat template as one user turn, after
    the system turn when a system message is given (plain text if it has no
    template; see `chat_text`). Temperature 0 is greedy decoding; otherwise plain
    temperature sampling (no top-k/top-p). The token budget per reply is the
    caller's ``max_tokens``.

    Args:
        model: ``bundled:<name>``, hub name (if available offline) or local folder.
        device: torch device for generation.
        dtype: weight dtype name (``float32``, ``bfloat16``, ``float16``).
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32") -> None:
        self.model_name, self.device, self.dtype = model, device, dtype
        self._model = None
        self._tokenizer = None
        # One generation at a time: threads share the model and the RNG, and would only
        # contend for the same cores.
        self._lock = threading.Lock()
        self._tally = _Tally()
        self._seeds = random.Random()

    @property
    def name(self) -> str:
        return f"transformers:{self.model_name}"

    @property
    def usage(self) -> Usage:
        return self._tally.snapshot()

    def _load(self) -> None:
        if self._model is not None:
            return
        from seam_lightning.models.loading import load_policy, load_tokenizer

        self._tokenizer = load_tokenizer(self.model_name)
        self._model = load_policy(self.model_name, dtype=self.dtype).to(self.device).eval()

    def complete(self, prompt: str, *, temperature: float, max_tokens: int, seed: int | None = None,
                 system: str | None = None) -> Completion:
        import torch

        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        with self._lock:
            self._load()
            tok, model = self._tokenizer, self._model
            text = chat_text(tok, prompt, system)
            # A chat template writes its own special tokens; plain text gets the tokenizer's.
            special = not getattr(tok, "chat_template", None)
            ids = tok(text, add_special_tokens=special, return_tensors="pt")["input_ids"]
            ids = ids.to(self.device)
            # The model's own generation defaults (EOS, penalties), with our sampling knobs only.
            config = copy.deepcopy(model.generation_config)
            config.update(
                max_new_tokens=max_tokens, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_k=None, top_p=None,
                eos_token_id=config.eos_token_id if config.eos_token_id is not None else tok.eos_token_id,
                pad_token_id=config.pad_token_id if config.pad_token_id is not None else tok.pad_token_id,
            )
            # Sample under a forked RNG: the caller's (training) random state stays untouched,
            # and a given seed reproduces the reply. No seed: a fresh one per call.
            cuda = [torch.device(self.device).index or 0] if str(self.device).startswith("cuda") else []
            with torch.random.fork_rng(devices=cuda), torch.no_grad():
                torch.manual_seed(self._seeds.getrandbits(63) if seed is None else seed)
                out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        new = out[0, ids.shape[1]:].tolist()
        eos = config.eos_token_id
        eos = set(eos) if isinstance(eos, (list, tuple)) else {eos}
        end = next((i for i, t in enumerate(new) if t in eos), None)
        kept = new if end is None else new[:end]
        completion_tokens = len(new) if end is None else end + 1  # the EOS was generated too
        self._tally.add(requests=1, prompt_tokens=ids.shape[1], completion_tokens=completion_tokens)
        return Completion(tok.decode(kept, skip_special_tokens=True), int(ids.shape[1]), completion_tokens)


# --------------------------------------------------------------------------- cache

