"""``lovr segment --max_workers 2`` (the original's command as its README writes it) on real-world containers.

The bug: with two worker processes every video failed (``'SegmentStage' object has no attribute '_work'``:
the engine's pickling drops "_" attributes) and was recorded as an ``error`` row with exit 0. Two workers
must give what one worker gives: the same rows and clip files with the same frames and audio.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from _media_corpus import frame_number, session_corpus
from datasets import load_dataset

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main

# matroska (1/1000 time base, 5.1 AC-3 starting late), AVI (MPEG-4 part 2, MP3 mono 44.1 kHz), mp4 (NTSC, AAC),
# WebM (VP9 60 fps, Opus ending early), QuickTime (23.976 fps, PCM)
FILES = ("mkv_ac3_51_25.mkv", "avi_mp3_mono_25.avi", "mp4_aac_stereo_2997.mp4", "webm_opus_stereo_60.webm",
         "mov_pcm_stereo_23976.mov")
VOLATILE = {"file_size", "file_sha256"}  # x264 with another thread count writes other bytes for the same frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    corpus = session_corpus(tmp_path_factory)
    d = tmp_path_factory.mktemp("workers_input")
    for name in FILES:
        shutil.copy(corpus[name], d / name)
    return d


def _run(videos: Path, out: Path, workers: int) -> tuple[list[dict], list[dict]]:
    repo = out / "lovr"
    rc = cli_main(["segment", "--input_folder", str(videos), "--output_dir", str(out / "clips"), "--repo", str(repo),
                   "--max_workers", str(workers)])
    assert rc == 0
    vids = sorted(load_dataset(str(repo), "videos", split="train").to_list(), key=lambda r: r["video_id"])
    bad = [(v["video_id"], v["status"], v["error"]) for v in vids if v["status"] != schema.OK]
    assert not bad, f"--max_workers {workers}: {bad}"
    clips = sorted(load_dataset(str(repo), "clips", split="train").to_list(), key=lambda r: r["clip_id"])
    for r in clips:  # clips outside the repo are stored by absolute path: compare them inside --output_dir
        r["path"] = Path(r["path"]).relative_to(out / "clips").as_posix()
        r["video"] = Path(r["video"]["path"]).relative_to(out / "clips").as_posix()  # the same file
        assert r["video"] == r["path"]
    return vids, clips


def _decoded(path: Path) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = [f.to_ndarray() for f in c.decode(audio=0)] if c.streams.audio else []
    return [frame_number(a) for a in frames], frames, audio


def test_max_workers_2_equals_max_workers_1(videos: Path, tmp_path: Path) -> None:
    one_v, one_c = _run(videos, tmp_path / "one", 1)
    two_v, two_c = _run(videos, tmp_path / "two", 2)
    assert len(one_v) == len(two_v) == len(FILES)
    assert len(two_c) == 3 * len(FILES)  # two hard cuts per file, scenes over 5 s: three clips each
    assert [{k: v for k, v in r.items() if k != "path"} for r in two_v] == [
        {k: v for k, v in r.items() if k != "path"} for r in one_v]
    assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in two_c] == [
        {k: v for k, v in r.items() if k not in VOLATILE} for r in one_c]
    with_audio = 0
    for a, b in zip(one_c, two_c, strict=True):
        fa, fb = tmp_path / "one" / "clips" / a["path"], tmp_path / "two" / "clips" / b["path"]
        assert fb.is_file() and fb.stat().st_size == b["file_size"]
        ca, pa, aa = _decoded(fa)
        cb, pb, ab = _decoded(fb)
        assert ca == cb == list(range(a["start_frame"], a["end_frame"]))
        assert max(np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(pa, pb, strict=True)) < 3
        n = sum(x.shape[-1] for x in aa)
        assert n == sum(x.shape[-1] for x in ab)  # the same audio samples (none after a source's audio ended)
        if n:
            np.testing.assert_allclose(np.concatenate(aa, axis=-1), np.concatenate(ab, axis=-1), atol=1e-3)
            with_audio += 1
    assert with_audio >= len(two_c) - 1  # every clip but the WebM's last (its source's audio ends at 9.5 s)
