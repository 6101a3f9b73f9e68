"""The vLLM captioner up to the vLLM boundary: vLLM itself (GPU-only) is not installable here, so a
recording stand-in for the ``vllm`` module checks exactly what the backend hands it through the caption
stage, against a restatement of what the original ``caption_generator.py`` + ``qwen_vl_utils`` (0.0.10)
passed: the chat-templated original prompt, the clip resized to qwen_vl_utils' pixel budget (float
[T, C, H, W], bicubic), ``mm_processor_kwargs={"fps": [sampled fps]}`` and the original sampling."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lovr_hf import schema
from lovr_hf.backends.captioners.qwen_vision import smart_resize, video_pixel_budget
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.tiny import build_tiny_qwen25vl
from lovr_hf.video.frames import caption_frame_plan
from lovr_hf.video.reader import read_frames

FPS = 8
LENGTHS = (96, 40)  # 12 s and 5 s at 8 fps
# the original caption_generator.py texts, restated (its user prompt is a backslash-continued literal: each
# sentence break carries the next source line's 32-space indentation)
ORIGINAL_SYSTEM = ("You are a video analysis assistant, and your task is to provide a detailed and structured "
                   "description of the provided video.")
ORIGINAL_USER = (" " * 33).join([
    "Please provide a detailed and comprehensive description of the video content.",
    "Your description should cover the events, scenes, character actions, overall style,",
    "emotional atmosphere, narrative elements, and any noteworthy details.",
    "Ensure that your description is clear, coherent, and thorough, with as much detail as possible."])
ORIGINAL_SAMPLING = {"temperature": 0.9, "top_p": 0.001, "repetition_penalty": 1.05, "max_tokens": 1024,
                     "stop_token_ids": [], "top_k": -1}  # top_k: SamplingParams' default (off)


class _Out:
    def __init__(self, text: str, n: int) -> None:
        self.outputs = [types.SimpleNamespace(text=text, token_ids=list(range(n)))]
        self.prompt_token_ids = [0] * 10


def fake_vllm(record: dict) -> types.ModuleType:
    mod = types.ModuleType("vllm")

    class LLM:
        def __init__(self, **kwargs):
            record["engine"] = kwargs

        def generate(self, requests, sampling_params=None, use_tqdm=True):
            record.setdefault("requests", []).extend(requests)
            record["sampling"] = sampling_params
            return [_Out(f"clip with {len(r['multi_modal_data']['video'])} frames", 5) for r in requests]

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


@pytest.fixture()
def clips_repo(tmp_path: Path) -> BenchmarkRepo:
    src = tmp_path / "v.mp4"
    make_video(src, [SceneSpec(n) for n in LENGTHS], 64, 48, FPS, seed=3)
    rows, s = [], 0
    for k, n in enumerate(LENGTHS, start=1):
        rows.append({"video_id": "v", "clip_id": schema.clip_id_for("v", k), "slice_num": k, "start_time": s / FPS,
                     "end_time": (s + n) / FPS, "start_frame": s, "end_frame": s + n, "num_frames": n, "fps": float(FPS),
                     "path": str(src), "frame_offset": s, "clip_mode": "virtual", "status": "ok", "error": None})
        s += n
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, rows)
    return repo


@pytest.fixture()
def vllm_record(monkeypatch):  # noqa: ANN201
    record: dict = {}
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(record))
    from lovr_hf.backends import model_cache

    model_cache.release_kinds("captioner")  # a fresh (fake) engine for each test
    yield record
    model_cache.release_kinds("captioner")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_qwen25vl(tmp_path_factory.getbasetemp() / "tiny_models" / "qwen2_5_vl")


def original_resize(video: torch.Tensor) -> torch.Tensor:
    """qwen_vl_utils 0.0.10 fetch_video's resize, restated: budget from the frame count, smart_resize to
    multiples of 28, torchvision bicubic with antialias, float."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    nframes, _, height, width = video.shape
    min_pixels = 128 * 28 * 28
    total_pixels = int(float(128000 * 28 * 28 * 0.9))
    max_pixels = max(min(768 * 28 * 28, total_pixels / nframes * 2), int(min_pixels * 1.05))
    h_bar, w_bar = max(28, round(height / 28) * 28), max(28, round(width / 28) * 28)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / 28) * 28, math.floor(width / beta / 28) * 28
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / 28) * 28, math.ceil(width * beta / 28) * 28
    return F.resize(video, [h_bar, w_bar], interpolation=InterpolationMode.BICUBIC, antialias=True).float()


