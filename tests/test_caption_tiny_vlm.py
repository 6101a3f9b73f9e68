"""Caption stage with a real (tiny, random) Qwen2.5-VL, single process and under accelerate launch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.tiny import build_tiny_qwen25vl
from lovr_hf.video.frames import caption_num_frames

FPS = 8


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> str:
    return build_tiny_qwen25vl(tmp_path_factory.getbasetemp() / "tiny_models" / "qwen2_5_vl")


@pytest.fixture(scope="module")
def clips_repo(tmp_path_factory) -> BenchmarkRepo:
    d = tmp_path_factory.mktemp("vlm")
    src = d / "v.mp4"
    make_video(src, [SceneSpec(80), SceneSpec(64), SceneSpec(72), SceneSpec(48)], 64, 48, FPS, seed=7)
    rows, start = [], 0
    for k, n in enumerate((80, 64, 72, 48), start=1):
        rows.append({"video_id": "v", "clip_id": schema.clip_id_for("v", k), "slice_num": k,
                     "start_time": start / FPS, "end_time": (start + n) / FPS, "start_frame": start,
                     "end_frame": start + n, "num_frames": n, "fps": float(FPS), "path": str(src),
                     "frame_offset": start, "clip_mode": "virtual", "status": "ok", "error": None})
        start += n
    repo = BenchmarkRepo(d / "lovr")
    repo.write(schema.CLIPS, rows)
    return repo


def config(model: str) -> CaptionConfig:
    return CaptionConfig(backend="transformers", model_path=model, do_sample=False, max_new_tokens=12,
                         batch_size=2, dtype="float32", device="cpu")


def test_tiny_qwen_captions_every_clip(tiny_vlm: str, clips_repo: BenchmarkRepo) -> None:
    res = caption(clips_repo, config(tiny_vlm))
    rows = clips_repo.read(schema.CLIP_CAPTIONS)
    assert rows.num_rows == 4 and set(rows["status"]) == {schema.OK}
    assert all(r["caption"].strip() for r in rows)
    # the original rule through frames.py (qwen_vl_utils: an even count of min(64, max(8, seconds)) frames)
    assert rows["num_frames_used"] == [caption_num_frames(n, n / FPS) for n in (80, 64, 72, 48)] == [10, 8, 8, 8]
    assert rows[0]["model"] == tiny_vlm
    assert res.stats["tokens_out"] > 0 and res.stats["generate_s"] > 0


@pytest.mark.slow
def test_accelerate_two_processes_equal_one(tiny_vlm: str, clips_repo: BenchmarkRepo, tmp_path: Path) -> None:
    single = clips_repo.read(schema.CLIP_CAPTIONS).to_list() if clips_repo.has(schema.CLIP_CAPTIONS) else None
    if single is None:
        caption(clips_repo, config(tiny_vlm))
        single = clips_repo.read(schema.CLIP_CAPTIONS).to_list()
    repo = BenchmarkRepo(tmp_path / "dist")
    repo.write(schema.CLIPS, clips_repo.read(schema.CLIPS))
    # `accelerate launch --cpu` starts ONE process without an MPI hostfile (accelerate 1.x simple_launcher);
    # the multi-process launcher with no visible GPU gives 2 real CPU ranks (gloo)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "lovr_hf", "-q", "caption", "--repo", str(repo.root), "--backend", "transformers",
           "--model-path", tiny_vlm, "--greedy", "--max-new-tokens", "12", "--batch-size", "2",
           "--dtype", "float32", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = repo.read(schema.CLIP_CAPTIONS).to_list()
    assert got == single
    batches = list(repo.work_dir("caption").glob("*/batch-*"))
    assert len({b.name.split("-")[2] for b in batches}) == 2  # committed by two different processes
