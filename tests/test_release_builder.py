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
from lovr_hf.evaluation.release_marker import MARKER, read_release_marker, released_query_ids
from lovr_hf.hub.release import import_release
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


# ---- every line checked, duplicates dropped, an import that fails leaves the repo as it was (issue #22) -------


def _repo_state(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".lovr" not in p.parts}


def _append(path: Path, *lines: object) -> None:
    with open(path, "a") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


@pytest.mark.parametrize(("file", "line", "why"), [
    ("caption_data/all_video.jsonl", {"cap": "no id"}, r"all_video.jsonl:4: no 'vid' field"),
    ("caption_data/all_video.jsonl", {"vid": None, "cap": "x"}, r"all_video.jsonl:4: 'vid' is null"),
    ("caption_data/all_video.jsonl", {"vid": 17, "cap": "x"}, r"all_video.jsonl:4: 'vid' is int"),
    ("caption_data/all_video.jsonl", {"vid": "-_q3Q", "cap": ["a", "list"]}, r"all_video.jsonl:4: 'cap' is list"),
    ("caption_data/all_clip.jsonl", {"path": "x/-_q3Q-Scene-002.mp4", "cap": None}, r"all_clip.jsonl:7: 'cap' is null"),
    ("caption_data/all_clip.jsonl", {"path": None, "cap": "x"}, r"all_clip.jsonl:7: 'path' is null"),
    ("caption_data/clip_cap_theme.jsonl", {"vid": "-_q3Q", "cap": 3.5}, r"clip_cap_theme.jsonl:3: 'cap' is float"),
    ("caption_data/all_video.jsonl", "[1, 2]", r"all_video.jsonl:4: expected a JSON object"),
])
def test_a_bad_release_line_names_file_and_line_and_leaves_the_repo_as_it_was(
        release: Path, tmp_path: Path, file: str, line: object, why: str) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    before = _repo_state(repo.root)
    bad = tmp_path / "bad"
    shutil.copytree(release, bad, symlinks=True)
    _append(bad / file, line)
    with pytest.raises(ValueError, match=why) as exc:
        import_release(bad, repo.root)
    assert "\n" not in str(exc.value)
    assert _repo_state(repo.root) == before


def test_a_bad_split_parquet_is_one_error_and_nothing_is_imported(release: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(release, bad, symlinks=True)
    (bad / "clip_test.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match=r"clip_test.parquet: not a readable parquet file"):
        import_release(bad, tmp_path / "lovr")
    assert not (tmp_path / "lovr" / "README.md").exists() and not list((tmp_path / "lovr").glob("data/*"))
    out = subprocess.run([sys.executable, "-m", "lovr_hf", "import-release", str(bad), "--repo",
                          str(tmp_path / "lovr2"), "--no-clips"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "clip_test.parquet" in out.stderr


def test_repeated_video_theme_and_split_lines_are_dropped_and_counted(release: Path, tmp_path: Path) -> None:
    dup = tmp_path / "dup"
    shutil.copytree(release, dup, symlinks=True)
    _append(dup / "caption_data/all_video.jsonl", {"vid": "Ab_9-xYz", "cap": "a second caption"})
    _append(dup / "caption_data/clip_cap_theme.jsonl", {"vid": "-_q3Q-Scene-001", "cap": "again"})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["-_q3Q-Scene-001.mp4", "-_q3Q-Scene-001.mp4"]}), dup / "clip_test.parquet")
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(dup, repo.root)
    for cfg in (schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS, schema.SPLITS):
        keys = [tuple(r[k] for k in schema.primary_key(cfg)) for r in repo.read(cfg).to_list()]
        assert len(keys) == len(set(keys)), (cfg, keys)
    videos = {r["video_id"]: r["caption"] for r in repo.read(schema.VIDEO_CAPTIONS).to_list()}
    assert videos["Ab_9-xYz"] != "a second caption"  # the first line is kept
    assert read_release_marker(repo)["duplicate_lines_dropped"] == {
        "caption_data/all_video.jsonl": 1, "caption_data/clip_cap_theme.jsonl": 1, "splits": 1}
