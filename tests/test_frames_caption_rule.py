"""The caption frame rule (lovr_hf.video.frames) against the original code path: ``caption_generator.py`` asks
qwen_vl_utils for ``{"nframes": fnum}``; ``smart_nframes`` rounds that to an even count and the video
readers take ``torch.linspace(0, total - 1, n).round()``. Pinned twice: against a restatement of those
lines, and against qwen_vl_utils itself (a dev dependency) reading real clip files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.video.frames import caption_frame_plan, caption_num_frames, round_to_factor, uniform_indices

HAS_QWEN_VL_UTILS = importlib.util.find_spec("qwen_vl_utils") is not None and importlib.util.find_spec("decord")
FPS_CASES = (6.0, 12.0, 23.976, 24.0, 25.0, 29.97, 30.0, 59.94, 60.0)


def original_frames(frame_count: int, fps: float) -> list[int] | None:
    """Restatement of the original code path: None = the clip is skipped; ValueError = qwen_vl_utils
    rejects the count (the original then loses the clip)."""
    if frame_count == 1 or frame_count < 5:
        return None
    duration = int(frame_count / fps) if fps > 0 else 0
    fnum = min(64, max(8, duration))
    if frame_count < 8:
        fnum = 2
    nframes = round(fnum / 2) * 2  # smart_nframes: round_by_factor(ele["nframes"], FRAME_FACTOR)
    if not 2 <= nframes <= frame_count:
        raise ValueError(f"nframes should in interval [2, {frame_count}], but got {nframes}.")
    return torch.linspace(0, frame_count - 1, nframes).round().long().tolist()


def test_counts_and_indices_equal_the_original_code_path() -> None:
    for fps in FPS_CASES:
        for n in [*range(1, 400), *range(400, 4000, 37), 100_000]:
            want = original_frames(n, fps)
            plan = caption_frame_plan(n, n / fps)
            if want is None:
                assert plan.skipped and plan.indices == (), (n, fps)
            else:
                assert list(plan.indices) == want, (n, fps)
                assert caption_num_frames(n, n / fps) == len(want)


def test_rounding_to_even_as_qwen_vl_utils() -> None:
    # half to even (Python's round): 9 -> 8, 11 -> 12, 13 -> 12, 15 -> 16; even counts are kept
    assert [round_to_factor(k) for k in range(8, 18)] == [8, 8, 10, 12, 12, 12, 14, 16, 16, 16]
    fps = 25.0
    assert caption_num_frames(25 * 9, 9.0) == 8
    assert caption_num_frames(25 * 11, 11.0) == 12
    assert caption_num_frames(25 * 63, 63.0) == 64 and caption_num_frames(25 * 300, 300.0) == 64
    assert caption_num_frames(6, 6 / fps) == 2 and caption_num_frames(4, 4 / fps) == 0
    # frame_factor=1 gives the count as the original asked for it (and lovr_hf computed before)
    assert caption_num_frames(25 * 11, 11.0, frame_factor=1) == 11
    # rounded, not truncated, indices: 11 s at 25 fps -> 12 frames over 275
    assert caption_frame_plan(275, 11.0).indices == tuple(np.round(np.linspace(0, 274, 12)).astype(int))
    assert caption_frame_plan(275, 11.0).indices != tuple(uniform_indices(275, 12))


def test_clips_slower_than_one_fps_keep_going() -> None:
    """Where qwen_vl_utils raises (more frames asked than the clip has) the original lost the clip;
    here the clip gets every frame it has, rounded down to the factor."""
    with pytest.raises(ValueError):
        original_frames(11, 0.5)  # 22 s -> asks for 22 frames of 11
    assert caption_num_frames(11, 22.0) == 10
    assert caption_frame_plan(10, 20.0).indices == tuple(range(10))


def test_uniform_indices_rounding_modes() -> None:
    assert uniform_indices(300, 4) == [0, 99, 199, 299]  # truncation: lovr_hf's uniform eval sampling
    assert uniform_indices(300, 4, rounding="round") == [0, 100, 199, 299]
    assert uniform_indices(5, 9, rounding="round") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        uniform_indices(10, 3, rounding="floor")


@pytest.mark.skipif(not HAS_QWEN_VL_UTILS, reason="qwen-vl-utils (dev extra) and decord are the oracle")
def test_qwen_vl_utils_itself(tmp_path: Path) -> None:
    from qwen_vl_utils.vision_process import _read_video_decord, smart_nframes

    for fps in FPS_CASES:
        for n in range(8, 2000, 7):
            fnum = min(64, max(8, int(n / fps)))
            assert smart_nframes({"nframes": fnum}, total_frames=n, video_fps=fps) == caption_num_frames(n, n / fps)
    # real clip files, read by qwen_vl_utils' decord reader as the original's process_vision_info did
    for frames, fps in ((7, 12), (131, 12), (143, 12), (250, 24)):
        path = tmp_path / f"clip_{frames}.mp4"
        make_video(path, [SceneSpec(frames)], 64, 48, fps, seed=frames, preset="ultrafast")
        fnum = 2 if frames < 8 else min(64, max(8, int(frames / fps)))
        video, meta, _ = _read_video_decord({"video": str(path), "nframes": fnum})
        plan = caption_frame_plan(frames, frames / fps)
        assert list(meta["frames_indices"]) == list(plan.indices), (frames, fps)
        assert video.shape[0] == len(plan.indices)
