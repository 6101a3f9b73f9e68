"""Clip rows over a generated video and a recording captioner, shared by the caption stage tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lovr_hf import schema
from lovr_hf.backends.base import CAPTIONERS, GenerationParams
from lovr_hf.backends.standins.testing import DummyCaptioner
from lovr_hf.repo import BenchmarkRepo

FPS = 12


def clip_row(src: Path, vid: str, k: int, start: int, n: int, path: str | None = None, fps: int = FPS) -> dict:
    """A ``clips`` row: frames [start, start + n) of ``src`` as a virtual clip."""
    return {"video_id": vid, "clip_id": schema.clip_id_for(vid, k), "slice_num": k,
            "start_time": start / fps, "end_time": (start + n) / fps, "start_frame": start, "end_frame": start + n,
            "num_frames": n, "fps": float(fps), "path": path or str(src), "frame_offset": start,
            "clip_mode": "virtual", "status": "ok", "error": None}


def write_clips(root: Path, rows: list[dict]) -> BenchmarkRepo:
    repo = BenchmarkRepo(root)
    repo.write(schema.CLIPS, rows)
    return repo


def by_id(repo: BenchmarkRepo) -> dict[str, dict]:
    return {r["clip_id"]: r for r in repo.read(schema.CLIP_CAPTIONS)}


@CAPTIONERS.register("recording")
class RecordingCaptioner(DummyCaptioner):
    """The dummy captioner (a caption computed from the pixels) that records what each clip was given and
    whose caption also depends on the prompt and the sampling, as a real model's would."""

    calls: ClassVar[list[dict[str, Any]]] = []  # one entry per clip captioned, in order

    def caption(self, batch, prompt, params: GenerationParams) -> list[str]:
        texts = super().caption(batch, prompt, params)
        fps = params.extra.get("video_fps")
        out = []
        for i, (frames, text) in enumerate(zip(batch, texts)):
            entry = {"n_frames": len(frames), "first_pixels": np.asarray(frames)[:, 0, 0].tolist(),
                     "user": prompt["user"], "temperature": params.temperature, "top_p": params.top_p,
                     "do_sample": params.do_sample, "seed": params.seed,
                     "fps": fps[i] if isinstance(fps, list) else fps}
            type(self).calls.append(entry)
            tag = f" (prompt {len(prompt['user'])} chars, t={params.temperature:g}, seed={params.seed})"
            out.append(text + tag)
        return out
