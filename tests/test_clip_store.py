"""Clip files follow the tables: per-setting staging, publishing at gather, clean-up, folder limits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, SegmentStage, segment
from lovr_hf.video import clip_store
from lovr_hf.video.clip_store import file_digest

W, H, FPS = 96, 64, 12
MIN_S = 2.0  # 24 frames


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("store_in")
    make_video(d / "a.mp4", [SceneSpec(30), SceneSpec(30), SceneSpec(12)], W, H, FPS, seed=1, preset="ultrafast")
    make_video(d / "b.mp4", [SceneSpec(36), SceneSpec(30)], W, H, FPS, seed=2, preset="ultrafast")
    return d


def config(**kw) -> SegmentConfig:
    return SegmentConfig(min_clip_duration=MIN_S, **kw)


def published(repo: BenchmarkRepo) -> dict[str, str]:
    """Every clip file under the repo's clip folder -> its SHA-256."""
    root = repo.root / "clips"
    return {p.relative_to(repo.root).as_posix(): file_digest(p)[1] for p in sorted(root.rglob("*")) if p.is_file()}


def assert_consistent(repo: BenchmarkRepo) -> None:
    """The tables and the files agree: every row's file exists with its recorded digest, no other file."""
    rows = repo.read(schema.CLIPS).to_list()
    files = published(repo)
    assert {r["path"]: r["file_sha256"] for r in rows} == files
    assert all(r["status"] == schema.OK for r in rows)


def crfs(repo: BenchmarkRepo) -> set[str]:
    """The CRF x264 recorded in each video's first clip file."""
    out = set()
    for r in repo.read(schema.CLIPS):
        if r["slice_num"] == 1:
            data = repo.resolve(r["path"]).read_bytes()
            sei = data[data.find(b"x264 - core") :].split(b"\0")[0].decode()
            out.add(sei.split(" crf=")[1].split()[0])
    return out


def work_dirs(repo: BenchmarkRepo) -> set[str]:
    d = repo.work_dir("segment")
    return {p.name for p in d.iterdir() if p.is_dir()} if d.exists() else set()


def test_settings_never_overwrite_each_others_files(inputs: Path, tmp_path: Path, monkeypatch) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(inputs, repo, config())
    assert_consistent(repo)
    files_a, fp_a = published(repo), work_dirs(repo)
    assert len(files_a) == 5 and len(fp_a) == 1 and crfs(repo) == {"22.0"}
    ranges_a = [(r["clip_id"], r["start_frame"], r["end_frame"]) for r in repo.read(schema.CLIPS)]

    # a second setting (other CRF: same names, other bytes) killed after its first video
    real = SegmentStage.segment_one
    calls = []

    def dying(self, row):
        if calls:
            raise KeyboardInterrupt("simulated kill")
        calls.append(row["video_id"])
        return real(self, row)

    monkeypatch.setattr(SegmentStage, "segment_one", dying)
    with pytest.raises(KeyboardInterrupt):
        segment(inputs, repo, config(crf=40))
    monkeypatch.setattr(SegmentStage, "segment_one", real)
    assert published(repo) == files_a  # the current tables' files are untouched...
    assert_consistent(repo)
    assert fp_a < work_dirs(repo)  # ...and the first setting is still reusable

    # the second setting completes: its files are published, the first setting is superseded
    res = segment(inputs, repo, config(crf=40))
    assert res.skipped_done == 1 and res.processed == 1
    assert_consistent(repo)
    files_b = published(repo)
    assert set(files_b) == set(files_a) and all(files_b[p] != files_a[p] for p in files_a)
    assert crfs(repo) == {"40.0"}
    assert work_dirs(repo).isdisjoint(fp_a)
    assert not any(repo.work_dir("segment").rglob("staging"))

    # back to the first setting: it is recomputed (its files were replaced), never reused with B's files
    res = segment(inputs, repo, config())
    assert res.processed == 2 and res.skipped_done == 0
    assert_consistent(repo)
    assert crfs(repo) == {"22.0"}
    assert [(r["clip_id"], r["start_frame"], r["end_frame"]) for r in repo.read(schema.CLIPS)] == ranges_a


def test_fewer_clips_and_virtual_clips_remove_unreferenced_files(inputs: Path, tmp_path: Path, caplog) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(inputs, repo, config())
    assert "clips/a/a-Scene-003.mp4" in published(repo)  # the 1 s last scene of a: its own clip
    with caplog.at_level(logging.INFO, logger="lovr_hf.video.clip_store"):
        segment(inputs, repo, config(merge_short_tail=True))
    assert_consistent(repo)
    assert "clips/a/a-Scene-003.mp4" not in published(repo) and len(published(repo)) == 4
    assert "1 removed" in caplog.text
    segment(inputs, repo, config(clip_mode="virtual"))
    assert published(repo) == {} and not (repo.root / "clips" / "a").exists()
    assert {r["clip_mode"] for r in repo.read(schema.CLIPS)} == {"virtual"}
    assert all(Path(r["path"]).name in {"a.mp4", "b.mp4"} for r in repo.read(schema.CLIPS))  # sources kept
    assert (inputs / "a.mp4").exists() and (inputs / "b.mp4").exists()


