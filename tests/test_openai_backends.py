"""OpenAI-compatible LLM and captioner against a real HTTP server on 127.0.0.1 (scripted failures)."""

from __future__ import annotations

import logging
import threading
import time
from email.utils import formatdate

import numpy as np
import openai
import pytest

from lovr_hf.backends.base import CAPTIONERS, LLMS, GenerationParams
from lovr_hf.backends.captioner_openai import OpenAICaptioner, encode_jpeg
from lovr_hf.backends.llm_openai import OpenAIChatLLM
from lovr_hf.backends.openai_client import ReplyError, bounded_map, iter_bounded, parse_retry_after
from lovr_hf.merge_text import smooth_group
from lovr_hf.prompts import CAPTION_SYSTEM, CAPTION_USER, MERGE_SYSTEM, caption_prompt
from lovr_hf.testing import (
    GARBAGE_KINDS,
    Error,
    FakeOpenAIServer,
    Garbage,
    Hang,
    RateLimit,
    Reply,
    default_responder,
    request_images,
)

KEY = "sk-test-7c1f0e9d4b2a-SECRET"
USER = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def server():
    with FakeOpenAIServer(require_key=KEY) as srv:
        yield srv


def make_llm(srv: FakeOpenAIServer, **kw) -> OpenAIChatLLM:
    kw = {"timeout": 2.0, "max_retries": 3, "backoff_base": 0.01, "backoff_max": 0.05, **kw}
    return OpenAIChatLLM("gpt-4o", api_base=srv.base_url, api_key=KEY, **kw)


def test_registered_names() -> None:
    assert LLMS.get("openai") is OpenAIChatLLM and CAPTIONERS.get("openai") is OpenAICaptioner


def test_good_answer_request_fidelity_and_usage(server: FakeOpenAIServer) -> None:
    llm = make_llm(server)
    assert llm.chat(USER) == "echo: Say hello."
    (req,) = server.chat_requests
    assert req.authorization == f"Bearer {KEY}"
    body = req.body
    assert body["model"] == "gpt-4o" and body["temperature"] == 0.5 and "top_p" not in body  # the original
    assert body["messages"][0] == {"role": "system", "content": MERGE_SYSTEM}  # prepended when missing
    assert body["max_tokens"] == 1024 and "repetition_penalty" not in body
    stats = llm.stats.snapshot()
    assert stats["calls"] == 1 and stats["attempts"] == 1 and stats["retries"] == 0
    assert stats["tokens_in"] > 0 and stats["tokens_out"] > 0
    assert llm.model_id() == "openai:gpt-4o" and llm.max_context_tokens == 128_000
    # explicit system prompt kept, greedy params -> temperature 0, seed passed
    llm.chat([{"role": "system", "content": "S"}, *USER], GenerationParams(do_sample=False, seed=3))
    body = server.chat_requests[-1].body
    assert [m["role"] for m in body["messages"]] == ["system", "user"] and body["messages"][0]["content"] == "S"
    assert body["temperature"] == 0.0 and body["seed"] == 3


def test_500s_then_success_retries_observed(server: FakeOpenAIServer) -> None:
    server.push(Error(500), Error(503), Error(502))
    llm = make_llm(server)
    assert llm.chat(USER) == "echo: Say hello."
    assert [r.action for r in server.chat_requests] == ["error", "error", "error", "reply"]
    s = llm.stats.snapshot()
    assert (s["calls"], s["attempts"], s["retries"], s["failures"]) == (1, 4, 3, 0)


