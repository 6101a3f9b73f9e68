"""`lovr info` on a repo mid-way and on a parquet file; `lovr run` records its configuration."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import ClassVar

import yaml

from lovr_hf import schema
from lovr_hf.backends.standins.testing import DummyCaptioner
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.info import file_summary, repo_status


def test_info_reports_what_is_left_and_summarises_files(tmp_path: Path, capsys) -> None:
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.mp4", [SceneSpec(60), SceneSpec(66), SceneSpec(60)], 64, 48, 12, seed=1)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "input_folder": str(vids), "repo": str(tmp_path / "lovr"),
        "segment": {"clip_mode": "virtual"},
        "caption": {"backend": "dummy", "backend_options": {"api_key": "sk-do-not-write-me"}},
        "merge": {"llm": "dummy"},
    }))
    assert cli_main(["-q", "run", "--config", str(cfg)]) == 0
    repo = BenchmarkRepo(tmp_path / "lovr")
    run = repo.run_config()
    assert run["segment"]["clip_mode"] == "virtual" and run["merge"]["llm"] == "dummy"
    card = repo.card_path.read_text()
    assert '"clip_mode": "virtual"' in card and "sk-do-not-write-me" not in card  # config in the card, redacted
    status = repo_status(repo)
    assert status["configs"]["clips"] == 3 and status["configs"]["clip_captions"] == 3
    assert status["left"]["videos_to_segment"] == 0 and status["left"]["clips_to_caption"] == 0
    assert status["left"]["clusters_to_merge"] == 0 and status["left"]["videos_to_integrate"] == 0
    # a new video arrives and some clips lose their captions: info says what is left
    make_video(vids / "b.mp4", [SceneSpec(60)], 64, 48, 12, seed=2)
    repo.write(schema.CLIP_CAPTIONS, repo.read(schema.CLIP_CAPTIONS).select([0]))
    left = repo_status(repo)["left"]
    assert left["videos_to_segment"] == 1 and left["clips_to_caption"] == 2
    caption(repo, CaptionConfig(backend="dummy"))
    assert repo_status(repo)["left"]["clips_to_caption"] == 0
    assert cli_main(["info", "--repo", str(repo.root)]) == 0
    assert "clips_to_caption: 0" in capsys.readouterr().out
    shard = repo.root / repo.config_files()["clips"][0]
    summary = file_summary(shard)
    assert summary["rows"] == 3 and "clip_id" in summary["schema"] and len(summary["head"]) == 3
    assert cli_main(["info", str(shard), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3


def test_run_flags_reach_each_stage_config(tmp_path: Path) -> None:
    """The segment, caption and eval options of ``lovr run`` land in the stage configs the run uses (and
    absent flags leave the config file's values alone)."""
    import argparse

    from lovr_hf.cli.run import add_arguments, overrides_from_args
    from lovr_hf.pipeline import load_config

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump({"segment": {"crf": 30, "threshold": 20.0}, "caption": {"batch_size": 3}}))
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--config", str(cfg_file), "--input_folder", "v", "--downscale", "2", "--merge-short-tail",
                         "--no-audio", "--api-server", "vllm", "--protocol", "original"])
    cfg = load_config(args.config, overrides_from_args(args))
    assert (cfg.segment.downscale, cfg.segment.merge_short_tail, cfg.segment.audio) == (2, True, False)
    assert (cfg.segment.crf, cfg.segment.threshold, cfg.caption.batch_size) == (30, 20.0, 3)
    assert cfg.caption.api_server == "vllm" and cfg.eval["protocol"] == "original"
    default = load_config(None, overrides_from_args(p.parse_args(["--input_folder", "v"])))
    assert (default.segment.downscale, default.segment.audio, default.segment.crf) == ("auto", True, 22)
    assert default.caption.api_server == "openai" and "protocol" not in default.eval


class _Weights:
    """Stands for a loaded VLM's weights (only a weak reference is kept by the test)."""


class CachedCaptioner(DummyCaptioner):
    """The dummy captioner, loading its "weights" through the process-wide model cache as the real captioners do
    (kind ``captioner``), never keeping them on itself."""

    refs: ClassVar[list[weakref.ref]] = []

    def caption(self, batch, prompt, params):  # type: ignore[no-untyped-def]
        from lovr_hf.backends import model_cache

        CachedCaptioner.refs.append(weakref.ref(model_cache.load_once(("captioner", "test-cached"), _Weights)))
        return super().caption(batch, prompt, params)


