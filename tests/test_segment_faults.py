"""A clip that cannot be written (full disk, permission) is the machine's fault: a ``failed`` row with the real
message, retried by ``--retry-failed``, not an ``error`` row that blames the video."""

from __future__ import annotations

import errno
from pathlib import Path

import av
import pytest

from lovr_hf import schema
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.failures import is_bug_text
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment import detect_and_cut
from lovr_hf.segment.stage import SegmentConfig, segment
from lovr_hf.video import exact_cut


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fault_videos")
    make_video(d / "a.mp4", [SceneSpec(30)], 128, 72, 12, seed=1)
    return d


def _rows(repo: BenchmarkRepo) -> tuple[list[dict], int]:
    clips = repo.read(schema.CLIPS).num_rows if repo.has(schema.CLIPS) else 0
    return repo.read(schema.VIDEOS).to_list(), clips


def test_full_disk_in_the_one_pass_muxer_is_a_failed_row(videos: Path, tmp_path: Path, monkeypatch) -> None:
    def no_space(self, pkt) -> None:  # what FFmpeg's write returns on a full disk, as PyAV raises it
        av.error.err_check(-errno.ENOSPC)

    monkeypatch.setattr(exact_cut._ClipMuxer, "mux", no_space)
    repo = BenchmarkRepo(tmp_path / "lovr")
    cfg = SegmentConfig(min_clip_duration=1.0)
    segment(videos, repo, cfg)
    (v,), clips = _rows(repo)
    assert v["status"] == schema.FAILED and clips == 0
    assert "No space left on device" in v["error"]
    monkeypatch.undo()  # the disk has room again: --retry-failed cuts the video
    segment(videos, repo, cfg, RunControl(retry_failed=True))
    (v,), clips = _rows(repo)
    assert v["status"] == schema.OK and clips == 1


def test_permission_denied_when_committing_a_clip_is_a_failed_row(videos: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    def denied(tmp: Path, final: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(final))

    monkeypatch.setattr(exact_cut, "_commit", denied)
    monkeypatch.setattr(detect_and_cut, "_commit", denied)
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(videos, repo, SegmentConfig(min_clip_duration=1.0, single_pass=False))
    (v,), _ = _rows(repo)
    assert v["status"] == schema.FAILED
    assert v["error"].startswith("PermissionError: [Errno 13] Permission denied") and "a-Scene-001.mp4" in v["error"]


def test_a_corrupt_video_stays_an_error_row(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(d, repo, SegmentConfig())
    (v,), _ = _rows(repo)
    assert v["status"] == schema.ERROR


def test_a_bug_is_a_failed_internal_error_not_a_bad_video(videos: Path, tmp_path: Path, monkeypatch) -> None:
    """The --max_workers bug (an AttributeError in every worker) was recorded as if every video were bad."""
    def broken(*args, **kwargs):
        raise AttributeError("'SegmentStage' object has no attribute '_work'")

    monkeypatch.setattr(detect_and_cut, "detect_and_cut", broken)
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(videos, repo, SegmentConfig(min_clip_duration=1.0))
    (v,), _ = _rows(repo)
    assert v["status"] == schema.FAILED
    # the one failure rule (lovr_hf.failures): bug-marked, so the command's exit code says a bug happened
    assert v["error"].startswith("bug: AttributeError: 'SegmentStage' object has no attribute '_work'")
    assert is_bug_text(v["error"])
