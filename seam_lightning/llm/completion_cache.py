"""An append-only, crash-safe cache of chat completions (one JSONL file per back end)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from seam_lightning.jsonl import append_jsonl, read_jsonl
from seam_lightning.llm.chat import Completion


log = logging.getLogger(__name__)


def completion_key(backend: str, prompt: str, temperature: float, max_tokens: int, round_index: int,
                   seed: int | None = None, *, system: str | None = None, answer_index: int | None = None) -> str:
    """sha256 of what determines a reply. The round index is in it, so asking again for the rest is cached too.

    ``system``: the system message sent with the prompt. ``answer_index``: which of the
    separate one-answer requests for the same prompt this is (``LLMSource(requests="per_answer")``),
    so that N such requests are N cache entries, each found again on a rerun. Seed, system
    message and answer index enter the key only when set, so the keys of requests without
    them stay as they were.
    """
    parts = [backend, prompt, float(temperature), int(max_tokens), int(round_index)]
    if seed is not None:
        parts.append(int(seed))
    if system is not None:
        parts.append({"system": system})
    if answer_index is not None:
        parts.append({"per_answer": int(answer_index)})
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class CompletionCache:
    """Completions on disk: an append-only JSONL file, one fsync'ed line per completion.

    A line is written the moment its completion arrives, so a killed run loses at most
    the requests in flight. Each line is one ``write`` to an O_APPEND file, so processes
    sharing the file (DDP ranks) do not interleave lines on a local file system. A
    corrupt line (a kill mid-write) is skipped with a warning; the next write starts
    on a fresh line. A disk that refuses writes costs the cache, never the run.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, Completion] = {}
        self._lock = threading.Lock()
        self._loaded = False
        self._open_line = False  # the file ends without a newline: start the next write with one
        self._writable = True

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def load(self) -> None:
        """Read the file once (idempotent); later entries are those this process writes."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            try:
                entries, self._open_line = read_jsonl(self.path, _parse_entry, what="LLM cache")
            except OSError as e:
                log.warning("cannot read the LLM cache %s (%s); starting without it", self.path, e)
                return
            for key, completion in entries:
                self._entries.setdefault(key, completion)  # the first reply stays the reply

    def get(self, key: str) -> Completion | None:
        self.load()
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, completion: Completion, model: str) -> None:
        """Remember ``completion`` and append it to the file, durably, before returning."""
        self.load()
        entry = {"key": key, "text": completion.text, "prompt_tokens": completion.prompt_tokens,
                 "completion_tokens": completion.completion_tokens, "model": model}
        with self._lock:
            self._entries.setdefault(key, completion)
            if not self._writable:
                return
            try:
                append_jsonl(self.path, [entry], self._open_line)
                self._open_line = False
            except OSError as e:
                self._writable = False
                log.warning("cannot write the LLM cache %s (%s); continuing without it", self.path, e)


def _parse_entry(entry: dict) -> tuple[str, Completion]:
    key = entry["key"]
    completion = Completion(entry["text"], int(entry.get("prompt_tokens", 0)), int(entry.get("completion_tokens", 0)))
    if not isinstance(key, str) or not isinstance(completion.text, str):
        raise TypeError("key and text must be strings")
    return key, completion
