"""Shared machinery for OpenAI-compatible chat endpoints (hosted APIs, vLLM serve, TGI, llama.cpp server).

Built on the official ``openai`` client with its own retries switched off (``max_retries=0``): retries
happen here, with exponential backoff and jitter, honouring ``Retry-After``, so that every retry is
counted in :class:`ClientStats` and visible in the run summary. The API key is handed to the client
and never stored elsewhere, logged or put in an exception message.

Requests carry only standard Chat Completions fields unless the caller says which server it talks to:
api.openai.com answers any other field with HTTP 400 ("Unrecognized request argument supplied"), so
server extensions (vLLM's ``repetition_penalty``, ``top_k``, ``mm_processor_kwargs``) go out only with
``api_server="vllm"`` or when passed explicitly as ``extra_body``. A request that still fails after its
retries raises :class:`RequestFailed`, whose message keeps what the server said (HTTP status, error
type and message) so that stages can record the real reason on the row.
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
from lovr_hf.failures import SetupError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

PLACEHOLDER_KEY = "EMPTY"  # what local servers (vLLM, llama.cpp) accept when no key is configured
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx

#: server kinds the client knows: "openai" = the official API's fields only (also right for any server that
#: follows it strictly); "vllm" = a vLLM OpenAI-compatible server, which also takes its sampling extensions
API_SERVERS = ("openai", "vllm")


class ReplyError(RuntimeError):
    """The endpoint answered 200 but without usable text (malformed body, no choices, empty content)."""


class RequestFailed(RuntimeError):
    """A chat request that failed after all its attempts, with what the server said.

    ``str()`` is one line for a row's ``error`` column, e.g. ``HTTP 400 invalid_request_error: Unrecognized
    request argument supplied: repetition_penalty (1 attempt)``. ``status_code`` is the HTTP status (None for
    timeouts, connection errors and unusable replies), ``server_message`` the server's own error message,
    ``attempts`` the HTTP attempts made; the underlying exception is ``__cause__``.
    """

    def __init__(self, description: str, *, status_code: int | None = None, server_message: str | None = None,
                 error_type: str | None = None, attempts: int = 1) -> None:
        super().__init__(description)
        self.status_code = status_code
        self.server_message = server_message
        self.error_type = error_type
        self.attempts = attempts


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


def _error_fields(exc: openai.APIStatusError) -> tuple[str | None, str | None, str | None]:
    """(message, type, param) of an error reply: ``{"error": {...}}`` (OpenAI, vLLM >= 0.8), a bare error
    object (older vLLM, TGI) or plain text."""
    body: Any = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        message = body.get("message") if isinstance(body.get("message"), str) else None
        etype = body.get("type") if isinstance(body.get("type"), str) else None
        param = body.get("param") if isinstance(body.get("param"), str) else None
        return message, etype, param
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], None, None
    try:
        text = exc.response.text.strip()
    except Exception:  # a streamed or closed response
        text = ""
    return (text[:500] or None), None, None


def describe_error(exc: BaseException, timeout: float | None = None) -> str:
    """One line saying why a request failed: HTTP status + the server's error type and message, a
    timeout, a connection error or an unusable reply."""
    if isinstance(exc, openai.APIStatusError):
        message, etype, param = _error_fields(exc)
        head = f"HTTP {exc.status_code}" + (f" {etype}" if etype else f" {type(exc).__name__}")
        tail = f" (param {param})" if param else ""
        return f"{head}: {message or 'no error message'}{tail}"
    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection error: {type(cause).__name__}: {cause}" if cause else f"connection error: {exc}"
    if isinstance(exc, ReplyError):
        return f"unusable reply: {exc}"
    return f"{type(exc).__name__}: {exc}"



class OpenAIChatClient:
    """One chat-completions endpoint: request building, retries, stats and bounded concurrency.

    ``api_base`` falls back to ``OPENAI_BASE_URL`` and then to the official API; ``api_key`` to
    ``OPENAI_API_KEY`` and then to the placeholder ``"EMPTY"`` that local servers accept. ``timeout`` is
    per HTTP attempt. ``max_retries`` counts retries after the first attempt (the original merger made 3
    attempts in all).

    ``api_server`` names the kind of server (:data:`API_SERVERS`): ``"openai"`` (default) sends only the
    official Chat Completions fields, so sampling knobs the API lacks (``repetition_penalty``) are not
    sent; ``"vllm"`` also sends ``repetition_penalty`` and ``top_k=-1`` (vLLM's sampling as the original
    captioner set it) and lets callers add vLLM request fields (``mm_processor_kwargs``). ``extra_body``
    fields are sent as given to any server (the user's explicit choice).
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
        api_server: str = "openai",
        extra_body: Mapping[str, Any] | None = None,
        default_headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        if api_server not in API_SERVERS:
            raise ValueError(f"unknown api_server {api_server!r}; known: {', '.join(API_SERVERS)}")
        if max_tokens_field not in (None, "max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_field must be max_tokens or max_completion_tokens, got {max_tokens_field!r}")
        self.model = model
        self.api_server = api_server
        self.extra_body = dict(extra_body or {})
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
        if api_server == "vllm" and _is_official_openai(self.api_base):
            logger.warning("api_server='vllm' with the official OpenAI endpoint: its extra fields will be rejected")
        self.stats = ClientStats()
        self._secret = key
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

    @property
    def has_key(self) -> bool:
        """Whether a real key was given (else the placeholder goes out, fine for local servers only)."""
        return self._secret is not None

    def list_models(self, timeout: float = 10.0) -> Any:
        """``GET /models`` once, without retries: the start-up check that the server answers and takes the key."""
        return self._client.with_options(timeout=timeout, max_retries=0).models.list()

    def check_endpoint(self, what: str = "LLM", timeout: float = 10.0) -> None:
        """The start-up probe (the OpenAI backends' ``check_server``, which :func:`lovr_hf.failures.start_backend`
        calls before any row): refuse the official API without a key, and ask the server once for its models
        (``GET /models``): unreachable or a refused key (401/403) is a :class:`~lovr_hf.failures.SetupError`;
        any other answer (a server without ``/models``) passes."""
        where = self.api_base or "https://api.openai.com/v1"
        if not self.has_key and _is_official_openai(self.api_base):
            raise SetupError(f"{what} {self.model}: no OPENAI_API_KEY set for the official OpenAI API ({where}): "
                             "set it, or point the api base flag at a local OpenAI-compatible server")
        try:
            self.list_models(timeout)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise SetupError(f"{what} {self.model}: the server at {where} refused the API key "
                             f"({exc.status_code}): check OPENAI_API_KEY") from None
        except openai.APIConnectionError as exc:
            raise SetupError(f"{what} {self.model}: cannot reach the server at {where} "
                             f"({type(exc).__name__}: {exc}): start it or fix the api base") from None
        except openai.APIError:
            return  # it answered: a server without /models still serves chat completions

    # ---- requests ---------------------------------------------------------------------------------------

    def request_kwargs(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
                       server_fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The chat-completions arguments for these sampling settings.

        Standard fields only, unless ``api_server="vllm"`` (then vLLM's sampling extensions and the
        caller's ``server_fields``, e.g. ``mm_processor_kwargs``) or the user's ``extra_body``.
        ``params.extra`` never goes out as is: it holds options of other backends (transformers'
        ``generate_kwargs``, the stage's per-clip ``video_fps``) that no server understands.
        """
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
        extra: dict[str, Any] = {}
        if self.api_server == "vllm":
            if params.repetition_penalty is not None:
                extra["repetition_penalty"] = params.repetition_penalty
            if params.do_sample:
                extra["top_k"] = -1  # off, as in the original run (not the checkpoint's generation_config)
            extra.update(server_fields or {})
        extra.update(self.extra_body)
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
                       self.max_retries + 1, describe_error(exc, self.timeout) if exc else "?", wait_s)

    def complete(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
                 server_fields: Mapping[str, Any] | None = None) -> str:
        """One chat completion with retries; raises :class:`RequestFailed` once the retries are spent."""
        kwargs = self.request_kwargs(messages, params, server_fields)
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
            raise self._failure(exc, int(retrying.statistics.get("attempt_number", 1))) from exc

    def _failure(self, exc: BaseException, attempts: int) -> RequestFailed:
        """The :class:`RequestFailed` for the last error of a request (the key scrubbed from the text)."""
        text = self._scrub(f"{describe_error(exc, self.timeout)} ({attempts} attempt{'s' if attempts > 1 else ''})")
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        message, etype = (_error_fields(exc)[:2] if isinstance(exc, openai.APIStatusError) else (None, None))
        logger.warning("%s: request failed: %s", self.model, text)
        return RequestFailed(text, status_code=status, server_message=self._scrub(message) if message else None,
                             error_type=etype, attempts=attempts)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret and self._secret in text else text

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
