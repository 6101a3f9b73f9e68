"""Index-only round trip: `lovr push --no-media` stages an index; `lovr materialize` rebuilds the clips from the
user's own copies (checked by size + SHA-256), reports missing and altered videos, and eval scores what is there."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.hub.materialize import MaterializeConfig, materialize
from lovr_hf.hub.publish import stage
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video.reader import probe, read_clip_frames

INDEX_COLUMNS = ("clip_id", "video_id", "slice_num", "start_frame", "end_frame", "num_frames", "fps")


@pytest.fixture(scope="module")
def index_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchmarkRepo, Path, Path]:
    """(the original repo, its videos, the published index-only repo as a user downloads it)."""
    root = tmp_path_factory.mktemp("materialize")
    vids = root / "videos"
    (vids / "sub").mkdir(parents=True)
    make_video(vids / "a.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=1)
    make_video(vids / "sub" / "b.mp4", [SceneSpec(72)], 64, 48, 12, seed=2)
    make_video(vids / "c.mp4", [SceneSpec(60), SceneSpec(60)], 64, 48, 12, seed=3)
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump({"input_folder": str(vids), "repo": str(root / "lovr"),
                                   "caption": {"backend": "dummy"}, "merge": {"llm": "dummy"}}))
    assert cli_main(["-q", "run", "--config", str(cfg)]) == 0
    repo = BenchmarkRepo(root / "lovr")
    pub = stage(repo, no_media=True)
    downloaded = root / "downloaded" / "lovr"
    shutil.copytree(pub.root, downloaded)
    return repo, vids, downloaded


def _copy_index(index_repo, tmp_path: Path) -> BenchmarkRepo:
    dst = tmp_path / "lovr"
    shutil.copytree(index_repo[2], dst)
    return BenchmarkRepo(dst)


def test_materialize_rebuilds_the_indexed_clips_and_reports_missing_and_altered(index_repo, tmp_path: Path) -> None:
    original, vids, _ = index_repo
    repo = _copy_index(index_repo, tmp_path)
    assert not list(repo.root.rglob("*.mp4"))  # index only: no video bytes came with it
    mine = tmp_path / "my copies"
    (mine / "sub").mkdir(parents=True)
    shutil.copy(vids / "a.mp4", mine / "a.mp4")  # same bytes
    make_video(mine / "sub" / "b.mp4", [SceneSpec(72)], 64, 48, 12, seed=99)  # same name, other content
    report = materialize(repo, mine)  # c.mp4 is missing
    assert report.available == ["a.mp4"] and report.altered == ["sub/b.mp4"] and report.missing == ["c.mp4"]
    clips = {c["clip_id"]: c for c in repo.read(schema.CLIPS)}
    ref = {c["clip_id"]: c for c in original.read(schema.CLIPS)}
    assert set(clips) == set(ref)
    for cid, c in clips.items():
        assert tuple(c[k] for k in INDEX_COLUMNS) == tuple(ref[cid][k] for k in INDEX_COLUMNS)
        if c["video_id"] == "a":
            assert c["status"] == schema.OK and probe(str(repo.resolve(c["path"]))).num_frames == c["num_frames"]
            got = read_clip_frames(c, [0, c["num_frames"] - 1], root=str(repo.root))
            want = read_clip_frames(ref[cid], [0, c["num_frames"] - 1], root=str(original.root))
            assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).mean() < 2.0
        else:
            assert c["status"] == schema.ERROR and c["path"] is None
            assert ("altered" if c["video_id"].startswith("sub") else "missing") in c["error"]
    # eval scores what is available: the missing videos' clips are error rows, not silent misses
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "dummy", "--backend", "dummy",
                     "--interval", "10"]) == 0
    emb = {(r["kind"], r["item_id"]): r["status"] for r in repo.read("embeddings-dummy")}
    for cid, c in clips.items():  # only the available clips have an embedding
        assert (emb.get(("clip", cid)) == schema.OK) == (c["video_id"] == "a"), cid
    # the user finds c.mp4: a rerun picks it up and does not recut a
    a_files = {p: p.stat().st_mtime_ns for p in (repo.root / "clips" / "a").glob("*.mp4")}
    shutil.copy(vids / "c.mp4", mine / "c.mp4")
    report = materialize(repo, mine)
    assert report.available == ["a.mp4", "c.mp4"] and report.altered == ["sub/b.mp4"] and not report.missing
    assert {p: p.stat().st_mtime_ns for p in (repo.root / "clips" / "a").glob("*.mp4")} == a_files


def test_materialize_virtual_reads_exact_source_frames(index_repo, tmp_path: Path) -> None:
    original, vids, _ = index_repo
    repo = _copy_index(index_repo, tmp_path)
    report = materialize(repo, vids, MaterializeConfig(clip_mode="virtual"))
    assert len(report.available) == 3
    for c in repo.read(schema.CLIPS):
        assert c["clip_mode"] == "virtual" and c["frame_offset"] == c["start_frame"]
        src = next(v for v in repo.read(schema.VIDEOS) if v["video_id"] == c["video_id"])
        got = read_clip_frames(c, [0, c["num_frames"] - 1])
        whole = read_clip_frames({**c, "frame_offset": 0, "num_frames": src["num_frames"]},
                                 [c["start_frame"], c["end_frame"] - 1])
        np.testing.assert_array_equal(got, whole)


def test_materialize_refuses_names_that_escape_the_input_folder(index_repo, tmp_path: Path) -> None:
    repo = _copy_index(index_repo, tmp_path)
    videos = repo.read(schema.VIDEOS).to_list()
    videos[0]["source_name"] = "../../etc/passwd"
    repo.write(schema.VIDEOS, videos)
    report = materialize(repo, index_repo[1])
    assert report.missing and any("escapes" in (v["error"] or "") for v in repo.read(schema.VIDEOS))


def test_materialize_cli(index_repo, tmp_path: Path) -> None:
    repo = _copy_index(index_repo, tmp_path)
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert cli_main(["-q", "materialize", "--repo", str(repo.root), "--input_folder", str(empty), "--strict"]) == 1
    assert cli_main(["-q", "materialize", "--repo", str(repo.root), "--input_folder", str(index_repo[1])]) == 0
    assert all(c["status"] == schema.OK for c in repo.read(schema.CLIPS))
