"""In-process :class:`~lovr_hf.backends.base.ChatLLM` stand-ins that answer from a script or like the fake server.

* :class:`ScriptedLLM`: answers from a script, for exact algorithm tests (each call takes the next item).
* :class:`PromptLLM` (``--llm lovr_hf.backends.standins.chat_llms:PromptLLM``): a deterministic merge LLM that
  answers each real merge prompt the way the stand-in OpenAI server does
  (:func:`lovr_hf.testing.fake_openai.default_responder`): a join keeps both paragraphs and adds "Then,", an
  integration adds "After that,", a theme is one fixed sentence. Replies are grounded in their inputs, so the
  merge guards accept them, unlike the ``dummy`` LLM, which echoes the prompt's last blocks (its
  requirements text) and has every join rejected. ``fail_first=N`` makes the first N calls of each process
  raise (a flaky backend).

They are backends (they implement ChatLLM), so they live here, above :mod:`lovr_hf.testing`, whose loopback
servers they answer like.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from lovr_hf.backends.base import ChatLLM, GenerationParams
from lovr_hf.testing.fake_openai import default_responder

ScriptItem = str | BaseException | None | Callable[[list[dict[str, str]]], str]


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
            return default_responder({"messages": messages})
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item(messages)
        return item

    def user_prompts(self) -> list[str]:
        """The user message of each call, in order."""
        return [next((m["content"] for m in reversed(c) if m["role"] == "user"), "") for c in self.calls]


class PromptLLM(ChatLLM):
    name = "prompt-llm"

    def __init__(self, *, fail_first: int = 0, **_: Any) -> None:
        self.fail_first = int(fail_first)
        self.calls = 0
        self._lock = threading.Lock()

    def model_id(self) -> str:
        return "prompt-llm-v1"

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        if n <= self.fail_first:
            raise RuntimeError(f"prompt-llm: simulated failure {n}/{self.fail_first}")
        return default_responder({"messages": messages})
