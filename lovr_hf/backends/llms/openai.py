"""``openai`` ChatLLM: any OpenAI-compatible chat endpoint (the original merger used gpt-4o)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from lovr_hf.backends.base import LLMS, ChatLLM, GenerationParams
from lovr_hf.backends.llms import DEFAULT_API_MODEL
from lovr_hf.backends.openai_client import ClientStats, OpenAIChatClient
from lovr_hf.prompts import MERGE_SYSTEM

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.5  # the original caption_merger.py
#: context windows of well-known hosted models (others: pass max_context_tokens)
KNOWN_CONTEXT = {"gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4-turbo": 128_000, "gpt-4.1": 1_047_576,
                 "gpt-4.1-mini": 1_047_576, "gpt-3.5-turbo": 16_385}


@LLMS.register("openai")
class OpenAIChatLLM(ChatLLM):
    """Chat through an OpenAI-compatible endpoint, with retries, timeouts and bounded concurrency.

    ``api_base`` / ``api_key`` default to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (placeholder key for
    local servers). ``system_prompt`` is prepended when the messages carry no system message, so bare
    user prompts get the original "You are a helpful video summarizer.". ``num_workers`` is the number
    of concurrent requests of :meth:`chat_many` (the original ``--num-workers``).
    """

    name = "openai"

    def __init__(
        self,
        api_model: str = DEFAULT_API_MODEL,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        system_prompt: str = MERGE_SYSTEM,
        timeout: float = 300.0,
        max_retries: int = 3,
        num_workers: int = 8,
        max_context_tokens: int | None = None,
        **client_kwargs: object,
    ) -> None:
        self.api_model = api_model
        self.system_prompt = system_prompt
        self.client = OpenAIChatClient(api_model, api_base, api_key, timeout=timeout, max_retries=max_retries,
                                       num_workers=num_workers, **client_kwargs)  # type: ignore[arg-type]
        self.max_context_tokens = max_context_tokens or KNOWN_CONTEXT.get(api_model)

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    def model_id(self) -> str:
        return f"openai:{self.api_model}"

    def check_server(self, what: str = "model") -> None:
        """The server answers and takes the key (one request before any row)."""
        self.client.check_endpoint(what)

    @staticmethod
    def default_params(**overrides: object) -> GenerationParams:
        """The original merger sampling: temperature 0.5, nothing else constrained."""
        p = GenerationParams(temperature=DEFAULT_TEMPERATURE, top_p=1.0, repetition_penalty=1.0,
                             max_new_tokens=1024)
        for k, v in overrides.items():
            setattr(p, k, v)
        return p

    def count_tokens(self, text: str) -> int:
        """Conservative estimate (no tokenizer for hosted models): ~3.5 characters per token."""
        return math.ceil(len(text) / 3.5)

    def _with_system(self, messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        msgs = list(messages)
        if self.system_prompt and not any(m.get("role") == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def chat(self, messages: list[dict[str, str]], params: GenerationParams | None = None) -> str:
        return self.client.complete(self._with_system(messages), params or self.default_params())

    def chat_many(self, conversations: Sequence[list[dict[str, str]]],
                  params: GenerationParams | None = None) -> list[str | BaseException]:
        """Many independent chats, ``num_workers`` in flight, replies (or the exception) in input order."""
        p = params or self.default_params()
        return self.client.map(lambda msgs: self.chat(msgs, p), conversations)

    def close(self) -> None:
        self.client.close()