def test_files_of_a_removed_video_are_deleted(inputs: Path, tmp_path: Path) -> None:
    """What the gather does once the engine drops the rows of a video no longer in the input."""
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(inputs, repo, config())
    prev = repo.read(schema.CLIPS).to_list()
    cur = [r for r in prev if r["video_id"] != "b"]
    (repo.root / "clips" / "a" / ".a-Scene-009.123.tmp.mp4").write_bytes(b"left by a kill")
    (repo.root / "clips" / "a" / "notes.txt").write_text("not ours")
    report = clip_store.PublishReport()
    clip_store.remove_unreferenced(prev, cur, repo.resolve, report)
    assert (report.removed, report.removed_of_gone_videos) == (3, 2)  # b's 2 clips and the temp file
    assert not (repo.root / "clips" / "b").exists()
    assert sorted(p.name for p in (repo.root / "clips" / "a").iterdir()) == [
        "a-Scene-001.mp4", "a-Scene-002.mp4", "a-Scene-003.mp4", "notes.txt"]


def test_a_missing_or_changed_file_is_recut_by_the_next_run(inputs: Path, tmp_path: Path, caplog) -> None:
    """A clip file deleted or overwritten since its video was segmented: the engine's verify_unit hook finds
    it, and the next run re-cuts exactly those videos (no error row, nothing else redone)."""
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(inputs, repo, config())
    (repo.root / "clips" / "b" / "b-Scene-002.mp4").unlink()
    (repo.root / "clips" / "a" / "a-Scene-001.mp4").write_bytes(b"someone else's file")
    with caplog.at_level(logging.WARNING):
        res = segment(inputs, repo, config())
    assert res.processed == 2 and "failed verification" in caplog.text
    assert all(r["status"] == schema.OK for r in repo.read(schema.CLIPS))
    assert_consistent(repo)
    assert segment(inputs, repo, config()).processed == 0


def test_a_kill_while_publishing_is_repaired_by_the_next_run(inputs: Path, tmp_path: Path, monkeypatch) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(inputs, repo, config())
    real = clip_store.publish
    moved = []

    def dying(rows, work, resolve, report):
        rows = list(rows)
        real(rows[:2], work, resolve, report)  # two files renamed, then the kill
        moved.append(2)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(clip_store, "publish", dying)
    with pytest.raises(KeyboardInterrupt):
        segment(inputs, repo, config(crf=40))
    monkeypatch.setattr(clip_store, "publish", real)
    assert moved
    segment(inputs, repo, config(crf=40))
    assert_consistent(repo)


def test_no_folder_holds_more_than_the_limit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(clip_store, "MAX_FOLDER_ENTRIES", 2)
    monkeypatch.setattr(clip_store, "BUCKETS", 2)  # ids v1, v2 hash to bucket 00, v5 to 01
    inp = tmp_path / "in"
    make_video(inp / "v1.mp4", [SceneSpec(30), SceneSpec(30), SceneSpec(30)], W, H, FPS, seed=3, preset="ultrafast")
    for k in (2, 5):
        make_video(inp / f"v{k}.mp4", [SceneSpec(30)], W, H, FPS, seed=3 + k, preset="ultrafast")
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(inp, repo, config())  # 3 videos > 2: bucketed; v1 has 3 clips > 2: parts
    assert_consistent(repo)
    rows = {r["clip_id"]: r["path"] for r in repo.read(schema.CLIPS)}
    b = clip_store.bucket_of("v1")
    assert rows["v1-Scene-001"] == f"clips/{b}/v1/part-000/v1-Scene-001.mp4"
    assert rows["v1-Scene-003"] == f"clips/{b}/v1/part-001/v1-Scene-003.mp4"
    assert (b, clip_store.bucket_of("v2"), clip_store.bucket_of("v5")) == ("00", "00", "01")
    assert rows["v2-Scene-001"] == "clips/00/v2/v2-Scene-001.mp4"
    for folder, dirs, files in os.walk(repo.root / "clips"):
        assert len(dirs) + len(files) <= 2, folder
    assert clip_store.resolve_layout("auto", 2) == "flat" and clip_store.resolve_layout("auto", 3) == "bucketed"
    assert clip_store.resolve_layout("flat", 10**6) == "flat"
    with pytest.raises(ValueError):
        clip_store.resolve_layout("deep", 1)
    monkeypatch.setattr(clip_store, "MAX_FOLDER_ENTRIES", 10_000)
    monkeypatch.setattr(clip_store, "BUCKETS", 256)
    assert len(clip_store.bucket_of("v1")) == 2
    assert clip_store.clip_file(tmp_path, "v1", 3, 3, "flat") == tmp_path / "v1" / "v1-Scene-003.mp4"
    with pytest.raises(ValueError):
        clip_store.clip_file(tmp_path, "../x", 1, 1, "flat")
