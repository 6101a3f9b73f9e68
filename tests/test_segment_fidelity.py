"""Default segmentation == the original ``clip_segmentation.py``, with PySceneDetect itself as the oracle.

The oracle runs PySceneDetect as the original script runs it: an OpenCV-decoded video (the original's
``VideoManager`` decoded with OpenCV too), a ``SceneManager`` left at its automatic downscale (the
original's ``set_downscale_factor(3)`` is a no-op), ``ContentDetector(threshold=34.0,
min_scene_len=int(5.0 * fps))`` and ``get_scene_list()``; its clip files come from PySceneDetect's own
``split_video_ffmpeg`` (ffmpeg from ``imageio-ffmpeg``, a dev dependency).
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lovr_hf import schema
from lovr_hf.backends.detectors.content_score import content_scores
from lovr_hf.backends.detectors.detector_base import auto_downscale_factor
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import FIDELITY_SOURCES, make_fidelity_sources, make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, segment
from lovr_hf.video.clip_store import file_digest
from lovr_hf.video.scenes import scenes_from_cuts

HAS_FFMPEG = importlib.util.find_spec("imageio_ffmpeg") is not None


def original_scene_list(path: str, min_clip_duration: float = 5.0) -> list[tuple[int, int]]:
    """PySceneDetect as the original script runs it (restated with the 0.7 API)."""
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(path)  # OpenCV backend
    manager = SceneManager()  # auto_downscale stays on
    manager.add_detector(ContentDetector(threshold=34.0, min_scene_len=int(min_clip_duration * video.frame_rate)))
    manager.detect_scenes(video)
    return [(a.frame_num, b.frame_num) for a, b in manager.get_scene_list()]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("fidelity_src")
    return d, make_fidelity_sources(d)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory: pytest.TempPathFactory) -> BenchmarkRepo:
    d, _ = sources
    repo = BenchmarkRepo(tmp_path_factory.mktemp("fidelity_repo") / "lovr")
    assert cli_main(["-q", "segment", "--input_folder", str(d), "--repo", str(repo.root)]) == 0
    return repo


def _ranges(repo: BenchmarkRepo) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for r in repo.read(schema.CLIPS):
        out.setdefault(r[schema.VIDEO_ID], []).append((r["start_frame"], r["end_frame"]))
    return out


def test_default_scene_lists_equal_pyscenedetect_as_the_original_runs_it(sources, built) -> None:
    d, truths = sources
    videos = {r["source_name"]: r for r in built.read(schema.VIDEOS)}
    ranges = _ranges(built)
    for name, gt in truths.items():
        oracle = original_scene_list(gt.path)
        ours = ranges[videos[name][schema.VIDEO_ID]]
        if name == "no_cut.mp4":
            # the original gets no scene and writes no clip: the video silently drops out. lovr_hf keeps it.
            assert oracle == [] and ours == [(0, gt.num_frames)]
        else:
            assert ours == oracle == gt.scene_ranges(), name
    # the short last scene (1.5 s < 5 s) is a clip of its own, as in PySceneDetect's list
    assert ranges[videos["short_tail_audio.mp4"][schema.VIDEO_ID]][-1] == (111, 120)
    # the factor the original really scored with: PySceneDetect's automatic downscale, not 3
    assert videos["hd1080.mp4"]["downscale"] == 7.5 == auto_downscale_factor(1920, 1080)
    assert videos["short_tail_audio.mp4"]["downscale"] == 1.25


def test_automatic_downscale_is_pyscenedetects(sources) -> None:
    """Same factor formula as PySceneDetect, and at 1080p (factor 7.5: frames resized to 256x144) the same
    per-frame scores within resampling noise."""
    from scenedetect import ContentDetector, SceneManager, StatsManager, open_video
    from scenedetect.scene_manager import compute_downscale_factor

    for w, h in [(1920, 1080), (1280, 720), (640, 360), (854, 480), (1080, 1920), (320, 180), (200, 120)]:
        assert auto_downscale_factor(w, h) == compute_downscale_factor(max(w, h)), (w, h)
    _, truths = sources
    gt = truths["hd1080.mp4"]
    video = open_video(gt.path)
    manager = SceneManager(StatsManager())
    manager.add_detector(ContentDetector(threshold=34.0, min_scene_len=20))
    manager.detect_scenes(video)
    ref = np.array([manager.stats_manager.get_metrics(i, ["content_val"])[0] for i in range(1, gt.num_frames)])
    fs = content_scores(gt.path)
    assert fs.downscale == 7.5
    ours = fs.scores[1:]
    assert np.abs(ref - ours).mean() < 0.5 and np.abs(ref - ours).max() < 2.0
    cut_idx = np.array(gt.cut_frames) - 1
    assert ours[cut_idx].min() > 34 > np.delete(ours, cut_idx).max()


def test_minimum_length_is_truncated_like_the_original(tmp_path: Path) -> None:
    """At 29.97 fps a 1 s minimum is int(29.97) = 29 frames (rounding would give 30): 29-frame scenes are
    cut exactly where PySceneDetect cuts them with the original's int(min_clip_duration * fps)."""
    gt = make_video(tmp_path / "v" / "ntsc.mp4", [SceneSpec(29), SceneSpec(29), SceneSpec(40)], 160, 90,
                    Fraction(30000, 1001), seed=9, preset="ultrafast")
    oracle = original_scene_list(gt.path, min_clip_duration=1.0)
    assert oracle == [(0, 29), (29, 58), (58, 98)]
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(tmp_path / "v", repo, SegmentConfig(min_clip_duration=1.0, clip_mode="virtual"))
    assert list(_ranges(repo).values()) == [oracle]


