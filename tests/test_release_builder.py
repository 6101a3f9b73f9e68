"""The LoVR-release builder and `lovr import-release` on a miniature release in the original layout.

The miniature release (tests/_release_helpers.py) has YouTube-style ids with a leading '-', a query file
listing fewer clips than exist on disk, one clip file that does not decode, one listed clip without a file,
themes and splits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _release_helpers import BROKEN, MISSING, QUERIES, VIDEOS, build_release, clip_files, clip_id
from datasets import load_dataset

from builders.lovr_release import PER_CLIP, QUERY_LIST, LoVRRelease, parse_clip_id, scan_release
from lovr_hf import schema
from lovr_hf.release import MARKER, import_release, read_release_marker, released_query_ids
from lovr_hf.repo import BenchmarkRepo


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_release(tmp_path_factory.mktemp("rel") / "LoVR")


def test_builder_reads_release_programmatically(release: Path, tmp_path: Path) -> None:
    b = LoVRRelease(config_name="clip_captions", data_dir=str(release), cache_dir=str(tmp_path / "cache"))
    b.download_and_prepare()
    ds = b.as_dataset(split="train")
    assert ds.features == schema.CLIP_CAPTIONS_FEATURES
    assert ds["clip_id"] == QUERIES  # the released query list, in file order
    row = next(r for r in ds if r["clip_id"] == "-7wwfGJXEZg-Scene-002")
    assert row["video_id"] == "-7wwfGJXEZg" and row["slice_num"] == 2 and "clip -7wwfGJXEZg-Scene-002" in row["caption"]


def test_import_follows_the_original_data_model(release: Path, tmp_path: Path) -> None:
    repo_dir = tmp_path / "lovr"
    counts = import_release(release, repo_dir)
    on_disk = clip_files(release)
    assert len(on_disk) == 8
    assert counts == {"clip_captions": 6, "clips": 9, "video_captions": 3, "theme_captions": 2, "splits": 3}
    repo = BenchmarkRepo(repo_dir)
    clips = {r["clip_id"]: r for r in load_dataset(str(repo_dir), "clips", split="train")}
    # every clip FILE is a row (candidates), plus the listed clip that has no file
    assert set(clips) == set(on_disk) | {MISSING}
    ok = {c for c, r in clips.items() if r["status"] == schema.OK}
    assert ok == set(on_disk) - {BROKEN[1]}
    assert "unreadable" in clips[BROKEN[1]]["error"] and clips[BROKEN[1]]["status"] == schema.ERROR
    assert "no clip file" in clips[MISSING]["error"] and clips[MISSING]["path"] is None
    r = clips["-7wwfGJXEZg-Scene-002"]
    assert (r["num_frames"], r["fps"], r["slice_num"], r["video_id"]) == (38, 10.0, 2, "-7wwfGJXEZg")
    assert r["end_time"] == pytest.approx(3.8) and Path(r["path"]) == on_disk["-7wwfGJXEZg-Scene-002"]
    # clips on disk without a caption are candidates without a query
    caps = repo.read(schema.CLIP_CAPTIONS)
    assert sorted(caps["clip_id"]) == sorted(QUERIES)
    assert set(ok) - set(QUERIES) == {"-7wwfGJXEZg-Scene-003", "Ab_9-xYz-Scene-002", "-_q3Q-Scene-001"}
    vids = {r["video_id"]: r for r in repo.read(schema.VIDEO_CAPTIONS)}
    assert list(vids) == sorted(VIDEOS)
    assert vids["Ab_9-xYz"]["clip_ids"] == ["Ab_9-xYz-Scene-001", "Ab_9-xYz-Scene-002", BROKEN[1]]
    themes = repo.read(schema.THEME_CAPTIONS)
    assert sorted(themes["clip_id"]) == ["-7wwfGJXEZg-Scene-003", "-_q3Q-Scene-001"]
    splits = repo.read(schema.SPLITS)
    assert sorted(zip(splits["split"], splits["clip_id"]))[0] == ("test", "-_q3Q-Scene-001")
    # every id is the release's own, verbatim, in every table
    for config in (schema.CLIPS, schema.CLIP_CAPTIONS, schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS, schema.SPLITS):
        assert set(repo.read(config)["video_id"]) <= set(VIDEOS), config
    # the marker the scoring side reads: the released query list, as released
    marker = read_release_marker(repo)
    assert marker is not None and json.loads((repo_dir / MARKER).read_text()) == marker
    assert marker["generation"] == QUERY_LIST
    assert marker["query_set"]["ids"] == QUERIES and marker["query_set"]["count"] == 6
    assert released_query_ids(repo_dir) == QUERIES
    assert marker["clips"] == {"files": 8, "ok": 7, "error": 2, "listed_without_file": [MISSING],
                               "files_without_query": 3, "ignored_files": 1}
    assert marker["videos"]["count"] == 3 and marker["videos"]["unlisted_dirs"] == []


def test_both_release_generations_without_flags(release: Path, tmp_path: Path) -> None:
    """The first release had one caption line per clip (all of them queries): same import, no flag."""
    old = tmp_path / "old"
    shutil.copytree(release, old, symlinks=True)
    (old / "video_data/long_video_clip" / BROKEN[0] / f"{BROKEN[1]}.mp4").unlink()
    lines = [json.dumps({"path": f"x/{c}.mp4", "cap": f"caption {c}"}) for c in sorted(clip_files(old))]
    (old / "caption_data/all_clip.jsonl").write_text("\n".join(lines) + "\n")
    assert scan_release(old).generation == PER_CLIP
    import_release(old, tmp_path / "repo")
    marker = read_release_marker(tmp_path / "repo")
    assert marker["generation"] == PER_CLIP and marker["query_set"]["count"] == 7
    assert marker["clips"]["files_without_query"] == 0 and marker["clips"]["listed_without_file"] == []


def test_reimport_drops_what_the_release_no_longer_has(release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rel"
    shutil.copytree(release, copy, symlinks=True)
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(copy, repo.root)
    assert repo.has(schema.THEME_CAPTIONS) and repo.has(schema.SPLITS)
    (copy / "caption_data/clip_cap_theme.jsonl").unlink()
    (copy / "clip_train.parquet").unlink()
    (copy / "clip_test.parquet").unlink()
    extra = copy / "video_data/long_video_clip/-7wwfGJXEZg" / f"{clip_id('-7wwfGJXEZg', 4)}.mp4"
    shutil.copy(clip_files(copy)["-7wwfGJXEZg-Scene-001"], extra)
    import_release(copy, repo.root)
    assert not repo.has(schema.THEME_CAPTIONS) and not repo.has(schema.SPLITS)
    assert "-7wwfGJXEZg-Scene-004" in repo.read(schema.CLIPS)["clip_id"]  # a new clip file: a new candidate


def test_unlisted_video_folders_are_left_out_as_the_original_does(release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rel"
    shutil.copytree(release, copy, symlinks=True)
    lines = (copy / "caption_data/all_video.jsonl").read_text().splitlines()
    (copy / "caption_data/all_video.jsonl").write_text("\n".join(x for x in lines if "-_q3Q" not in x) + "\n")
    import_release(copy, tmp_path / "lovr")
    repo = BenchmarkRepo(tmp_path / "lovr")
    clips = {r["clip_id"]: r for r in repo.read(schema.CLIPS)}
    assert not any(c.startswith("-_q3Q") and clips[c]["status"] == schema.OK for c in clips)
    assert "not in caption_data/all_video.jsonl" in clips["-_q3Q-Scene-002"]["error"]  # a query of that video
    assert read_release_marker(repo)["videos"]["unlisted_dirs"] == ["-_q3Q"]


def test_import_refuses_a_built_benchmark_and_bad_ids(release: Path, tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "built")
    repo.write(schema.VIDEOS, [])
    with pytest.raises(ValueError, match="built by the pipeline"):
        import_release(release, repo.root)
    assert parse_clip_id("-7wwfGJXEZg-Scene-012") == ("-7wwfGJXEZg", 12)
    for bad, why in (("../x-Scene-001", "path separator"), ("noscene", "not of the form"),
                     ("a\x07-Scene-001", "control character"), ("..-Scene-001", "its parent")):
        with pytest.raises(ValueError, match=why):
            parse_clip_id(bad)
    evil = tmp_path / "evil"
    shutil.copytree(release, evil, symlinks=True)
    with open(evil / "caption_data/all_clip.jsonl", "a") as f:
        f.write(json.dumps({"path": "/data/x/..-Scene-001.mp4", "cap": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"all_clip.jsonl:7: .*its parent"):
        import_release(evil, tmp_path / "evil_repo")


def test_cli_import_release(release: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "lovr_hf", "import-release", str(release), "--repo",
                          str(tmp_path / "lovr"), "--no-clips"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    repo = BenchmarkRepo(tmp_path / "lovr")
    assert not repo.has(schema.CLIPS) and repo.has(schema.CLIP_CAPTIONS)
    assert read_release_marker(repo)["clips"]["ok"] is None
