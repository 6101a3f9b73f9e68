"""Shared by the rerun tests: two generated videos, the stages with deterministic backends, and the invariants
"every table is a pure function of the current inputs and settings" checked on a repo."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lovr_hf import schema
from lovr_hf.backends.standins.chat_llms import PromptLLM
from lovr_hf.backends.standins.testing import DummyCaptioner
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption, clip_duration
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.evaluation.run import evaluate_model
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.merge.config import MergeConfig
from lovr_hf.merge.stage import merge
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, segment
from lovr_hf.video.frames import caption_frame_plan

FPS = 12
#: lin_a's scenes are 3.3-6 s: min clip 5 s and 3 s give different clips; lin_b's (5-5.5 s) are the same
SCENES = {"lin_a": [40, 48, 36, 72, 40, 44, 60], "lin_b": [60, 66, 60]}
PROMPT_LLM = "lovr_hf.backends.standins.chat_llms:PromptLLM"


def make_videos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, scenes) in enumerate(SCENES.items()):
        make_video(folder / f"{name}.mp4", [SceneSpec(n) for n in scenes], 64, 48, FPS, seed=20 + seed)
    return folder


class FlakyCaptioner(DummyCaptioner):
    """The dummy captioner, failing (raising) on every third clip by content while ``failing`` is set (or
    ``LOVR_TEST_FLAKY=1`` in a subprocess): a runtime switch, so a ``--retry-failed`` run has the same
    fingerprint as the run that failed."""

    failing = False

    def caption(self, batch, prompt, params):  # type: ignore[no-untyped-def]
        on = FlakyCaptioner.failing or os.environ.get("LOVR_TEST_FLAKY") == "1"
        if on and any(int(np.asarray(f).sum()) % 3 == 0 for f in batch):
            raise RuntimeError("HTTP 503: backend overloaded (simulated)")
        return super().caption(batch, prompt, params)


FLAKY = "_rerun_helpers:FlakyCaptioner"


class ThemeDownLLM(PromptLLM):
    """The prompt-answering merge LLM whose theme calls fail with an HTTP error while ``down`` is set."""

    down = False

    def chat(self, messages, params):  # type: ignore[no-untyped-def]
        if ThemeDownLLM.down and "overall theme of the video" in messages[-1]["content"]:
            raise RuntimeError("HTTP 502: Bad Gateway (simulated)")
        return super().chat(messages, params)


THEME_DOWN = "_rerun_helpers:ThemeDownLLM"


def merge_config(**kw: Any) -> MergeConfig:
    return MergeConfig(**{"llm": PROMPT_LLM, "num_workers": 2, "cluster_size": 3, **kw})


def caption_config(**kw: Any) -> CaptionConfig:
    return CaptionConfig(**{"backend": "dummy", "batch_size": 3, **kw})


EVAL = EvalConfig(model="dummy", backend="dummy", interval=6, batch_size=8, clip_queries="all")


def run_all(repo: BenchmarkRepo, videos: Path, *, min_clip: float = 5.0, clip_mode: str = "virtual",
            cap: CaptionConfig | None = None, mer: MergeConfig | None = None, control: RunControl | None = None,
            evaluate: bool = False) -> dict[str, Any]:
    """segment -> caption -> merge (-> eval); returns each stage's result."""
    control = control or RunControl()
    out: dict[str, Any] = {}
    out["segment"] = segment(videos, repo, SegmentConfig(min_clip_duration=min_clip, clip_mode=clip_mode), control)
    out["caption"] = caption(repo, cap or caption_config(), control)
    out["merge"] = merge(repo, mer or merge_config(), control)
    if evaluate:
        out["eval"] = evaluate_model(repo, EVAL, control)
    return out


def snapshot(repo: BenchmarkRepo) -> dict[str, list[dict]]:
    out = {}
    for cfg in repo.configs():
        rows = repo.read(cfg).to_list()
        pk = schema.primary_key(cfg)
        keys = [tuple(r[k] for k in pk) for r in rows]
        assert len(keys) == len(set(keys)), f"duplicate keys in {cfg}"
        for r in rows:  # a local clips.video is the clip's own path: no table depends on where the repo lies
            if (r.get("video") or {}).get("path"):
                assert r["video"]["path"] == r["path"], r[schema.CLIP_ID]
        out[cfg] = rows
    return out


