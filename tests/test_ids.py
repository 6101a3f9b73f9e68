"""Ids: a file's own name is its id whenever that is safe as one path component (the LoVR release's
YouTube-style ids, leading '-' included); only what could escape a folder or collide is refused, with why."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.hub.export import export_original
from lovr_hf.ids import (
    MAX_ID_BYTES,
    casefold_collisions,
    check_id,
    check_video_id,
    id_problem,
    safe_id,
    safe_join,
    strict_slug,
)
from lovr_hf.merge.config import MergeConfig
from lovr_hf.pipeline import PipelineConfig, run_pipeline
from lovr_hf.repo import BenchmarkRepo

YOUTUBE_ALPHABET = string.ascii_letters + string.digits + "-_"


def test_youtube_style_ids_are_kept_verbatim() -> None:
    rng = random.Random(0)
    ids = ["".join(rng.choice(YOUTUBE_ALPHABET) for _ in range(11)) for _ in range(3000)]
    assert sum(i.startswith("-") for i in ids) > 20  # about one in 64
    for i in ids:
        assert safe_id(f"{i}.mp4") == i and check_id(i) == i and check_id(f"{i}-Scene-001")
    assert safe_id("-7wwfGJXEZg.MP4") == "-7wwfGJXEZg"
    for name in ("two seconds", "vidéo à écouter 視頻", "Ab_C-9 (1)", ".hidden", "a.b.c", "-", "--x"):
        assert safe_id(name + ".mp4") == name and check_id(name) == name


@pytest.mark.parametrize("name,why", [
    ("", "empty"), (".", "its parent"), ("..", "its parent"), ("a/b", "path separator"),
    ("..\\..\\x", "path separator"), ("a\x00b", "control character"), ("a\nb", "control character"),
    ("a\u202eb", "control character"), ("a:b", "Windows"), ('a"b', "Windows"), ("a?", "Windows"),
    ("abc.", "Windows drops"), ("abc ", "Windows drops"), (" abc", "Windows drops"), ("CON", "device"),
    ("nul.txt", "device"), ("e\u0301", "NFC"), ("x" * (MAX_ID_BYTES + 1), "bytes long"),
])
def test_unsafe_names_are_refused_with_the_reason(name: str, why: str, tmp_path: Path) -> None:
    problem = id_problem(name)
    assert problem is not None and why in problem
    with pytest.raises(ValueError, match="unsafe id"):
        check_video_id(name)  # (clip ids may be longer: a video id plus -Scene-NNN, see check_id)
    slug = safe_id(name + ".mp4")  # segment never fails: an unsafe name becomes a hashed strict slug
    assert id_problem(slug) is None and all(c.isalnum() or c in "_-" for c in slug)
    assert safe_join(tmp_path, slug).parent == tmp_path.resolve()


def test_different_unsafe_names_never_share_a_slug_and_case_collisions_are_found() -> None:
    names = ["a/b.mp4", "a:b.mp4", "a?b.mp4", "a\x01b.mp4", "../a_b.mp4"]
    assert len({safe_id(n) for n in names}) == len(names)
    assert strict_slug("-7wwfGJXEZg") != "-7wwfGJXEZg" and not strict_slug("-7wwfGJXEZg").startswith("-")
    assert casefold_collisions(["Ab", "aB", "c", "C", "d"]) == {"ab": ["Ab", "aB"], "c": ["C", "c"]}


def test_the_original_example_id_end_to_end(tmp_path: Path) -> None:
    """`-7wwfGJXEZg` (the original's own example video) keeps its id through segment, caption, merge, eval
    and the original-layout export; its clips are named as in the release."""
    src = tmp_path / "in"
    src.mkdir()
    make_video(src / "-7wwfGJXEZg.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=5)
    make_video(src / "Ab_9-x Y.mp4", [SceneSpec(60), SceneSpec(60)], 64, 48, 12, seed=6)
    cfg = PipelineConfig(input_folder=str(src), repo=str(tmp_path / "lovr"), caption=CaptionConfig(backend="dummy"),
                         merge=MergeConfig(llm="dummy"), eval_models=["dummy"], eval={"clip_queries": "all"})
    run_pipeline(cfg)
    repo = BenchmarkRepo(tmp_path / "lovr")
    assert sorted(repo.read(schema.VIDEOS)["video_id"]) == ["-7wwfGJXEZg", "Ab_9-x Y"]
    clips = repo.read(schema.CLIPS)
    assert sorted(clips["clip_id"]) == ["-7wwfGJXEZg-Scene-001", "-7wwfGJXEZg-Scene-002", "Ab_9-x Y-Scene-001",
                                        "Ab_9-x Y-Scene-002"]
    assert (repo.root / "clips/-7wwfGJXEZg/-7wwfGJXEZg-Scene-001.mp4").is_file()
    ids = set(clips["clip_id"])
    assert set(repo.read(schema.CLIP_CAPTIONS)["clip_id"]) == ids
    assert set(repo.read(schema.VIDEO_CAPTIONS)["video_id"]) == {"-7wwfGJXEZg", "Ab_9-x Y"}
    assert {c.split("_")[0] for c in repo.read(schema.CLUSTERS)["cluster_id"]} >= {"-7wwfGJXEZg"}
    emb = [c for c in repo.configs() if c.startswith("embeddings-")]
    (config,) = emb
    items = set(repo.read(config)["item_id"])
    assert ids | {"-7wwfGJXEZg", "Ab_9-x Y"} <= items
    out = export_original(repo, tmp_path / "export")
    lines = [json.loads(x) for x in (tmp_path / "export/caption_data/all_clip.jsonl").read_text().splitlines()]
    assert sorted(x["path"].split("/")[-1][:-4] for x in lines) == sorted(ids)
    assert (tmp_path / "export/video_data/long_video_clip/-7wwfGJXEZg/-7wwfGJXEZg-Scene-002.mp4").is_file()
    assert not out["errors"]
    assert export_original(repo, tmp_path / "export") == out  # a re-export over its own links: the same
    export_original(repo, tmp_path / "export", clips="none")  # what the new export no longer has goes
    assert not list((tmp_path / "export/video_data").rglob("*.mp4"))
