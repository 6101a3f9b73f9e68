"""The synthetic video generator: its ground truth must hold on the decoded frames."""

from __future__ import annotations

import av
import numpy as np
import pytest

from lovr_hf.demo import samples
from lovr_hf.demo.samples import make_bad_inputs, make_sample_folder, make_sample_video, make_video
from lovr_hf.demo.scenes import SceneSpec

W, H, FPS = 192, 108, 24


def _decode(path: str) -> tuple[np.ndarray, list[float]]:
    """All frames as float32 [n, H*3/2, W] (yuv420p layout) and their presentation times."""
    frames, times = [], []
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="yuv420p").astype(np.float32))
            times.append(float(f.time))
    return np.stack(frames), times


@pytest.fixture(scope="module")
def hard_video(tmp_path_factory):
    """Every hard case in one short video: pan, static, flash, fade."""
    scenes = [
        SceneSpec(60),
        SceneSpec(60, kind="pan"),
        SceneSpec(50, kind="static"),
        SceneSpec(80, flashes=(40,), flash_len=2),
        SceneSpec(60, transition="fade", fade_frames=12),
        SceneSpec(50),
    ]
    path = tmp_path_factory.mktemp("samples") / "hard.mp4"
    gt = make_video(path, scenes, W, H, FPS, seed=11)
    frames, times = _decode(str(path))
    return gt, frames, times


def test_ground_truth_bookkeeping(hard_video):
    gt, frames, times = hard_video
    assert gt.num_frames == 360 == len(frames)
    assert gt.scene_starts == [0, 60, 120, 170, 250, 310]
    assert gt.cut_frames == [60, 120, 170, 250, 310]
    assert gt.hard_cut_frames == [60, 120, 170, 310]  # the fade's nominal cut is not a hard cut
    assert gt.fade_ranges == [(244, 256)]  # 12 frames centred on the scene start
    assert gt.flash_frames == [210, 211]
    assert gt.pan_ranges == [(60, 120)] and gt.static_ranges == [(120, 170)]
    assert gt.cut_times == pytest.approx([c / FPS for c in gt.cut_frames])
    # presentation times of the decoded frames are exactly frame / fps
    assert times == pytest.approx([i / FPS for i in range(gt.num_frames)], abs=1e-6)
    with av.open(gt.path) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.codec_context.pix_fmt, s.width, s.height) == ("h264", "yuv420p", W, H)
        assert float(s.average_rate) == FPS


def test_cuts_differ_strongly_and_scenes_do_not(hard_video):
    gt, frames, _ = hard_video
    diff = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))  # diff[i] = frame i+1 vs frame i
    special = set(gt.hard_cut_frames) | set(gt.flash_frames) | {gt.flash_frames[-1] + 1}
    special |= {f for a, b in gt.fade_ranges for f in range(a, b + 1)}
    special |= {f for a, b in gt.pan_ranges for f in range(a, b)}  # checked on its own below
    inside = [diff[i - 1] for i in range(1, gt.num_frames) if i not in special]
    across = [diff[c - 1] for c in gt.hard_cut_frames]
    assert min(across) > 4 * max(inside), (min(across), max(inside))
    # moving scenes really move; the static shot really does not
    a, b = gt.static_ranges[0]
    assert diff[a : b - 1].max() < 0.5
    kinds = dict(zip(gt.scene_starts, gt.scene_kinds, strict=True))
    moving = [diff[i] for s, e in gt.scene_ranges() for i in range(s, e - 1) if kinds[s] == "moving"]
    assert np.median(moving) > 0.8
    # the fast pan moves more than the ordinary scenes but stays below a cut
    p0, p1 = gt.pan_ranges[0]
    assert np.median(diff[p0 : p1 - 1]) > np.median(moving)
    assert diff[p0 : p1 - 1].max() < min(across) / 2


def test_flash_and_fade_frames(hard_video):
    gt, frames, _ = hard_video
    luma = frames[:, :H].mean(axis=(1, 2))
    f0, f1 = gt.flash_frames
    assert luma[f0] > 200 and luma[f1] > 200
    assert luma[f0 - 1] < 190 and luma[f1 + 1] < 190
    # frames before and after the flash belong to the same scene (small difference), unlike a cut
    assert np.abs(frames[f1 + 1] - frames[f0 - 1]).mean() < 0.5 * np.abs(frames[170] - frames[169]).mean()
    # a cross-dissolve: each step is small, the whole dissolve is a big change
    a, b = gt.fade_ranges[0]
    steps = np.abs(np.diff(frames[a - 1 : b + 1], axis=0)).mean(axis=(1, 2))
    whole = np.abs(frames[b] - frames[a - 1]).mean()
    assert steps.max() < whole / 3


