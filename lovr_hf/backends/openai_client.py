"""Shared machinery for OpenAI-compatible chat endpoints (hosted APIs, vLLM serve, TGI, llama.cpp server).

Built on the official ``openai`` client with its own retries switched off (``max_retries=0``): retries
happen here, with exponential backoff and jitter, honouring ``Retry-After``, so that every retry is
counted in :class:`ClientStats` and visible in the run summary. The API key is handed to the client
and never stored elsewhere, logged or put in an exception message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from lovr_hf.backends.base import GenerationParams

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

PLACEHOLDER_KEY = "EMPTY"  # what local servers (vLLM, llama.cpp) accept when no key is configured
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx


class ReplyError(RuntimeError):
    """The endpoint answered 200 but without usable text (malformed body, no choices, empty content)."""


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), else None."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            return max(0.0, parsed.timestamp() - time.time())
    return None


@dataclass
class ClientStats:
    """Thread-safe counters for one backend: logical requests, HTTP attempts, retries, tokens."""

    calls: int = 0  # requests asked for (one per chat()/caption of one clip)
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    failures: int = 0  # requests that failed after all retries
    tokens_in: int = 0
    tokens_out: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: getattr(self, k) for k in
                    ("calls", "attempts", "retries", "failures", "tokens_in", "tokens_out")}


def _is_official_openai(base_url: str | None) -> bool:
    host = urlparse(base_url).hostname if base_url else "api.openai.com"
    return bool(host) and host.endswith("openai.com")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


class OpenAIChatClient:
    """One chat-completions endpoint: request building, retries, stats and bounded concurrency.

    ``api_base`` falls back to ``OPENAI_BASE_URL`` and then to the official API; ``api_key`` to
    ``OPENAI_API_KEY`` and then to the placeholder ``"EMPTY"`` that local servers accept. ``timeout`` is
    per HTTP attempt. ``max_retries`` counts retries after the first attempt (the original merger made 3
    attempts in all). ``repetition_penalty`` is an extension of vLLM and others that the official API
    rejects, so by default it is sent only to non-OpenAI hosts (``send_repetition_penalty=None``).
    """

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        max_retry_after: float = 300.0,
        num_workers: int = 8,
        max_tokens_field: str | None = "max_tokens",
        send_repetition_penalty: bool | None = None,
        default_headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        self.model = model
        self.api_base = api_base or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if key is None:
            logger.info("no OPENAI_API_KEY set: sending the placeholder key %r (fine for local servers)",
                        PLACEHOLDER_KEY)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.num_workers = int(num_workers)
        self.max_tokens_field = max_tokens_field
        self.send_repetition_penalty = (
            not _is_official_openai(self.api_base) if send_repetition_penalty is None else send_repetition_penalty
        )
        self.stats = ClientStats()
        self._sleep = sleep
        self._client = openai.OpenAI(
            api_key=key or PLACEHOLDER_KEY,
            base_url=self.api_base,
            timeout=self.timeout,
            max_retries=0,
            default_headers=dict(default_headers) if default_headers else None,
        )
        logger.debug("OpenAI-compatible client for model %s at %s", model, self.api_base or "api.openai.com")

    def __repr__(self) -> str:  # never the key
        return f"OpenAIChatClient(model={self.model!r}, api_base={self.api_base!r})"

    # ---- requests ---------------------------------------------------------------------------------------

    def request_kwargs(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams) -> dict[str, Any]:
        """The chat-completions arguments for these sampling settings (only what the API understands)."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if params.do_sample:
            kwargs["temperature"] = params.temperature
            if params.top_p is not None and params.top_p < 1.0:
                kwargs["top_p"] = params.top_p
        else:
            kwargs["temperature"] = 0.0
        if self.max_tokens_field and params.max_new_tokens:
            kwargs[self.max_tokens_field] = params.max_new_tokens
        if params.seed is not None:
            kwargs["seed"] = params.seed
        extra: dict[str, Any] = dict(params.extra)
        if self.send_repetition_penalty and params.repetition_penalty not in (None, 1.0):
            extra.setdefault("repetition_penalty", params.repetition_penalty)
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    def _attempt(self, kwargs: dict[str, Any]) -> str:
        self.stats.add(attempts=1)
        try:
            resp = self._client.chat.completions.create(**kwargs)
        except json.JSONDecodeError as exc:  # a JSON content type with a broken body
            raise ReplyError(f"malformed JSON reply ({exc.msg})") from None
        # the client does not validate bodies strictly: check every field used
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise ReplyError("reply without choices")
        self._count_usage(getattr(resp, "usage", None))
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str) or not content.strip():
            raise ReplyError("reply with empty content")
        return content

    def _count_usage(self, usage: Any) -> None:
        try:
            tin = int(getattr(usage, "prompt_tokens", 0) or 0)
            tout = int(getattr(usage, "completion_tokens", 0) or 0)
        except (TypeError, ValueError):
            return  # a server reporting nonsense usage: no tokens counted
        self.stats.add(tokens_in=tin, tokens_out=tout)

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, ReplyError,
                            openai.APIResponseValidationError)):
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
        return False

    def _wait_seconds(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, openai.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers)
            if retry_after is not None:
                # honour the server's wish (a little later, never earlier), within reason
                return min(retry_after, self.max_retry_after) * (1.0 + 0.1 * random.random())
        backoff = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        return backoff * (0.5 + 0.5 * random.random())  # jitter: spread retries of parallel workers

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.add(retries=1)
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        logger.warning("%s: attempt %d/%d failed (%s), retrying in %.2fs", self.model, state.attempt_number,
                       self.max_retries + 1, _describe(exc) if exc else "?", wait_s)

    def complete(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams) -> str:
        """One chat completion with retries; raises the last error once the retries are spent."""
        kwargs = self.request_kwargs(messages, params)
        self.stats.add(calls=1)
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception(self._retryable),
            wait=self._wait_seconds,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, kwargs)
        except Exception as exc:
            self.stats.add(failures=1)
            logger.warning("%s: request failed: %s", self.model, _describe(exc))
            raise

    # ---- concurrency ------------------------------------------------------------------------------------

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R | BaseException]:
        """``fn`` over ``items`` with ``num_workers`` requests in flight, results in input order."""
        return bounded_map(fn, items, self.num_workers)

    def close(self) -> None:
        self._client.close()


def iter_bounded(
    fn: Callable[[T], R], items: Iterable[T], num_workers: int
) -> Iterator[tuple[int, R | BaseException]]:
    """Yield ``(index, result or exception)`` as calls finish, with at most ``num_workers`` in flight.

    Items are pulled lazily, so a million requests never sit in memory at once, and each result can be
    committed as soon as it arrives (what resumable stages need). One failure never stops the others.
    """
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    it = iter(enumerate(items))
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="lovr-req") as pool:
        pending: dict[Future[R], int] = {}

        def submit_next() -> bool:
            try:
                i, item = next(it)
            except StopIteration:
                return False
            pending[pool.submit(fn, item)] = i
            return True

        for _ in range(num_workers):
            if not submit_next():
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                exc = fut.exception()
                yield i, (exc if exc is not None else fut.result())
                submit_next()


def bounded_map(fn: Callable[[T], R], items: Iterable[T], num_workers: int) -> list[R | BaseException]:
    """Like :func:`iter_bounded` but collected in input order (exceptions in place of failed results)."""
    out: dict[int, R | BaseException] = dict(iter_bounded(fn, items, num_workers))
    return [out[i] for i in range(len(out))]
