"""Test doubles that exercise the real code paths: a real OpenAI-compatible HTTP server and a scripted LLM."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from lovr_hf.backends.base import ChatLLM, GenerationParams

ScriptItem = str | BaseException | None | Callable[[list[dict[str, str]]], str]

__all__ = [
    "GARBAGE_KINDS", "Error", "FakeOpenAIServer", "Garbage", "Hang", "RateLimit", "RecordedRequest", "Reply",
    "ScriptedLLM", "default_responder", "describe_images", "message_text", "request_images", "request_videos",
]

_FAKE_SERVER_NAMES = frozenset({
    "GARBAGE_KINDS", "Error", "FakeOpenAIServer", "Garbage", "Hang", "RateLimit", "RecordedRequest", "Reply",
    "default_responder", "describe_images", "message_text", "request_images", "request_videos",
})


def __getattr__(name: str) -> Any:
    """Re-export the fake server lazily, so ``python -m lovr_hf.testing.fake_openai`` runs cleanly."""
    if name in _FAKE_SERVER_NAMES:
        from lovr_hf.testing import fake_openai

        return getattr(fake_openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ScriptedLLM(ChatLLM):
    """In-process :class:`ChatLLM` answering from a script, for exact algorithm tests.

    Each call takes the next script item: a string is returned, an exception is raised, a callable is
    called with the messages. When the script is exhausted, ``default`` is used the same way (None =
    the fake server's deterministic :func:`default_responder`). Every call's messages are recorded.
    """

    name = "scripted"

    def __init__(self, script: Iterable[ScriptItem] = (), default: ScriptItem = None) -> None:
        self._script: deque[ScriptItem] = deque(script)
        self.default = default
        self.calls: list[list[dict[str, str]]] = []
        self._lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]], params: GenerationParams | None = None) -> str:
        with self._lock:
            self.calls.append([dict(m) for m in messages])
            item = self._script.popleft() if self._script else self.default
        if item is None:
            from lovr_hf.testing.fake_openai import default_responder

            return default_responder({"messages": messages})
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item(messages)
        return item

    def user_prompts(self) -> list[str]:
        """The user message of each call, in order."""
        return [next((m["content"] for m in reversed(c) if m["role"] == "user"), "") for c in self.calls]
