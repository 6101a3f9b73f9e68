"""A deterministic in-process merge LLM that answers the real merge prompts (for ``--llm`` in tests).

``--llm lovr_hf.testing.merge_llm:PromptLLM`` answers each prompt the way the stand-in OpenAI server does
(:func:`lovr_hf.testing.fake_openai.default_responder`): a join keeps both paragraphs and adds "Then,", an
integration adds "After that,", a theme is one fixed sentence. Replies are grounded in their inputs, so the
merge guards accept them, unlike the ``dummy`` LLM, which echoes the prompt's last blocks (its
requirements text) and has every join rejected. ``fail_first=N`` makes the first N calls of each process
raise (a flaky backend).
"""

from __future__ import annotations

import threading
from typing import Any

from lovr_hf.backends.base import ChatLLM, GenerationParams


class PromptLLM(ChatLLM):
    name = "prompt-llm"

    def __init__(self, *, fail_first: int = 0, **_: Any) -> None:
        self.fail_first = int(fail_first)
        self.calls = 0
        self._lock = threading.Lock()

    def model_id(self) -> str:
        return "prompt-llm-v1"

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> str:
        from lovr_hf.testing.fake_openai import default_responder

        with self._lock:
            self.calls += 1
            n = self.calls
        if n <= self.fail_first:
            raise RuntimeError(f"prompt-llm: simulated failure {n}/{self.fail_first}")
        return default_responder({"messages": messages})
