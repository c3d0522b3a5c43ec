"""A small OpenAI-compatible HTTP server of the tests' own, for the real ``openai`` client.

It speaks ``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models``,
answers chat requests with a Python function of the request, records every
request, and can be scripted to fail first (HTTP errors with or without
Retry-After, or a reply slower than the client's timeout) or to stall after a
number of replies (to kill a client mid-run).

    with FakeOpenAI(reply=lambda request: "1. a\\n2. b") as server:
        OpenAIBackend("fake-model", base_url=server.url)
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


MODEL = "fake-model"

_ERROR_TYPES = {
    400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied", 404: "model_not_found",
    429: "rate_limit_exceeded", 500: "server_error", 503: "service_unavailable",
}


@dataclass(frozen=True)
class Failure:
    """One scripted failure: wait ``delay`` seconds, then answer HTTP ``status``.

    A delay longer than the client's timeout makes the client see a timeout (the
    late answer then goes nowhere).
    """

    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0

    @classmethod
    def timeout(cls, seconds: float = 2.0) -> "Failure":
        return cls(status=503, delay=seconds)


def question_of(prompt: str) -> str:
    """The question inside a rendered worse-answers prompt (between [Question] and [Answer], any layout)."""
    m = re.search(r"\[Question\][ \n](.*?)\n+\[Answer\]", prompt, re.DOTALL)
    return m.group(1) if m else prompt


def asked_n(prompt: str) -> int:
    """How many answers a rendered worse-answers prompt asks for (the paper's or the numbered wording; else 1)."""
    m = re.search(r"(?:generate|Write) (\d+) (?:distinct|different) answers", prompt)
    return int(m.group(1)) if m else 1


PROMPT_1 = re.compile(r"\[Question\] (.*) \[The Start of Assistant's Answer\] (.*)"
                      r"\n\n\[The End of Assistant's Answer\]\Z", re.DOTALL)
"""A rendered Prompt 1 (the paper's judge prompt), as LLMJudge sends it."""


def judged(prompt: str) -> tuple[str, str]:
    """(question, answer) inside a rendered Prompt 1."""
    question, answer = PROMPT_1.search(prompt).groups()
    return question, answer


def numbered_reply(request: dict) -> str:
    """The default reply: as many numbered answers as asked for, each naming the question."""
    prompt = request["messages"][-1]["content"]
    question = question_of(prompt)
    return "Here are the answers:\n" + "\n".join(
        f"{i}. Wrong answer {i} to {question!r}" for i in range(1, asked_n(prompt) + 1)
    )


class FakeOpenAI:
    """The server; a context manager. ``url`` is the base_url to give the client."""

    def __init__(self, reply: Callable[[dict], str] = numbered_reply, model: str = MODEL):
        self.reply = reply
        self.model = model
        self.requests: list[dict] = []  # chat request bodies, in arrival order
        self.paths: list[tuple[str, str]] = []  # (method, path) of every request
        self.successes = 0
        self._failures: collections.deque[Failure] = collections.deque()
        self._stall_after: int | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting

    def fail_next(self, *failures: Failure) -> None:
        """The next chat requests get these failures, in order; later ones are answered normally."""
        with self._lock:
            self._failures.extend(failures)

    def stall_after(self, replies: int | None) -> None:
        """After ``replies`` successful chat replies, hold every further chat request until `release`."""
        with self._lock:
            self._stall_after = replies
            self._release.clear()

    def release(self) -> None:
        """Let stalled requests go (they get HTTP 503) and stop stalling."""
        with self._lock:
            self._stall_after = None
        self._release.set()

    @property
    def prompts(self) -> list[str]:
        """The user message of each chat request received."""
        with self._lock:
            return [r["messages"][-1]["content"] for r in self.requests]

    @property
    def systems(self) -> list[str | None]:
        """The system message of each chat request received (None where it had none)."""
        with self._lock:
            return [next((m["content"] for m in r["messages"] if m["role"] == "system"), None) for r in self.requests]

    # -- life cycle

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAI":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True  # a stalled handler must not block shutdown
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- handling

    def _chat(self, body: dict) -> tuple[int, dict, dict]:
        """(status, JSON body, extra headers) for one chat request."""
        with self._lock:
            self.requests.append(body)
            failure = self._failures.popleft() if self._failures else None
            stall = failure is None and self._stall_after is not None and self.successes >= self._stall_after
        if stall:
            self._release.wait(timeout=60)
            return 503, _error(503, "stalled by the test"), {}
        if failure is not None:
            if failure.delay:
                self._release.wait(timeout=failure.delay)
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            message = f"The model `{body.get('model')}` does not exist" if failure.status == 404 else "scripted failure"
            return failure.status, _error(failure.status, message), headers
        if body.get("model") != self.model:
            return 404, _error(404, f"The model `{body.get('model')}` does not exist"), {}
        text = self.reply(body)
        prompt = body["messages"][-1]["content"]
        prompt_tokens, completion_tokens = len(prompt.split()), len(text.split())
        with self._lock:
            self.successes += 1
            n = self.successes
        return 200, {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }, {}


def _error(status: int, message: str) -> dict:
    kind = _ERROR_TYPES.get(status, "error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.fake.paths.append(("GET", self.path))
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [
                {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "tests"}
            ]})
        else:
            self._send(404, _error(404, f"no route {self.path}"))

    def do_POST(self) -> None:
        self.fake.paths.append(("POST", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, _error(400, "body is not JSON"))
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, _error(404, f"no route {self.path}"))
            return
        if body.get("stream"):
            self._send(400, _error(400, "this test server does not stream"))
            return
        self._send(*self.fake._chat(body))

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, or killed): nothing to tell it


def recording_backend(server: FakeOpenAI, **kwargs):
    """An OpenAIBackend on ``server`` whose back-off waits are recorded in ``.delays``, not slept."""
    from seam_lightning.llm.chat import OpenAIBackend

    backend = OpenAIBackend(MODEL, base_url=server.url, **kwargs)
    backend.delays = []
    backend._sleep = backend.delays.append
    return backend