def test_clip_files_carry_audio_and_the_originals_encoder_settings(sources, built) -> None:
    _, truths = sources
    clips = {r[schema.CLIP_ID]: r for r in built.read(schema.CLIPS)}
    for cid, r in clips.items():
        p = built.resolve(r["path"])
        assert (p.stat().st_size, file_digest(p)[1]) == (r["file_size"], r["file_sha256"])
        with av.open(str(p)) as c:
            has_audio = bool(c.streams.audio)
            first = bytes(next(c.demux(video=0)))
        assert has_audio == cid.startswith("short_tail_audio"), cid
        if r[schema.SLICE_NUM] == 1:  # x264 writes its settings into the first IDR frame of a stream
            sei = first[first.find(b"x264 - core") :].split(b"\0")[0].decode()
            assert " crf=22.0 " in sei and " subme=2 " in sei  # -crf 22, -preset veryfast
    gt = truths["short_tail_audio.mp4"]
    for n, (s, e) in enumerate(gt.scene_ranges(), start=1):
        r = clips[f"short_tail_audio-Scene-{n:03d}"]
        with av.open(str(built.resolve(r["path"]))) as c:
            a = c.streams.audio[0]
            assert (a.codec_context.name, a.rate, a.codec_context.layout.name) == ("aac", 16000, "stereo")
            pcm = np.concatenate([f.to_ndarray() for f in c.decode(a)], axis=1)
        # the clip's audio is the source's audio of the clip's time range: its scene's tone, sample-exact
        # length (AAC frames of 1024 round it up)
        want = round((e - s) / gt.fps * gt.audio_rate)
        assert want <= pcm.shape[1] < want + 2048
        spec = np.abs(np.fft.rfft(pcm[0, 1024:want] * np.hanning(want - 1024)))
        assert abs(np.fft.rfftfreq(want - 1024, 1 / gt.audio_rate)[spec.argmax()] - gt.audio_freqs[n - 1]) < 3
    videos = {r["source_name"]: r for r in built.read(schema.VIDEOS)}
    for name, gt in truths.items():  # the source's identity, for index-only publishing
        assert (videos[name]["size_bytes"], videos[name]["sha256"]) == file_digest(gt.path)


@pytest.mark.skipif(not HAS_FFMPEG, reason="imageio-ffmpeg (dev extra) provides the ffmpeg binary")
def test_clip_files_match_split_video_ffmpeg(sources, built, tmp_path: Path) -> None:
    """Against the files the original gets: PySceneDetect's split_video_ffmpeg on the oracle scene list."""
    from scenedetect import FrameTimecode, split_video_ffmpeg

    _, truths = sources
    gt = truths["short_tail_audio.mp4"]
    scenes = [(FrameTimecode(s, gt.fps), FrameTimecode(e, gt.fps)) for s, e in original_scene_list(gt.path)]
    assert split_video_ffmpeg(gt.path, scenes, output_dir=tmp_path) == 0
    ours = {Path(r["path"]).name: built.resolve(r["path"]) for r in built.read(schema.CLIPS)
            if r[schema.VIDEO_ID] == "short_tail_audio"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ours)  # same names, same count
    for name, mine in ours.items():
        got = {}
        for label, path in (("ours", mine), ("ffmpeg", tmp_path / name)):
            with av.open(str(path)) as c:
                streams = [(s.type, s.codec_context.name) for s in c.streams]
                a = c.streams.audio[0]
                arate, alayout = a.rate, a.codec_context.layout.name
                frames = np.stack([f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)])
            with av.open(str(path)) as c:
                pcm = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
            got[label] = (streams, arate, alayout, frames, pcm)
        (s1, r1, l1, f1, a1), (s2, r2, l2, f2, a2) = got["ours"], got["ffmpeg"]
        assert (s1, r1, l1) == (s2, r2, l2) == ([("video", "h264"), ("audio", "aac")], 16000, "stereo")
        assert f1.shape == f2.shape, name  # the same frames...
        assert np.abs(f1 - f2).mean() < 2.0, name  # ...encoded the same way (both x264 veryfast CRF 22)
        assert a1.shape == a2.shape and np.abs(a1 - a2).mean() < 0.01, name  # the same samples, AAC both


def test_lovr_hf_options_restore_its_own_behaviour(sources, tmp_path: Path) -> None:
    """--merge-short-tail, --downscale N, --no-audio, --crf: each changes exactly what it says."""
    d, truths = sources
    repo = BenchmarkRepo(tmp_path / "lovr")
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "short_tail_audio.mp4").symlink_to(truths["short_tail_audio.mp4"].path)
    rc = cli_main(["-q", "segment", "--input_folder", str(inp), "--repo", str(repo.root), "--merge-short-tail",
                   "--downscale", "3", "--no-audio", "--crf", "30"])
    assert rc == 0
    rows = repo.read(schema.CLIPS).to_list()
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 36), (36, 78), (78, 120)]
    assert repo.read(schema.VIDEOS)[0]["downscale"] == 3.0
    with av.open(str(repo.resolve(rows[0]["path"]))) as c:
        assert not c.streams.audio
        first = bytes(next(c.demux(video=0)))
    assert b" crf=30.0 " in first
    gt = truths["short_tail_audio.mp4"]
    assert scenes_from_cuts(gt.cut_frames, gt.num_frames, gt.fps, merge_short_tail=True)[-1] == (78, 120)
    assert set(FIDELITY_SOURCES) == set(truths)
