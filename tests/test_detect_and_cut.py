"""One-pass detect-and-cut (the default path for exact clips) gives the clips of detect-then-cut."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from lovr_hf import schema
from lovr_hf.backends.base import DETECTORS
from lovr_hf.backends.detectors.fast import FastContentDetector
from lovr_hf.demo.samples import make_bad_inputs, make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.detect_and_cut import detect_and_cut, supports
from lovr_hf.segment.stage import SegmentConfig, segment
from lovr_hf.video.clipper import cut_clips
from lovr_hf.video.scenes import MERGE, SUPPRESS, OnlineFlashFilter, flash_filter, scenes_from_cuts

FPS = 12
MIN_S = 2.0  # 24 frames


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory):
    """A flash 10 frames after a cut (inside the minimum: merged away, never a cut, but a candidate), a
    flash long after a cut (a cut, as ContentDetector), a pan, a static shot, a short last scene, audio."""
    scenes = [SceneSpec(30), SceneSpec(40, flashes=(10,)), SceneSpec(60, flashes=(40,)), SceneSpec(30, kind="pan"),
              SceneSpec(30, kind="static"), SceneSpec(9)]
    path = tmp_path_factory.mktemp("dac") / "hard.mp4"
    return make_video(path, scenes, 160, 96, FPS, seed=13, audio=True, audio_layout="stereo")


def test_online_flash_filter_is_flash_filter() -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        n, length = int(rng.integers(2, 250)), int(rng.integers(0, 30))
        above = rng.random(n) < rng.uniform(0.02, 0.5)
        for mode in (MERGE, SUPPRESS):
            f = OnlineFlashFilter(length, mode)
            seen: list[tuple[int, int]] = []  # (horizon after frame i, i)
            emitted_at: list[tuple[int, int]] = []
            for i, a in enumerate(above):
                for c in f.push(bool(a)):
                    emitted_at.append((i, c))
                seen.append((f.horizon, i))
            assert f.cuts == flash_filter(above, length, mode)
            # the horizon promise: a cut known later is never before an earlier horizon
            for i, c in emitted_at:
                assert all(c >= hz for hz, j in seen if j < i), (mode, length, i, c)


def _frames(path: str) -> np.ndarray:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)])


def _keyframes(path: str) -> list[int]:
    with av.open(path) as c:
        return [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]


def _samples(path: str) -> int:
    with av.open(path) as c:
        return sum(f.samples for f in c.decode(audio=0))


def test_one_pass_equals_detect_then_cut(hard, tmp_path: Path) -> None:
    det = FastContentDetector(min_scene_len_s=MIN_S)
    res, fused = detect_and_cut(hard.path, tmp_path / "one", "v", det, min_clip_s=MIN_S, preset="veryfast", crf=22)
    ref = det.analyze(hard.path)
    assert res.cuts == ref.cuts and np.array_equal(res.scores, ref.scores) and res.num_frames == ref.num_frames
    flash_inside, flash_after = hard.flash_frames[0], hard.flash_frames[2]
    assert flash_inside not in ref.cuts and flash_after in ref.cuts  # ContentDetector semantics, both ways
    ranges = scenes_from_cuts(ref.cuts, hard.num_frames, FPS, MIN_S)
    assert ranges[-1] == (hard.num_frames - 9, hard.num_frames)  # the short last scene is its own clip
    two = cut_clips(hard.path, ranges, tmp_path / "two", "v")
    assert [(c.start_frame, c.end_frame, c.num_frames, c.clip_id) for c in fused] == [
        (c.start_frame, c.end_frame, c.num_frames, c.clip_id) for c in two]
    assert [(c.start_time, c.end_time) for c in fused] == [(c.start_time, c.end_time) for c in two]
    for a, b in zip(fused, two, strict=True):
        fa, fb = _frames(a.path), _frames(b.path)
        assert fa.shape == fb.shape and np.abs(fa - fb).mean() < 1.5, a.clip_id  # the same frames
        assert _samples(a.path) == _samples(b.path), a.clip_id  # the same audio window
        assert _keyframes(a.path)[0] == 0  # every clip file starts with a key frame
    # the merged-away flash was a candidate: it got a forced key frame, inside its clip (harmless)
    assert ref.scores[flash_inside] >= det.threshold
    clip = next(c for c in fused if c.start_frame < flash_inside < c.end_frame)
    assert flash_inside - clip.start_frame in _keyframes(clip.path)


def test_supported_settings_only() -> None:
    det = FastContentDetector()
    ok = dict(clip_mode="exact", adaptive=False, merge_short_tail=False, rotation=0)
    assert supports(det, **ok)
    assert not supports(FastContentDetector(flash_guard=True), **ok)
    assert not supports(FastContentDetector(filter_mode="suppress"), **ok)
    assert not supports(DETECTORS.create("pyscenedetect"), **ok)
    assert not supports(DETECTORS.create("adaptive-fast"), **ok)
    for k, v in (("clip_mode", "copy"), ("clip_mode", "virtual"), ("adaptive", True), ("merge_short_tail", True),
                 ("rotation", 90)):
        assert not supports(det, **{**ok, k: v})
    assert not supports(det, **ok, codec="libx265")


def test_stage_paths_agree_and_bad_inputs_fail_cleanly(hard, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    bad = make_bad_inputs(inp, include_partial=True)
    (inp / "hard.mp4").symlink_to(hard.path)
    rows = {}
    for single in (True, False):
        repo = BenchmarkRepo(tmp_path / f"lovr_{single}")
        segment(inp, repo, SegmentConfig(min_clip_duration=MIN_S, single_pass=single))
        vids = {r["source_name"]: r for r in repo.read(schema.VIDEOS)}
        assert all(vids[n]["status"] == schema.ERROR and vids[n]["error"] for n in bad), vids
        assert vids["hard.mp4"]["status"] == schema.OK
        clips = repo.read(schema.CLIPS).to_list()
        assert {r["video_id"] for r in clips} == {"hard"}
        rows[single] = [(r["clip_id"], r["start_frame"], r["end_frame"], r["path"]) for r in clips]
        assert sorted(p.name for p in (repo.root / "clips").iterdir()) == ["hard"]  # no file of a bad input
    assert rows[True] == rows[False]
