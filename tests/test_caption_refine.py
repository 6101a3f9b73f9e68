"""The quality loop: every further attempt changes what the model sees (frames, or prompt and sampling), the
inputs recorded per attempt are the ones the model really got, and a judge that cannot score is a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _caption_helpers import FPS, RecordingCaptioner, by_id, clip_row, write_clips

from lovr_hf import schema
from lovr_hf.backends.base import SCORERS, QualityScorer
from lovr_hf.backends.captioners.scorers import JudgeFailed, LLMJudgeScorer
from lovr_hf.backends.llms.openai import OpenAIChatLLM
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.refine import REFINE_SUFFIX, default_variant, more_frames_cap, next_variant
from lovr_hf.caption.stage import caption
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.prompts import CAPTION_USER
from lovr_hf.testing.fake_openai import Error, FakeOpenAIServer, Reply
from lovr_hf.video.frames import caption_frame_plan, caption_num_frames


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("refine_src")
    make_video(d / "v.mp4", [SceneSpec(120), SceneSpec(96)], 48, 32, FPS, seed=11)
    return d / "v.mp4"


def two_clips(root: Path, src: Path):
    """A 10-second and an 8-second clip."""
    return write_clips(root, [clip_row(src, "v", 1, 0, 120), clip_row(src, "v", 2, 120, 96)])


@SCORERS.register("always-weak")
class AlwaysWeak(QualityScorer):
    def score(self, captions, frames=None):
        return [1.0] * len(captions)


def test_ladder_skips_rungs_that_change_nothing() -> None:
    base = default_variant(64, 0.9, 0.001, True, None)
    short = lambda cap: caption_num_frames(12 * 20, 20.0, max_frames=cap)  # noqa: E731 - a 20 s clip
    long = lambda cap: caption_num_frames(12 * 100, 100.0, max_frames=cap)  # noqa: E731 - a 100 s clip
    assert short(more_frames_cap(64)) == short(64)  # the raised cap gives a 20 s clip nothing more
    v2 = next_variant([base], short)
    assert v2.name == "refine_prompt" and v2.max_frames == 64 and v2.prompt_variant == "refine"
    v3 = next_variant([base, v2], short)
    assert v3.name == "resample" and v3.seed != v2.seed and v3.prompt_variant == "refine"
    assert next_variant([base, v2, v3], short).seed not in (v2.seed, v3.seed)
    assert long(more_frames_cap(64)) > long(64)
    m2 = next_variant([base], long)
    assert m2.name == "more_frames" and m2.max_frames == 128 and (m2.temperature, m2.top_p) == (0.9, 0.001)
    m3 = next_variant([base, m2], long)
    assert m3.name == "refine_prompt" and m3.max_frames == 128  # keeps the extra frames
    seeded = default_variant(64, 0.9, 0.001, True, 41)
    assert next_variant([seeded], short).seed == 42  # derived from the configured seed: reruns repeat it


def test_each_attempt_differs_and_records_what_the_model_got(source: Path, tmp_path: Path) -> None:
    """With a frame cap of 8, the 10-second clip's attempt 2 gets more frames (the rule gives 10 under the
    raised cap) and the 8-second clip's attempt 2 gets the refinement prompt instead (8 frames either way)."""
    repo = two_clips(tmp_path / "lovr", source)
    RecordingCaptioner.calls.clear()
    caption(repo, CaptionConfig(backend="recording", max_frames=8, min_quality=5.0, scorer="always-weak"))
    rows = by_id(repo)
    calls = RecordingCaptioner.calls
    assert len(calls) == 6  # 2 clips x 3 attempts, nothing asked twice
    for cid, n, seconds in (("v-Scene-001", 120, 10.0), ("v-Scene-002", 96, 8.0)):
        row = rows[cid]
        assert (row["status"], row["attempts"]) == (schema.NEEDS_REVIEW, 3)
        log = json.loads(row["settings"])["attempts_log"]
        assert [e["attempt"] for e in log] == [1, 2, 3]
        plans = [caption_frame_plan(n, seconds, max_frames=e["max_frames"]) for e in log]
        assert [e["frame_indices"] for e in log] == [list(p.indices) for p in plans]  # from frames.py
        # no attempt repeats an earlier one: frames or prompt/sampling differ
        keys = [(tuple(e["frame_indices"]), e["prompt_hash"], e["temperature"], e["top_p"], e["seed"]) for e in log]
        assert len(set(keys)) == 3
        assert (log[1]["frame_indices"], log[1]["prompt_hash"]) != (log[0]["frame_indices"], log[0]["prompt_hash"])
        # what the model really got, clip by clip, matches the record
        got = [c for c in calls if c["n_frames"] in {e["num_frames"] for e in log}]
        for e in log:
            user = CAPTION_USER + (REFINE_SUFFIX if e["prompt_variant"] == "refine" else "")
            assert any(c["n_frames"] == e["num_frames"] and c["user"] == user and c["seed"] == e["seed"]
                       and c["temperature"] == e["temperature"] and c["fps"] == pytest.approx(e["video_fps"])
                       for c in got), e
    log1 = json.loads(rows["v-Scene-001"]["settings"])["attempts_log"]
    log2 = json.loads(rows["v-Scene-002"]["settings"])["attempts_log"]
    assert [e["variant"] for e in log1] == ["default", "more_frames", "refine_prompt"]
    assert [e["num_frames"] for e in log1] == [caption_num_frames(120, 10.0, max_frames=c) for c in (8, 16, 16)]
    assert log1[1]["prompt_hash"] == log1[0]["prompt_hash"]  # more frames, same prompt
    assert [e["variant"] for e in log2] == ["default", "refine_prompt", "resample"]
    assert len({e["num_frames"] for e in log2}) == 1  # the cap never bound: frames unchanged, prompt/seed changed


