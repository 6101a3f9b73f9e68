"""``accelerate launch`` with 2 CPU ranks of ``lovr run`` and ``lovr merge``, fresh and after an upstream
change: the same tables as one process (ranks wait for rank 0's gather before reading the repo)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from _rerun_helpers import PROMPT_LLM, make_videos, merge_config, snapshot

from lovr_hf import schema
from lovr_hf.merge.stage import merge
from lovr_hf.pipeline import load_config, run_pipeline
from lovr_hf.repo import BenchmarkRepo

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def launch(*args: str) -> None:
    # the torchrun-based launcher with no visible GPU gives 2 real CPU ranks (gloo); see docs/distributed.md
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lovr_hf", "-q", *args]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def write_config(path: Path, videos: Path, repo: Path, min_clip: float) -> Path:
    path.write_text(yaml.safe_dump({
        "input_folder": str(videos), "repo": str(repo),
        "segment": {"clip_mode": "virtual", "min_clip_duration": min_clip},
        "caption": {"backend": "dummy", "batch_size": 3},
        "merge": {"llm": PROMPT_LLM, "num_workers": 2, "cluster_size": 3, "theme": True},
    }))  # eval under 2 ranks: tests/test_evaluation.py
    return path


def single_run(tmp: Path, videos: Path, name: str, min_clip: float) -> BenchmarkRepo:
    run_pipeline(load_config(write_config(tmp / f"{name}.yaml", videos, tmp / name, min_clip)))
    return BenchmarkRepo(tmp / name)


def two_ranks_committed(repo: BenchmarkRepo, stage: str) -> bool:
    pids = {b.name.split("-")[2] for b in repo.work_dir(stage).glob("*/batch-*")}
    return len(pids) >= 2


def test_accelerate_run_and_merge_with_two_ranks_equal_one_process(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "videos")
    repo = BenchmarkRepo(tmp_path / "dist")
    cfg = write_config(tmp_path / "dist.yaml", videos, repo.root, 5.0)
    launch("run", "--config", str(cfg))
    assert snapshot(repo) == snapshot(single_run(tmp_path, videos, "single", 5.0))
    assert all(two_ranks_committed(repo, s) for s in ("segment", "caption", "merge-clusters"))
    # upstream change: one video gone, a shorter minimum clip length; the launched rerun follows it
    (videos / "lin_b.mp4").unlink()
    launch("run", "--config", str(write_config(cfg, videos, repo.root, 3.0)))
    want = snapshot(single_run(tmp_path, videos, "single3", 3.0))
    got = snapshot(repo)
    assert got == want and not any(r["video_id"] == "lin_b" for rows in got.values() for r in rows if "video_id" in r)
    # merge alone, after captions changed by hand: only what changed is merged again, on two ranks
    caps = repo.read(schema.CLIP_CAPTIONS).to_list()
    caps[2]["caption"] += "\nA red kite crosses the sky."
    for r in (repo, BenchmarkRepo(tmp_path / "single3")):
        r.write(schema.CLIP_CAPTIONS, caps)
    shutil.rmtree(tmp_path / "single3" / ".lovr" / "work" / "merge-clusters")  # the reference computes afresh
    launch("merge", "--repo", str(repo.root), "--llm", PROMPT_LLM, "--num-workers", "2", "--cluster-size", "3",
           "--theme")
    ref = BenchmarkRepo(tmp_path / "single3")
    merge(ref, merge_config(theme=True))
    for cfg_name in (schema.CLUSTERS, schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS):
        assert repo.read(cfg_name).to_list() == ref.read(cfg_name).to_list(), cfg_name
    assert any("red kite" in c for c in repo.read(schema.VIDEO_CAPTIONS)["caption"])