def test_run_releases_the_captioner_before_merge_and_eval(tmp_path: Path) -> None:
    """`lovr run` frees the captioning model once captioning is done (GPU memory for the merge LLM and the
    embedders): after the run nothing holds the captioner's weights."""
    import gc

    from lovr_hf.merge.config import MergeConfig
    from lovr_hf.pipeline import PipelineConfig, run_pipeline

    src = tmp_path / "in"
    src.mkdir()
    make_video(src / "a.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=5)
    cfg = PipelineConfig(input_folder=str(src), repo=str(tmp_path / "lovr"),
                         caption=CaptionConfig(backend="test_info_and_run:CachedCaptioner"),
                         merge=MergeConfig(llm="dummy"))
    run_pipeline(cfg)
    gc.collect()
    assert CachedCaptioner.refs and all(r() is None for r in CachedCaptioner.refs)


def test_info_counts_only_what_a_next_command_would_do(tmp_path: Path) -> None:
    """Issue #24: committed captions of clips a later segmentation dropped are not 'not gathered'."""
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.mp4", [SceneSpec(60), SceneSpec(66), SceneSpec(60)], 64, 48, 12, seed=1)
    base = {"input_folder": str(vids), "repo": str(tmp_path / "lovr"), "caption": {"backend": "dummy"},
            "merge": {"llm": "dummy"}}
    cfg = tmp_path / "run.yaml"
    for min_s in (5.0, 10.0):  # a rerun with another --min_clip_duration: fewer, longer clips
        cfg.write_text(yaml.safe_dump({**base, "segment": {"clip_mode": "virtual", "min_clip_duration": min_s}}))
        assert cli_main(["-q", "run", "--config", str(cfg)]) == 0
    repo = BenchmarkRepo(tmp_path / "lovr")
    clips = repo.read(schema.CLIPS)[schema.CLIP_ID]
    assert len(clips) < 3  # the rerun really changed the clips, and the first run's captions are still committed
    left = repo_status(repo)["left"]
    assert left["clips_to_caption"] == 0 and left["clips_captioned_not_gathered"] == 0, left
    assert left["clusters_to_merge"] == 0


def test_info_on_an_imported_release_and_failed_embeddings(tmp_path: Path) -> None:
    from _release_helpers import build_release

    from lovr_hf.hub.release import import_release

    repo_dir = tmp_path / "lovr"
    import_release(build_release(tmp_path / "release"), repo_dir)
    repo = BenchmarkRepo(repo_dir)
    status = repo_status(repo)
    # the release's captions are as published and it has no clusters by design: nothing to caption or merge
    assert "clips_to_caption" not in status["left"] and "clusters_to_merge" not in status["left"], status["left"]
    assert "nothing to segment, caption or merge" in status["imported_release"]
    card = repo.card_path.read_text()
    assert "lovr_hf did not segment, caption or merge them" in card
    assert "every clip\nis captioned by a vision-language model" not in card
    # a model whose every embedding row failed is flagged (it has no score)
    rows = [{"model": "broken", "kind": "clip_caption", "item_id": f"c{i}", schema.VIDEO_ID: "v", "embedding": [],
             "num_frames": 0, "text_mode": "truncate", "interval": None, "uniform_frames": None, "frame_rule": None,
             "protocol": "lovr", "input_digest": "x", schema.STATUS: schema.FAILED, schema.ERROR_COL: "OSError: disk"}
            for i in range(3)]
    cfg = schema.embeddings_config("broken")
    template = {k: None for k in schema.features_for(cfg)}
    repo.write(cfg, [{**template, **r} for r in rows])
    assert repo_status(repo)["embeddings_all_failed"] == {"broken": "3 of 3 rows failed"}


def test_info_reports_a_tampered_shard_instead_of_counting_it(tmp_path: Path, capsys) -> None:
    """``lovr info`` counted rows from a shard's metadata, so a shard rewritten with 6 of its 9 rows under its
    name looked fine; it now names the problem and the repair, and exits 1."""
    import pyarrow.parquet as pq

    repo = BenchmarkRepo(tmp_path / "lovr")
    rows = [{"clip_id": f"v{i}-Scene-001", "video_id": f"v{i}", "slice_num": 1, "caption": f"caption {i}",
             "model": "m", "prompt_hash": "", "status": "ok"} for i in range(9)]
    repo.write(schema.CLIP_CAPTIONS, rows)
    assert cli_main(["info", "--repo", str(repo.root)]) == 0
    shard = repo.root / repo.config_files()[schema.CLIP_CAPTIONS][0]
    pq.write_table(pq.read_table(shard).slice(0, 6), shard)  # same name, fewer rows
    capsys.readouterr()
    assert cli_main(["info", "--repo", str(repo.root)]) == 1
    out = capsys.readouterr().out
    assert "integrity_problems" in out and schema.CLIP_CAPTIONS in out and "lovr doctor" in out
    assert "clip_captions: 6" not in out