def test_a_broken_judge_is_a_failure_not_a_bad_caption(source: Path, tmp_path: Path, caplog) -> None:
    """Every judge call fails (HTTP 503): each clip is captioned once and recorded as failed with the judge's
    error and no score; it is not re-captioned nor marked needs_review."""
    with FakeOpenAIServer() as srv:
        srv.push(*[Error(503, "The engine is currently overloaded, please try again later")] * 2)

        @SCORERS.register("judge-at-fake-server")
        class Judge(LLMJudgeScorer):
            def __init__(self) -> None:
                super().__init__(llm=OpenAIChatLLM("judge", api_base=srv.base_url, max_retries=0))

        repo = two_clips(tmp_path / "lovr", source)
        RecordingCaptioner.calls.clear()
        caption(repo, CaptionConfig(backend="recording", min_quality=5.0, scorer="judge-at-fake-server"))
        rows = by_id(repo)
        assert len(RecordingCaptioner.calls) == 2  # no re-captioning
        for row in rows.values():
            assert (row["status"], row["quality_score"], row["attempts"]) == (schema.FAILED, None, 1)
            assert row["error"] == ("attempt 1: quality judge failed: RequestFailed: HTTP 503 server_error: The "
                                    "engine is currently overloaded, please try again later (1 attempt)")
            assert row["caption"].startswith("The clip shows")  # the caption itself is kept
        assert "quality judge failed" in caplog.text
        # a judge reply without a number is a failure too, not a 0
        srv.push(Reply("I cannot rate this."), Reply("7/10"))
        llm_judge = LLMJudgeScorer(llm=OpenAIChatLLM("judge", api_base=srv.base_url, max_retries=0))
        bad, good = llm_judge.judge(["a caption", "another caption"])
        assert (bad.score, bad.error) == (None, "quality judge reply has no score: 'I cannot rate this.'")
        assert (good.score, good.error) == (7.0, None)
        srv.push(Reply("no idea"))
        with pytest.raises(JudgeFailed):
            llm_judge.score(["a caption"])


def test_scorer_values_outside_the_scale_are_failures() -> None:
    class Broken(QualityScorer):
        def score(self, captions, frames=None):
            return [float("nan"), 11.0, 4.0]

    assert [j.score for j in Broken().judge(["a", "b", "c"])] == [None, None, 4.0]
    assert Broken().judge(["a", "b", "c"])[1].error == "quality scorer gave 11.0, not a score in [0, 10]"
