"""Segment stage end to end on generated videos with known cuts (real decoding, real clip files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_bad_inputs, make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.ids import check_id
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, SegmentStage, scan_videos, segment
from lovr_hf.video.reader import probe, read_clip_frames, read_frames

FPS = 12
W, H = 128, 72


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("videos")
    truths = {
        # 3 scenes of 6-8 s and a 2 s last scene: its own clip, as the original (PySceneDetect's scene list)
        "long one.mp4": make_video(d / "long one.mp4", [SceneSpec(84), SceneSpec(96), SceneSpec(72), SceneSpec(24)],
                                   W, H, FPS, seed=1),
        "static.mkv": make_video(d / "static.mkv", [SceneSpec(90, kind="static")], W, H, FPS, seed=2),
        "short.MP4": make_video(d / "short.MP4", [SceneSpec(24)], W, H, FPS, seed=3),  # 2 s: one clip
    }
    return d, truths


def test_scan_is_recursive_case_insensitive_and_safe(videos, tmp_path: Path) -> None:
    d, _ = videos
    files = scan_videos(d)
    assert sorted(files["source_name"]) == ["long one.mp4", "short.MP4", "static.mkv"]
    assert all(check_id(vid) == vid for vid in files["video_id"])  # kept verbatim when safe
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.webm").write_bytes(b"")
    (tmp_path / "dir.mp4").mkdir()
    os.symlink(tmp_path / "loop.mp4", tmp_path / "loop.mp4")
    rows = {r["source_name"]: r["scan_error"] for r in scan_videos(tmp_path)}
    assert rows == {"sub/x.webm": "empty file (0 bytes)", "dir.mp4": "is a directory, not a video file",
                    "loop.mp4": "symlink loop"}
    assert [r["source_name"] for r in scan_videos(tmp_path, recursive=False)] == ["dir.mp4", "loop.mp4"]


def test_segment_exact_clips_match_ground_truth(videos, tmp_path: Path) -> None:
    d, truths = videos
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(d, repo, SegmentConfig(min_clip_duration=5.0))
    vids = {r["source_name"]: r for r in load_dataset(str(repo.root), "videos", split="train")}
    clips = load_dataset(str(repo.root), "clips", split="train")
    assert all(v["status"] == schema.OK for v in vids.values())
    by_video: dict[str, list] = {}
    for c in clips:
        by_video.setdefault(c["video_id"], []).append(c)
    long_vid = vids["long one.mp4"]["video_id"]
    long_clips = by_video[long_vid]
    gt = truths["long one.mp4"]
    # cuts at the true scene starts; the 2 s last scene is a clip of its own
    assert [(c["start_frame"], c["end_frame"]) for c in long_clips] == [(0, 84), (84, 180), (180, 252), (252, 276)]
    assert [c["clip_id"] for c in long_clips] == [f"{long_vid}-Scene-{i:03d}" for i in (1, 2, 3, 4)]
    assert sum(c["num_frames"] for c in long_clips) == gt.num_frames == vids["long one.mp4"]["num_frames"]
    assert len(by_video[vids["static.mkv"]["video_id"]]) == 1
    assert len(by_video[vids["short.MP4"]["video_id"]]) == 1
    # every clip file decodes to exactly its frames, equal to the source frames of its range
    src = str(d / "long one.mp4")
    for c in long_clips:
        p = repo.resolve(c["path"])
        assert p.is_file() and repo.root in p.parents
        assert probe(str(p)).num_frames == c["num_frames"]
        idx = [0, c["num_frames"] // 2, c["num_frames"] - 1]
        got = read_clip_frames(c, idx, root=repo.root)
        want = read_frames(src, [c["start_frame"] + i for i in idx])
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6  # re-encode loss only
    assert abs(long_clips[1]["start_time"] - 84 / FPS) < 1e-6


def test_virtual_clips_decode_same_frames_as_exact(videos, tmp_path: Path) -> None:
    d, _ = videos
    exact, virtual = BenchmarkRepo(tmp_path / "e"), BenchmarkRepo(tmp_path / "v")
    segment(d, exact, SegmentConfig())
    segment(d, virtual, SegmentConfig(clip_mode="virtual"))
    e_rows, v_rows = exact.read(schema.CLIPS).to_list(), virtual.read(schema.CLIPS).to_list()
    assert [(r["clip_id"], r["start_frame"], r["end_frame"]) for r in e_rows] == [
        (r["clip_id"], r["start_frame"], r["end_frame"]) for r in v_rows
    ]
    assert not (virtual.root / "clips").exists()
    for e, v in zip(e_rows, v_rows):
        assert v["clip_mode"] == "virtual" and v["frame_offset"] == v["start_frame"]
        idx = [0, e["num_frames"] - 1]
        a = read_clip_frames(e, idx, root=exact.root).astype(int)
        b = read_clip_frames(v, idx, root=virtual.root).astype(int)
        assert np.abs(a - b).mean() < 6


def test_bad_inputs_become_error_rows_and_good_videos_complete(videos, tmp_path: Path) -> None:
    d, _ = videos
    inp = tmp_path / "in"
    inp.mkdir()
    expected = make_bad_inputs(inp)
    os.symlink(d / "static.mkv", inp / "good link.mkv")
    repo = BenchmarkRepo(tmp_path / "lovr")
    rc = cli_main(["-q", "segment", "--input_folder", str(inp), "--repo", str(repo.root), "--clip_mode", "virtual"])
    assert rc == 0
    vids = {r["source_name"]: r for r in repo.read(schema.VIDEOS)}
    assert set(vids) == set(expected) | {"good link.mkv"}
    for name in expected:
        assert vids[name]["status"] == schema.ERROR and vids[name]["error"], name
    assert vids["good link.mkv"]["status"] == schema.OK
    clips = repo.read(schema.CLIPS)
    assert set(clips["video_id"]) == {vids["good link.mkv"]["video_id"]}
    rc = cli_main(["-q", "segment", "--input_folder", str(inp), "--repo", str(repo.root), "--clip_mode", "virtual",
                   "--strict"])
    assert rc == 1


def test_resume_after_kill_and_num_proc(videos, tmp_path: Path, monkeypatch) -> None:
    d, _ = videos
    ref = BenchmarkRepo(tmp_path / "ref")
    segment(d, ref, SegmentConfig(clip_mode="virtual"))
    repo = BenchmarkRepo(tmp_path / "lovr")
    real = SegmentStage.segment_one
    seen = []

    def dying(self, row):
        if len(seen) == 1:
            raise KeyboardInterrupt("simulated kill")
        seen.append(row["video_id"])
        return real(self, row)

    monkeypatch.setattr(SegmentStage, "segment_one", dying)
    with pytest.raises(KeyboardInterrupt):
        segment(d, repo, SegmentConfig(clip_mode="virtual"))
    monkeypatch.setattr(SegmentStage, "segment_one", real)
    res = segment(d, repo, SegmentConfig(clip_mode="virtual"))
    assert res.skipped_done == 1 and res.processed == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "path"} for r in rows]  # noqa: E731
    assert strip(repo.read(schema.CLIPS).to_list()) == strip(ref.read(schema.CLIPS).to_list())
    par = BenchmarkRepo(tmp_path / "par")
    segment(d, par, SegmentConfig(clip_mode="virtual"), RunControl(num_proc=2))
    assert par.read(schema.CLIPS).to_list() == ref.read(schema.CLIPS).to_list()
    assert par.read(schema.VIDEOS).to_list() == ref.read(schema.VIDEOS).to_list()


def test_adaptive_threshold_loop_records_settled_threshold(videos, tmp_path: Path) -> None:
    d, _ = videos
    repo = BenchmarkRepo(tmp_path / "lovr")
    # at most 2 clips wanted: the 3-clip video makes the loop raise the threshold (x1.1 per try) until a cut
    # score falls below it; scores are computed once and re-thresholded
    segment(d, repo, SegmentConfig(clip_mode="virtual", adaptive=True, min_clips=1, max_clips=2,
                                   max_adaptive_iter=40))
    vids = {r["source_name"]: r for r in repo.read(schema.VIDEOS)}
    clips = repo.read(schema.CLIPS)
    long_vid = vids["long one.mp4"]
    settled = long_vid["threshold"]
    assert settled > 34.0 and round(settled / 34.0, 6) in {round(1.1**n, 6) for n in range(1, 41)}
    assert 1 <= clips["video_id"].count(long_vid["video_id"]) <= 2
    assert vids["static.mkv"]["threshold"] == 34.0  # already inside [1, 2]: no change
    plain = BenchmarkRepo(tmp_path / "plain")
    segment(d, plain, SegmentConfig(clip_mode="virtual"))
    assert {r["threshold"] for r in plain.read(schema.VIDEOS)} == {34.0}
