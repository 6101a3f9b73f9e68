"""A real HTTP server speaking the OpenAI chat-completions protocol, for offline tests and demos.

It listens on 127.0.0.1 (port 0 = a free port) in a background thread, so the code under test goes
through the real ``openai`` client, sockets, timeouts and status codes. It is as strict as the service
it stands in for (``api``, see :mod:`lovr_hf.testing.openai_rules`): ``"openai"`` (default) refuses
unknown request fields and content parts with the official API's HTTP 400 and error body, ``"vllm"``
accepts vLLM's extensions and video parts and ignores other fields as vLLM does (recorded in
``ignored_fields``), ``"any"`` accepts anything. A valid request is answered by
the next scripted action if any (:meth:`FakeOpenAIServer.push`), else by the responder, which may also
return an action. Actions: :class:`Reply` (a good answer), :class:`Error` (e.g. 500), :class:`Hang`
(sleep past the client's timeout), :class:`Garbage` (non-JSON, missing fields, empty content),
:class:`RateLimit` (429 with ``Retry-After``). Every request is recorded (headers included, so tests
can check the API key was sent; the server itself never logs headers).

    with FakeOpenAIServer() as srv:
        srv.push(Error(500), RateLimit(retry_after=1))
        llm = OpenAIChatLLM(api_base=srv.base_url, api_model="fake")

``python -m lovr_hf.testing.fake_openai --port 8000`` serves the default responder in the foreground.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lovr_hf.testing.openai_rules import API_KINDS, check_request, video_frames_of

logger = logging.getLogger(__name__)


# ---- actions ----------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A well-formed completion with this text (``usage`` computed unless given)."""

    text: str
    usage: dict[str, int] | None = None
    finish_reason: str = "stop"


@dataclass
class Error:
    """An HTTP error status with an OpenAI-style error body."""

    status: int = 500
    message: str = "internal server error"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RateLimit:
    """429 Too Many Requests with ``Retry-After`` in seconds (``as_ms`` sends ``retry-after-ms`` instead)."""

    retry_after: float = 1.0
    as_ms: bool = False


@dataclass
class Hang:
    """Wait ``seconds`` before answering ``then`` (a client with a shorter timeout gives up first)."""

    seconds: float = 30.0
    then: Reply | None = None


GARBAGE_KINDS = ("not_json", "truncated_json", "html", "no_choices", "empty_content", "null_content",
                 "wrong_types")


@dataclass
class Garbage:
    """A 200 that is not a usable completion; ``kind`` is one of :data:`GARBAGE_KINDS`."""

    kind: str = "not_json"

    def __post_init__(self) -> None:
        if self.kind not in GARBAGE_KINDS:
            raise ValueError(f"unknown garbage kind {self.kind!r}; known: {GARBAGE_KINDS}")


Action = Reply | Error | RateLimit | Hang | Garbage
Responder = Callable[[dict[str, Any]], "str | Action"]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON (None when the body was not JSON)
    action: str  # what the server did: reply / error / rate_limit / hang / garbage:<kind> / rejected
    started: float
    finished: float | None = None
    rejected: str | None = None  # the 400 message when the request broke the server's rules
    ignored_fields: tuple[str, ...] = ()  # fields a vLLM-style server accepted and ignored

    @property
    def authorization(self) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages", [])) if isinstance(self.body, dict) else []


