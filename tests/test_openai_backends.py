"""OpenAI-compatible LLM and captioner against a real HTTP server on 127.0.0.1 (scripted failures), as strict as
the service it stands in for: the official API (unknown fields and content parts refused with HTTP 400) or a vLLM
server (its extensions and video parts accepted)."""

from __future__ import annotations

import logging
import threading
import time
from email.utils import formatdate

import numpy as np
import openai
import pytest

from lovr_hf.backends.base import CAPTIONERS, LLMS, GenerationParams
from lovr_hf.backends.captioners.common import PartialBatchError
from lovr_hf.backends.captioners.openai import OpenAICaptioner, encode_jpeg
from lovr_hf.backends.llms.openai import OpenAIChatLLM
from lovr_hf.backends.openai_client import RequestFailed, bounded_map, iter_bounded, parse_retry_after
from lovr_hf.merge.text import smooth_group
from lovr_hf.prompts import CAPTION_SYSTEM, CAPTION_USER, MERGE_SYSTEM, caption_prompt
from lovr_hf.testing.fake_openai import (
    GARBAGE_KINDS,
    Error,
    FakeOpenAIServer,
    Garbage,
    Hang,
    RateLimit,
    Reply,
    default_responder,
    request_images,
    request_videos,
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
    server.push(*[Error(500, "The server had an error while processing your request.")] * 3)
    llm = make_llm(server, max_retries=2)
    with pytest.raises(RequestFailed) as err:
        llm.chat(USER)
    assert len(server.chat_requests) == 3 and llm.stats.failures == 1
    # the real reason is kept: status, the server's error type and message, attempts
    assert str(err.value) == ("HTTP 500 server_error: The server had an error while processing your request. "
                              "(3 attempts)")
    assert err.value.status_code == 500 and err.value.attempts == 3
    assert isinstance(err.value.__cause__, openai.InternalServerError)
    server.push(Error(400, "bad request"))
    with pytest.raises(RequestFailed, match=r"^HTTP 400 invalid_request_error: bad request \(1 attempt\)$"):
        llm.chat(USER)
    assert len(server.chat_requests) == 4  # a 400 is never retried


def test_timeout_then_retry(server: FakeOpenAIServer) -> None:
    server.push(Hang(10))
    llm = make_llm(server, timeout=0.3, max_retries=0)
    t0 = time.perf_counter()
    with pytest.raises(RequestFailed, match=r"^timed out after 0.3 s \(1 attempt\)$") as err:
        llm.chat(USER)
    assert err.value.status_code is None and isinstance(err.value.__cause__, openai.APITimeoutError)
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
    with pytest.raises(RequestFailed) as err:
        make_llm(server, max_retries=0).chat(USER)
    assert str(err.value).startswith("unusable reply: ") and str(err.value).endswith("(1 attempt)")


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
    server.push(Error(401, f"Incorrect API key provided: {KEY}."))  # a server echoing the key back
    with pytest.raises(RequestFailed) as err:
        llm.chat(USER)
    assert err.value.status_code == 401 and "Incorrect API key provided: ***." in str(err.value)
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
    assert (r.llm_calls, r.failed_calls, r.status) == (2, 1, "failed")
    assert "RequestFailed: HTTP 500 server_error: internal server error (3 attempts)" in r.error


# ---- captioner --------------------------------------------------------------------------------------------


def clip(n: int, value: int, h: int = 48, w: int = 64) -> np.ndarray:
    """n frames of a flat grey level with a little texture (JPEG keeps the mean)."""
    rng = np.random.default_rng(value)
    frames = np.full((n, h, w, 3), value, np.int16) + rng.integers(-3, 4, (n, h, w, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_captioner_sends_frames_as_jpeg_and_prompt(server: FakeOpenAIServer) -> None:
    """Default server kind = the official API: standard fields only, frames as image parts; the strict server
    (which refuses anything else with 400) answers every clip."""
    cap = OpenAICaptioner("qwen-vl", api_base=server.base_url, api_key=KEY, num_workers=2, max_retries=0)
    params = GenerationParams(extra={"video_fps": [1.0, 2.0], "generate_kwargs": {"num_beams": 2}})
    texts = cap.caption([clip(8, 40), clip(2, 200, 120, 160)], caption_prompt(), params)
    assert texts == ["The clip shows 8 frames of 64x48 pixels.\nThe average brightness is 40 out of 255.",
                     "The clip shows 2 frames of 160x120 pixels.\nThe average brightness is 200 out of 255."]
    assert all(r.rejected is None for r in server.chat_requests)
    bodies = sorted((r.body for r in server.chat_requests), key=lambda b: len(request_images(b)))
    body = bodies[-1]
    assert body["messages"][0] == {"role": "system", "content": CAPTION_SYSTEM}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 8 + ["text"] and parts[-1]["text"] == CAPTION_USER
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # the original captioner's sampling, as far as the API has the knobs: nothing else goes out
    assert body == {"model": "qwen-vl", "messages": body["messages"], "temperature": 0.9, "top_p": 0.001,
                    "max_tokens": 1024}
    assert cap.stats.calls == 2 and cap.model_id() == "openai:qwen-vl"


def test_strict_server_refuses_what_the_official_api_refuses(server: FakeOpenAIServer) -> None:
    """The stand-in answers like api.openai.com: HTTP 400 with its error body for unknown fields, unknown
    content parts, bad ranges and non-data image URLs; the client keeps the message."""
    import httpx

    def post(body: dict) -> httpx.Response:
        return httpx.post(server.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})

    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    r = post({**base, "repetition_penalty": 1.05})
    assert r.status_code == 400 and r.json() == {"error": {
        "message": "Unrecognized request argument supplied: repetition_penalty", "type": "invalid_request_error",
        "param": None, "code": None}}
    r = post({**base, "repetition_penalty": 1.05, "video_fps": [1.0]})
    assert r.json()["error"]["message"] == "Unrecognized request arguments supplied: repetition_penalty, video_fps"
    video = {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64,AA"}}]}
    err = post({**base, "messages": [video]}).json()["error"]
    assert err["param"] == "messages[0].content[0].type" and err["code"] == "invalid_value"
    assert err["message"].startswith("Invalid value: 'video_url'. Supported values are: 'text', 'image_url'")
    system_image = {"role": "system", "content": [{"type": "image_url", "image_url": {"url": encode_jpeg(clip(1, 9)[0])}}]}
    assert post({**base, "messages": [system_image]}).status_code == 400
    web = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]}
    assert post({**base, "messages": [web]}).json()["error"]["code"] == "invalid_image_url"
    broken = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]}
    assert post({**base, "messages": [broken]}).json()["error"]["code"] == "invalid_image_format"
    assert post({**base, "temperature": 2.5}).json()["error"]["code"] == "decimal_above_max_value"
    assert post({**base, "messages": [{"role": "robot", "content": "x"}]}).json()["error"]["param"] == "messages[0].role"
    assert post({"model": "m"}).json()["error"]["code"] == "missing_required_parameter"
    assert {r.action for r in server.chat_requests} == {"rejected"}
    # through the client: the 400 is not retried and its message is the error
    llm = make_llm(server, extra_body={"repetition_penalty": 1.05})
    with pytest.raises(RequestFailed) as info:
        llm.chat(USER)
    assert str(info.value) == ("HTTP 400 invalid_request_error: Unrecognized request argument supplied: "
                               "repetition_penalty (1 attempt)")
    assert info.value.server_message == "Unrecognized request argument supplied: repetition_penalty"