def test_retries_exhausted_and_non_retryable(server: FakeOpenAIServer) -> None:
    server.push(*[Error(500)] * 3)
    llm = make_llm(server, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        llm.chat(USER)
    assert len(server.chat_requests) == 3 and llm.stats.failures == 1
    server.push(Error(400, "bad request"))
    with pytest.raises(openai.BadRequestError):
        llm.chat(USER)
    assert len(server.chat_requests) == 4  # a 400 is never retried


def test_timeout_then_retry(server: FakeOpenAIServer) -> None:
    server.push(Hang(10))
    llm = make_llm(server, timeout=0.3, max_retries=0)
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        llm.chat(USER)
    assert time.perf_counter() - t0 < 3.0  # gave up at the timeout, did not wait for the server
    server.push(Hang(10))
    llm = make_llm(server, timeout=0.3, max_retries=1)
    assert llm.chat(USER) == "echo: Say hello." and llm.stats.retries == 1


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_garbage_is_retried_then_reported(server: FakeOpenAIServer, kind: str) -> None:
    server.push(Garbage(kind))
    llm = make_llm(server)
    assert llm.chat(USER) == "echo: Say hello." and llm.stats.retries == 1
    server.push(Garbage(kind))
    with pytest.raises(ReplyError):
        make_llm(server, max_retries=0).chat(USER)


def test_429_retry_after_is_honoured(server: FakeOpenAIServer) -> None:
    server.push(RateLimit(retry_after=1))
    llm = make_llm(server)
    assert llm.chat(USER) == "echo: Say hello."
    first, second = server.chat_requests
    assert first.action == "rate_limit" and second.action == "reply"
    assert second.started - first.finished >= 0.95  # the server's 1 s, not the 0.01-0.05 s backoff
    assert llm.stats.retries == 1
    server.push(RateLimit(retry_after=0.4, as_ms=True))
    llm.chat(USER)
    a, b = server.chat_requests[-2:]
    assert b.started - a.finished >= 0.38


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8 <= parse_retry_after({"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 10.5
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None


def test_api_key_sent_but_never_logged(server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, including openai's and httpx's
    server.push(Error(500), RateLimit(0.05), Garbage("not_json"), Hang(5))
    llm = make_llm(server, timeout=0.5, max_retries=4)
    assert llm.chat(USER)
    server.push(Error(401, "invalid key"))
    with pytest.raises(openai.AuthenticationError) as err:
        llm.chat(USER)
    assert all(r.authorization == f"Bearer {KEY}" for r in server.chat_requests)
    assert "retrying" in caplog.text  # the retries were logged...
    assert KEY not in caplog.text and KEY[-6:] not in caplog.text  # ...without the key
    assert KEY not in repr(llm.client) and KEY not in str(err.value)


def test_key_and_base_url_from_environment(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert OpenAIChatLLM("m", max_retries=0).chat(USER) == "echo: Say hello."
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeOpenAIServer() as local:  # a local server without auth: the placeholder key goes out
        OpenAIChatLLM("m", api_base=local.base_url).chat(USER)
        assert local.chat_requests[0].authorization == "Bearer EMPTY"


def test_chat_many_bounded_concurrency_keeps_order() -> None:
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow_echo(request: dict) -> str:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return default_responder(request)

    with FakeOpenAIServer(slow_echo) as srv:
        llm = OpenAIChatLLM("m", api_base=srv.base_url, num_workers=3, max_retries=0)
        convs = [[{"role": "user", "content": f"item {i}"}] for i in range(9)]
        srv.push(Error(400))  # the first request to arrive fails, the rest succeed
        out = llm.chat_many(convs)
    assert state["peak"] == 3  # bounded, and actually concurrent
    failed = [i for i, r in enumerate(out) if isinstance(r, BaseException)]
    assert len(failed) == 1
    assert all(out[i] == f"echo: item {i}" for i in range(9) if i not in failed)


def test_bounded_map_helpers() -> None:
    def f(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        time.sleep(0.01 * (5 - x))
        return x * 10

    out = bounded_map(f, range(6), num_workers=4)
    assert out[:3] == [0, 10, 20] and isinstance(out[3], ValueError) and out[4:] == [40, 50]
    seen = sorted(i for i, _ in iter_bounded(f, iter(range(6)), 2))
    assert seen == list(range(6))
    with pytest.raises(ValueError):
        bounded_map(f, [], 0)


def test_merge_through_the_server_with_failures(server: FakeOpenAIServer) -> None:
    caps = ["A man enters.\nHe sits down.", "He orders coffee.\nThe waiter nods.", "He drinks.\nHe leaves."]
    server.push(Error(500), Error(500))  # the first join needs 2 retries, then succeeds
    llm = make_llm(server, max_retries=2)
    r = smooth_group(caps, llm)
    assert r.caption == ("A man enters.\nHe sits down.\nThen, he orders coffee.\nThe waiter nods.\n"
                         "Then, he drinks.\nHe leaves.")
    assert (r.llm_calls, r.failed_calls) == (2, 0) and llm.stats.retries == 2
    server.push(*[Error(500)] * 3)  # first join: retries exhausted -> originals kept, run goes on
    r = smooth_group(caps, llm)
    assert r.caption == "A man enters.\nHe sits down.\nHe orders coffee.\nThe waiter nods.\nThen, he drinks.\nHe leaves."
    assert (r.llm_calls, r.failed_calls, r.status) == (2, 1, "failed") and "InternalServerError" in r.error


# ---- captioner --------------------------------------------------------------------------------------------


def clip(n: int, value: int, h: int = 48, w: int = 64) -> np.ndarray:
    """n frames of a flat grey level with a little texture (JPEG keeps the mean)."""
    rng = np.random.default_rng(value)
    frames = np.full((n, h, w, 3), value, np.int16) + rng.integers(-3, 4, (n, h, w, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_captioner_sends_frames_as_jpeg_and_prompt(server: FakeOpenAIServer) -> None:
    cap = OpenAICaptioner("qwen-vl", api_base=server.base_url, api_key=KEY, num_workers=2, max_retries=0)
    texts = cap.caption([clip(8, 40), clip(2, 200, 120, 160)], caption_prompt(), GenerationParams())
    assert texts == ["The clip shows 8 frames of 64x48 pixels.\nThe average brightness is 40 out of 255.",
                     "The clip shows 2 frames of 160x120 pixels.\nThe average brightness is 200 out of 255."]
    bodies = sorted((r.body for r in server.chat_requests), key=lambda b: len(request_images(b)))
    body = bodies[-1]
    assert body["messages"][0] == {"role": "system", "content": CAPTION_SYSTEM}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 8 + ["text"] and parts[-1]["text"] == CAPTION_USER
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # the original captioner sampling goes out; repetition_penalty too, as this is not api.openai.com
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["repetition_penalty"]) == (
        0.9, 0.001, 1024, 1.05)
    assert cap.stats.calls == 2 and cap.model_id() == "openai:qwen-vl"


def test_captioner_downscale_and_detail(server: FakeOpenAIServer) -> None:
    cap = OpenAICaptioner("m", api_base=server.base_url, api_key=KEY, max_side=32, image_detail="low")
    (text,) = cap.caption([clip(3, 128, 120, 160)])
    assert text.startswith("The clip shows 3 frames of 32x24 pixels.")
    assert server.chat_requests[0].body["messages"][1]["content"][0]["image_url"]["detail"] == "low"
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((4, 4), np.uint8))


def test_captioner_per_clip_failure_and_total_failure(server: FakeOpenAIServer) -> None:
    cap = OpenAICaptioner("m", api_base=server.base_url, api_key=KEY, num_workers=1, max_retries=1,
                          backoff_base=0.01)
    server.push(Error(500), Garbage("empty_content"))  # clip 0: both attempts fail
    texts = cap.caption([clip(2, 10), clip(2, 90)])
    assert texts[0] == "" and texts[1].startswith("The clip shows 2 frames")
    assert cap.last_errors[0].startswith("ReplyError") and cap.last_errors[1] is None
    server.push(Reply("A fine caption."), Error(400), Error(400))
    assert cap.caption([clip(2, 10), clip(2, 20)]) == ["A fine caption.", ""]
    server.push(Error(400), Error(400))
    with pytest.raises(RuntimeError, match="all 2 clips of the batch failed"):
        cap.caption([clip(2, 10), clip(2, 20)])
