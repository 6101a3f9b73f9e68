"""Every table follows its current inputs (issue #10), tried as a new user would: dummy backends, two
generated videos, real stages. Each scenario ends with the invariants of ``_rerun_helpers.assert_invariants``
and, where it applies, equality with a fresh run on the same inputs and settings.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from _rerun_helpers import (
    EVAL,
    FLAKY,
    PROMPT_LLM,
    THEME_DOWN,
    FlakyCaptioner,
    ThemeDownLLM,
    assert_clip_files,
    assert_invariants,
    caption_config,
    fresh_equal,
    make_videos,
    merge_config,
    run_all,
    snapshot,
)

from lovr_hf import schema
from lovr_hf.caption.stage import caption
from lovr_hf.cli.app import main as cli_main
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.stage import MissingChunksError
from lovr_hf.evaluation.embed import text_inputs
from lovr_hf.evaluation.run import evaluate_model
from lovr_hf.merge.stage import merge
from lovr_hf.repo import BenchmarkRepo


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return make_videos(tmp_path_factory.mktemp("rerun_videos"))


@pytest.fixture(scope="module")
def captioned(videos: Path, tmp_path_factory) -> BenchmarkRepo:
    """A repo segmented and captioned (min clip 5 s), not merged: copied by the merge tests."""
    repo = BenchmarkRepo(tmp_path_factory.mktemp("captioned") / "lovr")
    from lovr_hf.segment.stage import SegmentConfig, segment

    segment(videos, repo, SegmentConfig(clip_mode="virtual"))
    caption(repo, caption_config())
    return repo


def copy_repo(src: BenchmarkRepo, dst: Path) -> BenchmarkRepo:
    shutil.copytree(src.root, dst)
    return BenchmarkRepo(dst)


def clip_ranges(repo: BenchmarkRepo, vid: str) -> list[tuple[int, int]]:
    return [(r["start_frame"], r["end_frame"]) for r in repo.read(schema.CLIPS) if r["video_id"] == vid]


def test_resegment_with_another_min_length_recomputes_exactly_what_changed(videos: Path, tmp_path: Path,
                                                                           caplog) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    run_all(repo, videos, min_clip=5.0)
    first = snapshot(repo)
    a5, b5 = clip_ranges(repo, "lin_a"), clip_ranges(repo, "lin_b")
    again = run_all(repo, videos, min_clip=3.0)
    a3 = clip_ranges(repo, "lin_a")
    assert len(a3) > len(a5) and clip_ranges(repo, "lin_b") == b5
    # captions: exactly the clips whose range changed were captioned again; lin_b's were reused
    assert again["caption"].processed == len(set(a3) - set(a5)) > 0
    assert again["caption"].skipped_done == len(a3) + len(b5) - again["caption"].processed
    assert_invariants(repo, videos)
    video_a = next(r for r in repo.read(schema.VIDEO_CAPTIONS) if r["video_id"] == "lin_a")
    assert len(video_a["clip_ids"]) == len(a3)  # the video caption covers every current clip
    fresh = BenchmarkRepo(tmp_path / "fresh")
    run_all(fresh, videos, min_clip=3.0)
    fresh_equal(repo, fresh)
    # and back to 5 s: every unit of the first run is reused, the extra clips' rows are removed (logged)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        back = run_all(repo, videos, min_clip=5.0)
    assert back["caption"].processed == 0 and back["merge"].processed == 0
    assert snapshot(repo) == first
    assert f"removed {len(a3) - len(a5)} clip_captions rows of {len(a3) - len(a5)} clip_id(s) no longer in the input" \
        in caplog.text


def test_settings_round_trip_never_reuses_a_clip_file_another_setting_rewrote(videos: Path, tmp_path: Path) -> None:
    """5 s -> 3 s -> 5 s with clip files: the 3 s run cuts files of the same names; back at 5 s the engine
    sees they changed since its 5 s commit and cuts them again, so every row still points at its own frames.

    ``copy`` clips: stream copies are byte-identical run to run, so the comparison with a fresh run is exact
    (x264 re-encodes of ``exact`` clips are not always bit-identical between two cuts, see the report)."""
    from lovr_hf.segment.stage import SegmentConfig, segment

    repo = BenchmarkRepo(tmp_path / "lovr")
    for min_clip in (5.0, 3.0):
        segment(videos, repo, SegmentConfig(min_clip_duration=min_clip, clip_mode="copy"))
        caption(repo, caption_config())
    back = segment(videos, repo, SegmentConfig(min_clip_duration=5.0, clip_mode="copy"))
    # both videos' files were cut again under the same names at 3 s (until clip files of different settings
    # get different paths, the engine cannot reuse them): both are cut again, nothing else is recomputed
    assert back.processed == 2
    cap = caption(repo, caption_config())
    assert cap.processed == 0  # the 5 s captions are still valid for the re-cut 5 s clips
    assert_clip_files(repo)
    fresh = BenchmarkRepo(tmp_path / "fresh")
    segment(videos, fresh, SegmentConfig(min_clip_duration=5.0, clip_mode="copy"))
    caption(fresh, caption_config())
    fresh_equal(repo, fresh)


def test_replaced_video_with_the_same_cuts_is_embedded_again(videos: Path, tmp_path: Path) -> None:
    """A source replaced by other footage with the same scene lengths keeps every clip name, range and
    length; its clip files, captions and visual embeddings are still recomputed (the clip file's content
    is part of the embedding unit), the other video's are reused."""
    from _rerun_helpers import FPS, SCENES

    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec

    folder = tmp_path / "videos"
    shutil.copytree(videos, folder)
    repo = BenchmarkRepo(tmp_path / "lovr")
    run_all(repo, folder, clip_mode="copy", evaluate=True)
    emb_cfg = schema.embeddings_config("dummy")
    before = {(r["kind"], r["item_id"]): r["embedding"] for r in repo.read(emb_cfg)}
    ranges = clip_ranges(repo, "lin_b")
    make_video(folder / "lin_b.mp4", [SceneSpec(n) for n in SCENES["lin_b"]], 64, 48, FPS, seed=99)
    again = run_all(repo, folder, clip_mode="copy", evaluate=True)
    assert clip_ranges(repo, "lin_b") == ranges  # same clips, other pixels
    assert again["caption"].processed == len(ranges)
    after = {(r["kind"], r["item_id"]): r["embedding"] for r in repo.read(emb_cfg)}
    assert set(after) == set(before)
    changed = {key for key in before if after[key] != before[key]}
    assert ("video", "lin_b") in changed and ("video", "lin_a") not in changed
    assert {k for k in changed if k[0] == "clip"} == {("clip", f"lin_b-Scene-{i:03d}") for i in range(1, len(ranges) + 1)}
    assert_invariants(repo, folder)
    fresh = BenchmarkRepo(tmp_path / "fresh")
    run_all(fresh, folder, clip_mode="copy", evaluate=True)
    fresh_equal(repo, fresh)