def test_caption_stage_hands_vllm_the_original_requests(clips_repo, vllm_record, tiny_model) -> None:
    from transformers import AutoProcessor

    caption(clips_repo, CaptionConfig(backend="vllm", model_path=tiny_model, tensor_parallel_size=2, batch_size=2))
    rows = clips_repo.read(schema.CLIP_CAPTIONS)
    plans = [caption_frame_plan(n, n / FPS) for n in LENGTHS]  # the frame rule is frames.py's
    assert rows["caption"] == [f"clip with {len(p.indices)} frames" for p in plans]
    assert set(rows["status"]) == {schema.OK}
    engine = vllm_record["engine"]
    assert engine["model"] == tiny_model and engine["tensor_parallel_size"] == 2 and engine["dtype"] == "auto"
    assert engine["trust_remote_code"] is False  # deliberate: the original passed True (remote code only on request)
    assert "mm_processor_kwargs" not in engine  # the original gave the engine no processor options
    assert vllm_record["sampling"].kwargs == ORIGINAL_SAMPLING

    processor = AutoProcessor.from_pretrained(tiny_model)
    src = clips_repo.read(schema.CLIPS)[0]["path"]
    reqs = vllm_record["requests"]
    assert len(reqs) == 2 and all(set(r) == {"prompt", "multi_modal_data", "mm_processor_kwargs"} for r in reqs)
    start = 0
    for req, n, plan in zip(reqs, LENGTHS, plans):
        messages = [{"role": "system", "content": ORIGINAL_SYSTEM},
                    {"role": "user", "content": [{"type": "video", "video": f"file://{src}", "nframes": len(plan.indices)},
                                                 {"type": "text", "text": ORIGINAL_USER}]}]
        assert req["prompt"] == processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        video = req["multi_modal_data"]["video"]
        frames = read_frames(src, [start + i for i in plan.indices])
        expected = original_resize(torch.from_numpy(frames).permute(0, 3, 1, 2))
        assert isinstance(video, torch.Tensor) and video.dtype == torch.float32
        assert video.shape == expected.shape and video.shape[2:] == (280, 392)  # 64x48 scaled up to >= 128 tokens
        torch.testing.assert_close(video, expected, rtol=0, atol=1e-3)
        assert req["mm_processor_kwargs"] == {"fps": [pytest.approx(len(plan.indices) / n * FPS)]}
        start += n


def test_dtype_downscale_and_budget_options_are_honoured(clips_repo, vllm_record, tiny_model, tmp_path) -> None:
    src = tmp_path / "wide.mp4"
    make_video(src, [SceneSpec(40)], 640, 360, FPS, seed=1)
    repo = BenchmarkRepo(tmp_path / "wide")
    repo.write(schema.CLIPS, [{**clips_repo.read(schema.CLIPS)[1], "video_id": "w", "clip_id": "w-Scene-001",
                               "path": str(src), "start_frame": 0, "end_frame": 40, "frame_offset": 0,
                               "start_time": 0.0, "end_time": 5.0}])
    caption(repo, CaptionConfig(backend="vllm", model_path=tiny_model, dtype="float16", downscale=True))
    assert vllm_record["engine"]["dtype"] == "float16"
    (req,) = vllm_record["requests"]
    video = req["multi_modal_data"]["video"]
    # shrunk into 426x240 first (the original's helper size), then to the budget: 240x426 -> 252x420
    assert video.shape[2:] == smart_resize(240, 426, 28, *video_pixel_budget(len(video), 28)) == (252, 420)
    vllm_record.clear()
    repo2 = BenchmarkRepo(tmp_path / "raw")
    repo2.write(schema.CLIPS, repo.read(schema.CLIPS))
    caption(repo2, CaptionConfig(backend="vllm", model_path=tiny_model,
                                 backend_options={"pixel_budget": "none", "max_pixels": 28 * 28 * 64}))
    (req,) = vllm_record["requests"]
    raw = req["multi_modal_data"]["video"]
    assert isinstance(raw, np.ndarray) and raw.dtype == np.uint8 and raw.shape[1:] == (360, 640, 3)
    assert vllm_record["engine"]["mm_processor_kwargs"] == {"max_pixels": 28 * 28 * 64}


def test_budget_follows_the_frame_count() -> None:
    """qwen_vl_utils' per-frame cap: 768 tokens until the 0.9 x 128000-token video budget binds (> 300 frames)."""
    assert video_pixel_budget(64, 28) == (128 * 28 * 28, 768 * 28 * 28)
    low, high = video_pixel_budget(400, 28)
    assert low == 128 * 28 * 28 and high == pytest.approx(128000 * 28 * 28 * 0.9 / 400 * 2)
    assert video_pixel_budget(2000, 28)[1] == int(128 * 28 * 28 * 1.05)  # never below 1.05 x the minimum
    assert video_pixel_budget(64, 28, max_pixels=50_000) == (128 * 28 * 28, 50_000)
    assert smart_resize(1080, 1920, 28, *video_pixel_budget(64, 28)) == (560, 1008)  # 1080p: 20 x 36 tokens
    with pytest.raises(ValueError):
        smart_resize(1, 400, 28, 0, 1e9)
