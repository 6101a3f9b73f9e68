"""The caption stage through the OpenAI-compatible captioner on real decoded clips, against a stand-in as strict
as api.openai.com and against a vLLM-style one; failed calls keep the server's error on the row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _caption_helpers import FPS, by_id, clip_row, write_clips

from lovr_hf import schema
from lovr_hf.caption.backends import check_backend_flags
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption, sampled_fps
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.testing.fake_openai import Error, FakeOpenAIServer, request_images, request_videos
from lovr_hf.video.frames import caption_num_frames

LENGTHS = (120, 96, 60, 84)  # 10 s, 8 s, 5 s, 7 s at 12 fps


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("openai_src")
    make_video(d / "v.mp4", [SceneSpec(n) for n in LENGTHS], 48, 32, FPS, seed=2)
    return d / "v.mp4"


def four_clips(root: Path, src: Path):
    rows, start = [], 0
    for k, n in enumerate(LENGTHS, start=1):
        rows.append(clip_row(src, "v", k, start, n))
        start += n
    return write_clips(root, rows)


def config(srv: FakeOpenAIServer, **kw) -> CaptionConfig:
    kw = {"batch_size": 4, "api_concurrency": 2, **kw}
    opts = {"max_retries": 0, **kw.pop("backend_options", {})}
    return CaptionConfig(backend="openai", api_base=srv.base_url, api_model="gpt-4o-mini", backend_options=opts, **kw)


def expected_frames(n: int) -> int:
    return caption_num_frames(n, n / FPS)


def test_official_api_captions_every_clip(source: Path, tmp_path: Path) -> None:
    """The #13 scenario: against a server that answers unknown fields with 400 (as api.openai.com does), every
    clip is captioned (before: 0 of 4, "Unrecognized request argument supplied: repetition_penalty")."""
    repo = four_clips(tmp_path / "lovr", source)
    with FakeOpenAIServer() as srv:
        res = caption(repo, config(srv))
        reqs = srv.chat_requests
    rows = by_id(repo)
    assert [r["status"] for r in rows.values()] == [schema.OK] * 4 and res.stats[schema.OK] == 4
    assert len(reqs) == 4 and all(r.rejected is None for r in reqs)
    by_frames = sorted(len(request_images(r.body)) for r in reqs)
    assert by_frames == sorted(expected_frames(n) for n in LENGTHS)
    for (cid, row), n in zip(rows.items(), LENGTHS):
        assert row["caption"].startswith(f"The clip shows {expected_frames(n)} frames of 48x32 pixels"), cid
    assert all(set(r.body) == {"model", "messages", "temperature", "top_p", "max_tokens"} for r in reqs)


def test_vllm_server_gets_a_video_with_its_fps_and_the_original_sampling(source: Path, tmp_path: Path) -> None:
    repo = four_clips(tmp_path / "lovr", source)
    with FakeOpenAIServer(api="vllm") as srv:
        caption(repo, config(srv, api_server="vllm"))
        reqs = srv.chat_requests
    assert [r["status"] for r in by_id(repo).values()] == [schema.OK] * 4
    clips = {c["clip_id"]: c for c in repo.read(schema.CLIPS)}
    seen = set()
    for r in reqs:
        (frames,) = request_videos(r.body)
        assert r.body["repetition_penalty"] == 1.05 and r.body["top_k"] == -1 and r.body["top_p"] == 0.001
        assert r.ignored_fields == ()
        # the clip this request was for: the one whose frame count and qwen_vl_utils fps match
        fps = r.body["mm_processor_kwargs"]["fps"][0]
        match = [cid for cid, c in clips.items() if expected_frames(c["num_frames"]) == len(frames)
                 and fps == pytest.approx(sampled_fps(c, len(frames)))]
        assert match, (len(frames), fps)
        seen.update(match)
    assert seen == set(clips)
    # restated: qwen_vl_utils' sample_fps = nframes / total_frames * video_fps
    c = clips["v-Scene-001"]
    assert sampled_fps(c, 10) == pytest.approx(10 / 120 * 12)


def test_failed_requests_keep_the_server_error_and_are_not_repeated(source: Path, tmp_path: Path) -> None:
    """#10: a clip whose request fails is a failed row with the HTTP status and message (not "empty output"),
    the other clips of its batch keep their captions, and nothing is requested twice."""
    repo = four_clips(tmp_path / "lovr", source)
    with FakeOpenAIServer() as srv:
        srv.push(Error(400, "Invalid image: the image could not be decoded."))
        caption(repo, config(srv, api_concurrency=1))
        assert len(srv.chat_requests) == 4
        rows = list(by_id(repo).values())
        failed = [r for r in rows if r["status"] == schema.FAILED]
        assert len(failed) == 1 and sum(r["status"] == schema.OK for r in rows) == 3
        assert failed[0]["error"] == ("HTTP 400 invalid_request_error: Invalid image: the image could not be "
                                      "decoded. (1 attempt)")
        assert failed[0]["caption"] == ""
        # every clip fails: each row says why, still one request per clip
        repo2 = four_clips(tmp_path / "all", source)
        srv.push(*[Error(503, "overloaded")] * 4)
        n = len(srv.chat_requests)
        caption(repo2, config(srv, api_concurrency=1))
        assert len(srv.chat_requests) - n == 4
        assert {r["error"] for r in by_id(repo2).values()} == {"HTTP 503 server_error: overloaded (1 attempt)"}


def test_flags_a_backend_would_ignore_are_refused() -> None:
    with pytest.raises(ValueError, match="--dtype is chosen by the server"):
        check_backend_flags(CaptionConfig(backend="openai", dtype="bfloat16"))
    with pytest.raises(ValueError, match="generate_kwargs are transformers generate"):
        check_backend_flags(CaptionConfig(backend="openai", generate_kwargs={"num_beams": 2}))
    with pytest.raises(ValueError, match="--attn-implementation is a transformers option"):
        check_backend_flags(CaptionConfig(backend="vllm", attn_implementation="sdpa"))
    with pytest.raises(ValueError, match="--device is not a vLLM option"):
        check_backend_flags(CaptionConfig(backend="vllm", device="cpu"))
    with pytest.raises(ValueError, match="--tensor-parallel-size is a vLLM option"):
        check_backend_flags(CaptionConfig(backend="transformers", tensor_parallel_size=2))
    with pytest.raises(ValueError, match="--api-server is for --backend openai"):
        check_backend_flags(CaptionConfig(backend="vllm", api_server="vllm"))
    with pytest.raises(ValueError, match="--api-server must be one of"):
        check_backend_flags(CaptionConfig(backend="openai", api_server="tgi"))
    # honoured flags pass: dtype and downscale for vLLM, downscale for openai, the defaults everywhere
    for cfg in (CaptionConfig(backend="vllm", dtype="float16", downscale=True), CaptionConfig(backend="openai",
                downscale=True), CaptionConfig(), CaptionConfig(backend="dummy", dtype="float16")):
        check_backend_flags(cfg)


def test_refused_flag_fails_before_any_work(source: Path, tmp_path: Path) -> None:
    repo = four_clips(tmp_path / "lovr", source)
    with pytest.raises(ValueError, match="does not use"):
        caption(repo, CaptionConfig(backend="openai", revision="main"))
    assert not repo.has(schema.CLIP_CAPTIONS)


def test_downscale_reaches_the_openai_requests(source: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    make_video(big, [SceneSpec(36)], 640, 360, FPS, seed=1)
    repo = write_clips(tmp_path / "lovr", [clip_row(big, "b", 1, 0, 36)])
    with FakeOpenAIServer() as srv:
        caption(repo, config(srv, downscale=True))
    row = by_id(repo)["b-Scene-001"]
    assert row["status"] == schema.OK and "of 426x240 pixels" in row["caption"]  # shrunk into the original box
    assert json.loads(row["settings"])["num_frames"] == expected_frames(36)