def test_removed_input_disappears_from_every_table_and_its_clip_files(videos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    shutil.copytree(videos, folder)
    repo = BenchmarkRepo(tmp_path / "lovr")
    run_all(repo, folder, clip_mode="copy", evaluate=True)  # clip files, byte-identical in a fresh run
    b_files = list((repo.root / "clips" / "lin_b").glob("*.mp4"))
    assert b_files and any(r["video_id"] == "lin_b" for r in repo.read(schema.embeddings_config("dummy")))
    (folder / "lin_b.mp4").unlink()
    again = run_all(repo, folder, clip_mode="copy", evaluate=True)
    assert again["caption"].processed == 0 and again["merge"].processed == 0  # lin_a untouched
    assert not (repo.root / "clips" / "lin_b").exists()  # its clip files went with its rows
    assert_invariants(repo, folder)
    results = repo.read(schema.RESULTS)
    t2c = next(r for r in results if r["direction"] == "text_to_clip" and r["k"] == 1)
    assert t2c["num_candidates"] == len(clip_ranges(repo, "lin_a"))  # no decode-error misses of lin_b
    fresh = BenchmarkRepo(tmp_path / "fresh")
    run_all(fresh, folder, clip_mode="copy", evaluate=True)
    fresh_equal(repo, fresh)


def test_failed_captions_then_retry_reach_clusters_and_video_captions(videos: Path, tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    mer = merge_config(cluster_size=2)  # small clusters, so some hold no failed clip
    FlakyCaptioner.failing = True
    try:
        run_all(repo, videos, cap=caption_config(backend=FLAKY), mer=mer)
    finally:
        FlakyCaptioner.failing = False
    caps = repo.read(schema.CLIP_CAPTIONS)
    failed = [r["clip_id"] for r in caps if r["status"] == schema.FAILED]
    assert failed and all(r["error"].startswith("RuntimeError: HTTP 503") for r in caps if r["status"] == "failed")
    clusters = repo.read(schema.CLUSTERS)
    assert all(any(f in (c["error"] or "") for c in clusters) for f in failed)  # left out, and recorded
    holding = [c for c in clusters if any(f in (c["error"] or "") for f in failed)]
    assert 0 < len(holding) < len(clusters)
    assert_invariants(repo, videos)  # failed clips keep their place: video captions still list every clip
    res = caption(repo, caption_config(backend=FLAKY), RunControl(retry_failed=True))
    assert res.processed == len(failed)
    mres = merge(repo, mer)
    assert mres.stats["computed_clusters"] == len(holding)  # only clusters holding a repaired caption
    assert set(repo.read(schema.CLIP_CAPTIONS)["status"]) == {schema.OK}
    assert all(not c["error"] for c in repo.read(schema.CLUSTERS))
    assert_invariants(repo, videos)
    fresh = BenchmarkRepo(tmp_path / "fresh")
    run_all(fresh, videos, cap=caption_config(backend=FLAKY), mer=mer)
    fresh_equal(repo, fresh)


@pytest.mark.parametrize("order", [(1, 0), (0, 1)])
def test_merge_chunks_in_either_order_equal_one_process(captioned: BenchmarkRepo, tmp_path: Path, order) -> None:
    single = copy_repo(captioned, tmp_path / "single")
    merge(single, merge_config(theme=True))
    repo = copy_repo(captioned, tmp_path / "chunks")
    first = merge(repo, merge_config(theme=True), RunControl(num_chunks=2, chunk_idx=order[0]))
    assert not first.complete and not repo.has(schema.CLUSTERS) and not repo.has(schema.VIDEO_CAPTIONS)
    last = merge(repo, merge_config(theme=True), RunControl(num_chunks=2, chunk_idx=order[1]))
    assert last.complete
    n_videos = single.read(schema.VIDEO_CAPTIONS).num_rows
    # the first chunk already did the videos whose clusters were all its own; the last one did the rest
    assert first.stats.get("computed_videos", 0) + last.stats["computed_videos"] == n_videos
    assert snapshot(repo) == snapshot(single)


def test_gather_with_missing_chunks_fails_listing_them_unless_partial(captioned: BenchmarkRepo, tmp_path: Path,
                                                                       capsys) -> None:
    repo = copy_repo(captioned, tmp_path / "lovr")
    base = ["-q", "merge", "--repo", str(repo.root), "--llm", PROMPT_LLM, "--cluster-size", "3",
            "--num-workers", "2"]
    assert cli_main([*base, "--num-chunks", "2", "--chunk-idx", "0"]) == 0
    capsys.readouterr()
    assert cli_main([*base, "--gather"]) == 2
    err = capsys.readouterr().err
    assert "still to finish: --chunk-idx 1" in err and "--allow-partial" in err
    assert not repo.has(schema.CLUSTERS)
    with pytest.raises(MissingChunksError):
        merge(repo, merge_config(), RunControl(gather_only=True))
    assert cli_main([*base, "--gather", "--allow-partial"]) == 0
    partial = repo.run_config()["partial"]
    assert "clusters" in partial and "missing" in partial["clusters"]
    assert "partial" in repo.card_path.read_text()  # the card shows the run config, partial entry included
    assert cli_main([*base, "--num-chunks", "2", "--chunk-idx", "1"]) == 0
    assert "partial" not in repo.run_config()  # complete now: the note is gone
    single = copy_repo(captioned, tmp_path / "single")
    merge(single, merge_config())
    assert snapshot(repo) == snapshot(single)


def test_theme_and_video_options_added_later_reuse_every_cluster(captioned: BenchmarkRepo, tmp_path: Path) -> None:
    repo = copy_repo(captioned, tmp_path / "lovr")
    first = merge(repo, merge_config())
    n_clusters, n_videos = repo.read(schema.CLUSTERS).num_rows, repo.read(schema.VIDEO_CAPTIONS).num_rows
    assert first.stats["computed_clusters"] == n_clusters
    themed = merge(repo, merge_config(theme=True))
    assert (themed.stats["computed_clusters"], themed.stats["computed_videos"], themed.stats["computed_themes"]) \
        == (0, 0, n_videos)
    other = merge(repo, merge_config(theme=True, integrate_mode="hierarchical", video_max_new_tokens=2048))
    assert other.stats["computed_clusters"] == 0 and other.stats["computed_videos"] == n_videos
    off = merge(repo, merge_config())  # back to the first settings: nothing to compute, themes removed
    assert off.processed == 0 and not repo.has(schema.THEME_CAPTIONS)


def test_failed_themes_are_recorded_and_retried_alone(captioned: BenchmarkRepo, tmp_path: Path) -> None:
    repo = copy_repo(captioned, tmp_path / "lovr")
    ThemeDownLLM.down = True
    try:
        merge(repo, merge_config(llm=THEME_DOWN, theme=True))
    finally:
        ThemeDownLLM.down = False
    themes = repo.read(schema.THEME_CAPTIONS)
    assert set(themes["status"]) == {schema.FAILED} and all("HTTP 502" in e for e in themes["error"])
    res = merge(repo, merge_config(llm=THEME_DOWN, theme=True), RunControl(retry_failed=True))
    assert (res.stats["computed_clusters"], res.stats["computed_videos"]) == (0, 0)
    assert res.stats["computed_themes"] == themes.num_rows
    assert set(repo.read(schema.THEME_CAPTIONS)["status"]) == {schema.OK}


def test_status_policy_what_eval_embeds(captioned: BenchmarkRepo, tmp_path: Path, caplog) -> None:
    repo = copy_repo(captioned, tmp_path / "lovr")
    merge(repo, merge_config())
    caps = repo.read(schema.CLIP_CAPTIONS).to_list()
    caps[0]["status"] = schema.NEEDS_REVIEW  # real text under the quality threshold
    caps[1].update(status=schema.FAILED, caption="", error="RuntimeError: HTTP 500")
    repo.write(schema.CLIP_CAPTIONS, caps)
    vcs = repo.read(schema.VIDEO_CAPTIONS).to_list()
    vcs[0].update(status=schema.FAILED, failed_calls=1, error="step 1: rejected reply: ...")  # complete text
    repo.write(schema.VIDEO_CAPTIONS, vcs)
    with caplog.at_level(logging.INFO):
        ds = text_inputs(repo, "clip_caption")
    assert caps[0]["clip_id"] in ds["item_id"] and caps[1]["clip_id"] not in ds["item_id"]
    assert "left out: 1 status failed" in caplog.text and "included, flagged: 1 needs_review" in caplog.text
    evaluate_model(repo, EVAL)
    emb = {(r["kind"], r["item_id"]) for r in repo.read(schema.embeddings_config("dummy"))}
    assert ("video_caption", vcs[0]["video_id"]) in emb  # fallen-back joins: usable, flagged by failed_calls
    assert ("clip_caption", caps[0]["clip_id"]) in emb and ("clip_caption", caps[1]["clip_id"]) not in emb


def test_run_strict_exits_non_zero_on_bad_rows_and_prints_counts(videos: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(videos / "lin_b.mp4", folder / "lin_b.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    args = ["run", "--input_folder", str(folder), "--repo", str(tmp_path / "lovr"), "--captioner", "dummy",
            "--llm", PROMPT_LLM, "--clip_mode", "virtual"]
    assert cli_main(args) == 0
    out = capsys.readouterr().err
    assert "rows per stage and status:" in out and "videos" in out and "error 1" in out  # the summary says so
    assert cli_main(["-q", *args, "--strict"]) == 1
    assert "--strict: segment/videos/error 1" in capsys.readouterr().err


def test_gather_only_of_a_finished_stage_is_a_no_op(captioned: BenchmarkRepo, tmp_path: Path) -> None:
    repo = copy_repo(captioned, tmp_path / "lovr")
    before = snapshot(repo)
    res = caption(repo, caption_config(), RunControl(gather_only=True))
    assert res.complete and snapshot(repo) == before


def test_lovr_run_chunks_last_chunk_first_equal_one_process(videos: Path, tmp_path: Path) -> None:
    """Manual chunks of the whole run, the last one first: the chunk that completes segmentation carries
    every later stage (merge chunk orders: test_merge_chunks_in_either_order_equal_one_process)."""
    order = (1, 0)
    from lovr_hf.pipeline import PipelineConfig, run_pipeline
    from lovr_hf.segment.stage import SegmentConfig

    def cfg(repo: Path) -> PipelineConfig:
        return PipelineConfig(input_folder=str(videos), repo=str(repo), segment=SegmentConfig(clip_mode="virtual"),
                              caption=caption_config(), merge=merge_config(theme=True), eval_models=["dummy"],
                              eval={"backend": "dummy", "interval": 6, "clip_queries": "all"})

    run_pipeline(cfg(tmp_path / "single"))
    first = run_pipeline(cfg(tmp_path / "chunks"), RunControl(num_chunks=2, chunk_idx=order[0]))
    assert not first["complete"] and not BenchmarkRepo(tmp_path / "chunks").has(schema.CLIPS)
    last = run_pipeline(cfg(tmp_path / "chunks"), RunControl(num_chunks=2, chunk_idx=order[1]))
    assert last["complete"] and last["status"]["eval"]  # the summary covers every stage, eval included
    clips = BenchmarkRepo(tmp_path / "chunks").read(schema.CLIPS).num_rows
    assert last["eval_captions"]["clip_caption"] == {"embedded": clips, "left_out": 0}
    assert snapshot(BenchmarkRepo(tmp_path / "chunks")) == snapshot(BenchmarkRepo(tmp_path / "single"))