def test_strict_field_list_covers_the_official_sdk() -> None:
    """Every request field the official SDK's chat.completions.create() declares is known to the stand-in."""
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    from lovr_hf.testing.openai_rules import OPENAI_FIELDS, VLLM_EXTRA_FIELDS

    assert set(CompletionCreateParamsBase.__annotations__) <= OPENAI_FIELDS
    assert {"repetition_penalty", "top_k", "mm_processor_kwargs"} <= VLLM_EXTRA_FIELDS
    assert not {"repetition_penalty", "top_k", "mm_processor_kwargs", "video_fps"} & OPENAI_FIELDS


def test_captioner_for_a_vllm_server_sends_a_video_and_its_extras() -> None:
    """``api_server="vllm"``: the clip is one video part of JPEG frames, with the clip's fps and the original
    sampling (repetition_penalty, top_k off); a vLLM-style server takes it, the official one refuses it."""
    params = GenerationParams(extra={"video_fps": [0.8, 2.5]})
    with FakeOpenAIServer(api="vllm") as vllm_srv:
        cap = OpenAICaptioner("Qwen/Qwen2.5-VL-7B-Instruct", api_base=vllm_srv.base_url, api_server="vllm",
                              max_retries=0, num_workers=1)
        texts = cap.caption([clip(8, 40), clip(4, 200)], caption_prompt(), params)
        assert texts == ["The video shows 8 frames of 64x48 pixels.\nThe average brightness is 40 out of 255.",
                         "The video shows 4 frames of 64x48 pixels.\nThe average brightness is 200 out of 255."]
        first, second = vllm_srv.chat_requests
        assert [len(v) for v in request_videos(first.body)] == [8] and request_images(first.body) == []
        parts = first.body["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["video_url", "text"]
        assert parts[0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
        assert {k: first.body[k] for k in ("temperature", "top_p", "max_tokens", "repetition_penalty", "top_k")} == {
            "temperature": 0.9, "top_p": 0.001, "max_tokens": 1024, "repetition_penalty": 1.05, "top_k": -1}
        assert first.body["mm_processor_kwargs"] == {"fps": [0.8]}
        assert second.body["mm_processor_kwargs"] == {"fps": [2.5]}
        assert first.ignored_fields == ()
    with FakeOpenAIServer() as official:
        cap = OpenAICaptioner("m", api_base=official.base_url, api_server="vllm", max_retries=2, num_workers=1)
        with pytest.raises(PartialBatchError) as info:
            cap.caption([clip(2, 40)], caption_prompt(), GenerationParams(extra={"video_fps": 1.0}))
        assert info.value.all_failed and len(official.chat_requests) == 1  # a 400 is not retried
        assert info.value.errors[0] == ("HTTP 400 invalid_request_error: Unrecognized request arguments supplied: "
                                        "mm_processor_kwargs, repetition_penalty, top_k (1 attempt)")


def test_vllm_style_server_ignores_unknown_fields_like_vllm() -> None:
    with FakeOpenAIServer(api="vllm") as srv:
        llm = OpenAIChatLLM("m", api_base=srv.base_url, api_server="vllm", extra_body={"my_field": 1})
        assert llm.chat(USER) == "echo: Say hello."
        (req,) = srv.chat_requests
        assert req.ignored_fields == ("my_field",) and req.body["repetition_penalty"] == 1.0


def test_captioner_downscale_and_detail(server: FakeOpenAIServer) -> None:
    cap = OpenAICaptioner("m", api_base=server.base_url, api_key=KEY, max_side=32, image_detail="low")
    (text,) = cap.caption([clip(3, 128, 120, 160)])
    assert text.startswith("The clip shows 3 frames of 32x24 pixels.")
    assert server.chat_requests[0].body["messages"][1]["content"][0]["image_url"]["detail"] == "low"
    boxed = OpenAICaptioner("m", api_base=server.base_url, api_key=KEY, downscale=(40, 40))
    assert boxed.caption([clip(2, 128, 120, 160)])[0].startswith("The clip shows 2 frames of 40x30 pixels.")
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="api_server"):
        OpenAICaptioner("m", api_base=server.base_url, api_server="tgi")


def test_captioner_per_clip_failure_keeps_the_real_error(server: FakeOpenAIServer) -> None:
    """A clip that fails after its retries is an error with the server's reason, never an empty caption."""
    cap = OpenAICaptioner("m", api_base=server.base_url, api_key=KEY, num_workers=1, max_retries=1,
                          backoff_base=0.01)
    server.push(Error(500), Garbage("empty_content"))  # clip 0: both attempts fail
    with pytest.raises(PartialBatchError) as info:
        cap.caption([clip(2, 10), clip(2, 90)])
    texts, errors = info.value.texts, info.value.errors
    assert texts[0] == "" and texts[1].startswith("The clip shows 2 frames")
    assert errors == ["unusable reply: reply with empty content (2 attempts)", None] == cap.last_errors
    assert not info.value.all_failed
    server.push(Reply("A fine caption."), Error(400, "Invalid image."))
    with pytest.raises(PartialBatchError) as info:
        cap.caption([clip(2, 10), clip(2, 20)])
    assert info.value.texts == ["A fine caption.", ""]
    assert info.value.errors == [None, "HTTP 400 invalid_request_error: Invalid image. (1 attempt)"]
    assert cap.caption([clip(2, 10)]) == [cap.caption([clip(2, 10)])[0]]  # healthy again: plain texts