def test_scenes_have_distinct_colours(hard_video):
    gt, frames, _ = hard_video
    chroma = [frames[s:e, H:].mean() for s, e in gt.scene_ranges()]
    luma_means = [frames[s:e, :H].mean() for s, e in gt.scene_ranges()]
    pairs = list(zip(zip(chroma, luma_means), zip(chroma[1:], luma_means[1:]), strict=False))
    assert all(abs(c0 - c1) + abs(y0 - y1) > 3 for (c0, y0), (c1, y1) in pairs)


def test_deterministic(tmp_path):
    a = make_sample_video(tmp_path / "a.mp4", 16, scene_len_s=6.5, width=128, height=72, seed=5, min_scene_s=4)
    b = make_sample_video(tmp_path / "b.mp4", 16, scene_len_s=6.5, width=128, height=72, seed=5, min_scene_s=4)
    c = make_sample_video(tmp_path / "c.mp4", 16, scene_len_s=6.5, width=128, height=72, seed=6, min_scene_s=4)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert a.cut_frames == b.cut_frames
    assert a.cut_frames != c.cut_frames or (tmp_path / "a.mp4").read_bytes() != (tmp_path / "c.mp4").read_bytes()


def test_sample_video_plan(tmp_path):
    gt = make_sample_video(tmp_path / "s.mkv", 30, num_cuts=4, width=128, height=72, fps=25, seed=1, min_scene_s=5)
    assert gt.num_frames == 750 and len(gt.cut_frames) == 4 and gt.fps == 25
    lengths = np.diff([*gt.scene_starts, gt.num_frames])
    assert lengths.min() >= 125
    assert gt.pan_ranges and gt.static_ranges and gt.flash_frames and gt.fade_ranges
    frames, _ = _decode(gt.path)
    assert len(frames) == gt.num_frames
    with pytest.raises(ValueError, match="do not fit"):
        make_sample_video(tmp_path / "x.mp4", 10, num_cuts=5, min_scene_s=6)


def test_sample_folder(tmp_path):
    out = make_sample_folder(tmp_path / "videos", durations_s=(12, 11), width=96, height=54, write_truth=True)
    assert sorted(out) == ["sample_01.mp4", "sample_02.mkv"]
    for name, gt in out.items():
        assert (tmp_path / "videos" / name).stat().st_size > 1000
        assert (tmp_path / "videos" / f"{name}.truth.json").exists()
        with av.open(gt.path) as c:
            assert sum(1 for _ in c.decode(video=0)) == gt.num_frames


def test_bad_inputs(tmp_path):
    bad = make_bad_inputs(tmp_path, include_partial=True)
    assert bad == {
        "empty.mp4": samples.EMPTY,
        "truncated.mp4": samples.TRUNCATED,
        "not_a_video.mp4": samples.NOT_VIDEO,
        "audio_only.mp4": samples.AUDIO_ONLY,
        "one_frame.mp4": samples.ONE_FRAME,
        "truncated_tail.mp4": samples.TRUNCATED_TAIL,
    }
    assert (tmp_path / "empty.mp4").stat().st_size == 0
    for name in ("empty.mp4", "truncated.mp4", "not_a_video.mp4"):
        with pytest.raises(av.FFmpegError):
            av.open(str(tmp_path / name))
    with av.open(str(tmp_path / "audio_only.mp4")) as c:
        assert not c.streams.video and c.streams.audio
    with av.open(str(tmp_path / "one_frame.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 1
    decoded = 0
    with av.open(str(tmp_path / "truncated_tail.mp4")) as c:
        stream = c.streams.video[0]
        declared = stream.frames
        for packet in c.demux(stream):
            try:
                decoded += len(stream.decode(packet))
            except av.FFmpegError:  # the cut-off packet
                continue
    assert 0 < decoded < declared == 144
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(bad)  # no temporary files left behind