def assert_invariants(repo: BenchmarkRepo, videos: Path) -> None:
    """Every table follows the current inputs: the facts the issue asks the tests to assert."""
    present = {p.stem for p in videos.iterdir() if p.suffix == ".mp4"}
    tables = {c: repo.read(c).to_list() for c in repo.configs() if c != schema.RESULTS}
    for cfg, rows in tables.items():  # no table holds a row of a removed input
        assert {r[schema.VIDEO_ID] for r in rows} <= present, cfg
    clips = {r[schema.CLIP_ID]: r for r in tables[schema.CLIPS] if r[schema.STATUS] == schema.OK}
    caps = tables.get(schema.CLIP_CAPTIONS, [])
    assert {r[schema.CLIP_ID] for r in caps} == set(clips)  # every caption belongs to a current clip, and back
    for r in caps:  # ... and was made for its current frame range
        clip = clips[r[schema.CLIP_ID]]
        if r[schema.STATUS] == schema.OK:
            plan = caption_frame_plan(clip["num_frames"], clip_duration(clip))
            assert r["num_frames_used"] == len(plan.indices), r[schema.CLIP_ID]
            assert f"shows {r['num_frames_used']} frames" in r[schema.CAPTION]
    by_video: dict[str, list[str]] = {}
    for c in sorted(clips.values(), key=lambda c: (c[schema.VIDEO_ID], c[schema.SLICE_NUM])):
        by_video.setdefault(c[schema.VIDEO_ID], []).append(c[schema.CLIP_ID])
    for v in tables.get(schema.VIDEO_CAPTIONS, []):  # every video caption lists exactly its current clips
        assert v["clip_ids"] == by_video[v[schema.VIDEO_ID]], v[schema.VIDEO_ID]
    cl = tables.get(schema.CLUSTERS, [])
    assert sum(r["clip_count"] for r in cl) == len(clips) if cl else True
    assert_clip_files(repo)


def assert_clip_files(repo: BenchmarkRepo) -> None:
    """Every clip file a row points to holds exactly that clip's frames (never another setting's file)."""
    from lovr_hf.video.reader import probe

    for r in repo.read(schema.CLIPS):
        if r["clip_mode"] in ("exact", "copy"):
            n = probe(str(repo.resolve(r["path"]))).num_frames
            assert n == r["frame_offset"] + r["num_frames"], (r["clip_id"], n, r["frame_offset"], r["num_frames"])


def fresh_equal(repo: BenchmarkRepo, fresh: BenchmarkRepo) -> None:
    got, want = snapshot(repo), snapshot(fresh)
    assert set(got) == set(want)
    for cfg in want:
        assert got[cfg] == want[cfg], (cfg, diff_rows(cfg, got[cfg], want[cfg]))


def diff_rows(cfg: str, got: list[dict], want: list[dict]) -> list[str]:
    """The rows that differ, by primary key and column (a readable assertion message)."""
    pk = schema.primary_key(cfg)
    g = {tuple(r[k] for k in pk): r for r in got}
    w = {tuple(r[k] for k in pk): r for r in want}
    out = [f"only in got: {k}" for k in g.keys() - w.keys()] + [f"only in fresh: {k}" for k in w.keys() - g.keys()]
    for k in g.keys() & w.keys():
        cols = [c for c in w[k] if g[k][c] != w[k][c]]
        if cols:
            out.append(f"{k}: " + ", ".join(f"{c}={str(g[k][c])[:80]!r} vs {str(w[k][c])[:80]!r}" for c in cols))
    return out[:10]


def settings_of(row: dict) -> dict:
    return json.loads(row["settings"])


def with_(cfg: Any, **kw: Any) -> Any:
    return dataclasses.replace(cfg, **kw)