# ---- default responder -----------------------------------------------------------------------------------


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _parts(request: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    out = []
    for msg in request.get("messages", []):
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            out.extend(p for p in content if isinstance(p, dict) and p.get("type") == kind)
    return out


def request_images(request: dict[str, Any]) -> list[bytes]:
    """Decoded bytes of every ``data:`` image URL in the request's messages."""
    out = []
    for part in _parts(request, "image_url"):
        url = (part.get("image_url") or {}).get("url", "")
        if url.startswith("data:") and "," in url:
            out.append(base64.b64decode(url.split(",", 1)[1]))
    return out


def request_videos(request: dict[str, Any]) -> list[list[bytes]]:
    """The JPEG frames of every vLLM ``video_url`` part (``data:video/jpeg;base64,<frame>,...``)."""
    out = []
    for part in _parts(request, "video_url"):
        frames = video_frames_of((part.get("video_url") or {}).get("url", ""))
        if frames is not None:
            out.append(frames)
    return out


def describe_images(images: list[bytes]) -> str:
    """A deterministic 'caption' computed from the decoded frames: proves they arrived intact."""
    from PIL import Image

    sizes, means = set(), []
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
            sizes.add(rgb.size)
            px = list(rgb.resize((1, 1), Image.Resampling.BOX).getdata())[0]
            means.append(sum(px) / 3.0)
    w, h = sorted(sizes)[0]
    brightness = sum(means) / len(means)
    return (f"The clip shows {len(images)} frames of {w}x{h} pixels.\n"
            f"The average brightness is {brightness:.0f} out of 255.")


_TRANSITION = re.compile(
    r"\[Last paragraph of previous caption\]:\s*\n(?P<prev>.*?)\n\s*\n\s*\[First paragraph of next paragraph\]:"
    r"\s*\n(?P<next>.*?)\n\s*\n\s*# Requirements", re.S)
_INTEGRATE = re.compile(
    r"# First paragraph \(earlier in the video\)\s*\n(?P<first>.*?)\n\s*\n# Second paragraph \(later in the "
    r"video\)\s*\n(?P<second>.*?)\n\s*\n# Requirements", re.S)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def default_responder(request: dict[str, Any]) -> str:
    """Deterministic answers: frames described, joins rewritten with "Then,", judges say 7, else echo."""
    images = request_images(request)
    if images:
        return describe_images(images)
    videos = request_videos(request)
    if videos:
        return "\n".join(describe_images(v).replace("The clip shows", "The video shows") for v in videos)
    user = next((message_text(m) for m in reversed(request.get("messages", [])) if m.get("role") == "user"), "")
    m = _TRANSITION.search(user)
    if m:
        return f"{m.group('prev').strip()}\nThen, {_lower_first(m.group('next').strip())}"
    m = _INTEGRATE.search(user)
    if m:
        return f"{m.group('first').strip()}\nAfter that, {_lower_first(m.group('second').strip())}"
    if "Reply with only the score" in user:
        return "7"
    if "overall theme of the video" in user:
        return "The video follows its subjects through a sequence of everyday scenes."
    return "echo: " + " ".join(user.split())[:200]


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


# ---- server -------------------------------------------------------------------------------------------------


class FakeOpenAIServer:
    """Scriptable OpenAI-compatible endpoint on 127.0.0.1 (use as a context manager).

    ``api``: which server's request rules apply (``"openai"``, ``"vllm"`` or ``"any"``, see the module
    docstring). ``require_key``: when set, requests without ``Authorization: Bearer <key>`` get a 401.
    """

    def __init__(self, responder: Responder | None = None, *, model: str = "fake-model", port: int = 0,
                 require_key: str | None = None, api: str = "openai") -> None:
        if api not in API_KINDS:
            raise ValueError(f"unknown api {api!r}; known: {API_KINDS}")
        self.responder: Responder = responder or default_responder
        self.model = model
        self.require_key = require_key
        self.api = api
        self.requests: list[RecordedRequest] = []
        self._script: deque[Action] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True

    # ---- lifecycle ----
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as ``api_base`` / ``OPENAI_BASE_URL``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-openai", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # release hanging handlers at once
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- scripting ----
    def push(self, *actions: Action) -> None:
        """Answer the next requests with these actions, in order, before falling back to the responder."""
        with self._lock:
            self._script.extend(actions)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _next_action(self, body: dict[str, Any]) -> Action:
        with self._lock:
            if self._script:
                return self._script.popleft()
        out = self.responder(body)
        return Reply(out) if isinstance(out, str) else out

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    # ---- response bodies ----
    def completion(self, body: dict[str, Any], reply: Reply, content: Any = None) -> dict[str, Any]:
        text = reply.text if content is None else content
        prompt_text = " ".join(message_text(m) for m in body.get("messages", []))
        usage = reply.usage or {"prompt_tokens": _approx_tokens(prompt_text),
                                "completion_tokens": _approx_tokens(text or "")}
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": reply.finish_reason, "logprobs": None}],
            "usage": usage,
        }


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            logger.debug("fake-openai %s", format % args)  # request line only, never headers

        def _send(self, status: int, payload: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            rec = RecordedRequest("GET", self.path, dict(self.headers.items()), None, "reply", time.time())
            server._record(rec)
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model",
                                                             "created": 0, "owned_by": "lovr_hf"}]})
            else:
                self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            rec.finished = time.time()

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            rec = RecordedRequest("POST", self.path, dict(self.headers.items()), body, "", time.time())
            server._record(rec)
            try:
                self._answer(rec, body)
            finally:
                rec.finished = time.time()

        def _answer(self, rec: RecordedRequest, body: Any) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                rec.action = "error"
                self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                return
            if server.require_key is not None and rec.authorization != f"Bearer {server.require_key}":
                rec.action = "error"
                self._json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "param": None, "code": "invalid_api_key"}})
                return
            checked = check_request(body, server.api)
            rec.ignored_fields = checked.ignored_fields
            if checked.ignored_fields:
                logger.warning("fake-openai: the following fields were present in the request but ignored: %s",
                               list(checked.ignored_fields))
            if checked.rejection is not None:
                rec.action, rec.rejected = "rejected", checked.rejection.message
                self._json(checked.rejection.status, checked.rejection.body(server.api))
                return
            action = server._next_action(body)
            if isinstance(action, Hang):
                rec.action = "hang"
                server._closing.wait(action.seconds)
                action = action.then or Reply(default_responder(body))
                if server._closing.is_set():
                    return
            if isinstance(action, Reply):
                rec.action = rec.action or "reply"
                self._json(200, server.completion(body, action))
            elif isinstance(action, Error):
                rec.action = "error"
                etype = "server_error" if action.status >= 500 else "invalid_request_error"
                self._json(action.status, {"error": {"message": action.message, "type": etype, "param": None,
                                                     "code": None}}, headers=action.headers)
            elif isinstance(action, RateLimit):
                rec.action = "rate_limit"
                hdr = ({"retry-after-ms": str(int(action.retry_after * 1000))} if action.as_ms
                       else {"Retry-After": f"{action.retry_after:g}"})
                self._json(429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                           "param": None, "code": "rate_limit_exceeded"}}, headers=hdr)
            elif isinstance(action, Garbage):
                rec.action = f"garbage:{action.kind}"
                self._garbage(action.kind, body)
            else:  # pragma: no cover - guarded by the type of Action
                raise TypeError(f"unknown action {action!r}")

        def _garbage(self, kind: str, body: dict[str, Any]) -> None:
            if kind == "not_json":
                self._send(200, b"this is not json at all", ctype="text/plain")
            elif kind == "truncated_json":
                self._send(200, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"con')
            elif kind == "html":
                self._send(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", ctype="text/html")
            elif kind == "no_choices":
                self._json(200, {"id": "chatcmpl-x", "object": "chat.completion", "model": server.model})
            elif kind == "empty_content":
                self._json(200, server.completion(body, Reply(""), content=""))
            elif kind == "null_content":
                self._json(200, server.completion(body, Reply(""), content=None))
            elif kind == "wrong_types":
                self._json(200, {"choices": "nope", "usage": "lots"})

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve the default responder in the foreground (for manual runs and demos)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--api", default="openai", choices=API_KINDS, help="whose request rules to apply")
    args = ap.parse_args(argv)
    srv = FakeOpenAIServer(model=args.model, port=args.port, api=args.api).start()
    print(f"fake {args.api} endpoint at {srv.base_url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
