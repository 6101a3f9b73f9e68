"""The vLLM captioner up to the vLLM boundary: vLLM itself (GPU-only) is not installable here, so a
recording stand-in for the ``vllm`` module checks exactly what the backend hands it (engine args, the
chat-templated prompt of the real processor, one video per request, sampling), through the caption stage."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lovr_hf import schema
from lovr_hf.backends import captioner_vllm
from lovr_hf.caption import CaptionConfig, caption
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.samples import SceneSpec, make_video
from lovr_hf.tiny import build_tiny_qwen25vl


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
    make_video(src, [SceneSpec(96), SceneSpec(40)], 64, 48, 8, seed=3)
    rows = []
    for k, (s, n) in enumerate([(0, 96), (96, 40)], start=1):
        rows.append({"video_id": "v", "clip_id": schema.clip_id_for("v", k), "slice_num": k, "start_time": s / 8,
                     "end_time": (s + n) / 8, "start_frame": s, "end_frame": s + n, "num_frames": n, "fps": 8.0,
                     "path": str(src), "frame_offset": s, "clip_mode": "virtual", "status": "ok", "error": None})
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, rows)
    return repo


def test_caption_stage_through_vllm_backend(clips_repo: BenchmarkRepo, tmp_path_factory, monkeypatch) -> None:
    model = build_tiny_qwen25vl(tmp_path_factory.getbasetemp() / "tiny_models" / "qwen2_5_vl")
    record: dict = {}
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm(record))
    monkeypatch.setattr(captioner_vllm, "_ENGINES", {})
    caption(clips_repo, CaptionConfig(backend="vllm", model_path=model, tensor_parallel_size=2, batch_size=2))
    rows = clips_repo.read(schema.CLIP_CAPTIONS)
    assert rows["caption"] == ["clip with 12 frames", "clip with 8 frames"]  # 12 s -> 12; 5 s -> at least 8
    assert set(rows["status"]) == {schema.OK}
    assert record["engine"]["model"] == model and record["engine"]["tensor_parallel_size"] == 2
    assert record["engine"]["trust_remote_code"] is False
    reqs = record["requests"]
    assert len(reqs) == 2 and all(isinstance(r["multi_modal_data"]["video"], np.ndarray) for r in reqs)
    assert reqs[0]["multi_modal_data"]["video"].shape[1:] == (48, 64, 3)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in reqs[0]["prompt"]
    assert "video analysis assistant" in reqs[0]["prompt"]  # the original system prompt, chat-templated
    assert record["sampling"].kwargs == {"max_tokens": 1024, "repetition_penalty": 1.05, "temperature": 0.9,
                                         "top_p": 0.001, "top_k": -1}
