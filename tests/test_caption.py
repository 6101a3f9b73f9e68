"""Caption stage on real decoded clips: frame rule, skips, failures, resume, rerun, chunks, refinement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _caption_helpers import FPS, by_id, clip_row
from conftest import killed_on_call

from lovr_hf import schema
from lovr_hf.backends.base import SCORERS, QualityScorer
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.refine import REFINE_SUFFIX
from lovr_hf.caption.stage import CaptionStage, caption
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.prompts import CAPTION_USER
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video.frames import caption_frame_plan, caption_num_frames


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    make_video(d / "v.mp4", [SceneSpec(120), SceneSpec(96), SceneSpec(60)], 96, 64, FPS, seed=5)
    return d / "v.mp4"


def make_repo(root: Path, src: Path) -> BenchmarkRepo:
    repo = BenchmarkRepo(root)
    rows = [
        clip_row(src, "v", 1, 0, 120),  # 10 s -> 10 frames
        clip_row(src, "v", 2, 120, 96),  # 8 s -> 8 frames
        clip_row(src, "v", 3, 216, 6),  # 6 frames (< 8) -> 2 frames
        clip_row(src, "v", 4, 222, 4),  # 4 frames (< 5) -> skipped
        clip_row(src, "v", 5, 226, 50, path=str(src.parent / "missing.mp4")),  # unreadable -> error
        clip_row(src, "w", 1, 0, 60),
        {**clip_row(src, "w", 2, 60, 60), "status": "error"},  # not captioned at all
    ]
    repo.write(schema.CLIPS, rows)
    return repo


def test_backend_option_flag_reaches_the_backend(source: Path, tmp_path: Path) -> None:
    """``--backend-option`` passes constructor options (JSON values) that have no flag of their own."""
    repo = make_repo(tmp_path / "lovr", source)
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy",
                     "--backend-option", "fail_frame_counts=[10]"]) == 0
    rows = by_id(repo)
    assert rows["v-Scene-001"]["status"] == schema.FAILED  # the 10-frame clip: the option took effect
    assert rows["v-Scene-002"]["status"] == schema.OK


def test_frame_rule_skips_and_errors(source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", source)
    caption(repo, CaptionConfig(backend="dummy", batch_size=3))
    rows = by_id(repo)
    assert set(rows) == {"v-Scene-001", "v-Scene-002", "v-Scene-003", "v-Scene-004", "v-Scene-005", "w-Scene-001"}
    n1, n2, n3 = (caption_num_frames(n, n / FPS) for n in (120, 96, 6))  # 10 s, 8 s, 6 frames (< 8)
    assert rows["v-Scene-001"]["num_frames_used"] == n1 and f"{n1} frames" in rows["v-Scene-001"]["caption"]
    assert rows["v-Scene-002"]["num_frames_used"] == n2
    assert rows["v-Scene-003"]["num_frames_used"] == n3 == 2 and rows["v-Scene-003"]["status"] == schema.OK
    assert rows["v-Scene-004"]["status"] == schema.SKIPPED and "too few frames" in rows["v-Scene-004"]["error"]
    assert rows["v-Scene-005"]["status"] == schema.ERROR and "cannot decode" in rows["v-Scene-005"]["error"]
    assert rows["w-Scene-001"]["model"] == "dummy-captioner-v1" and rows["w-Scene-001"]["prompt_hash"]
    assert json.loads(rows["v-Scene-001"]["settings"])["temperature"] == 0.9


def test_failed_and_empty_outputs_are_recorded_then_retried(source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", source)
    bad = CaptionConfig(backend="dummy", batch_size=4, backend_options={"fail_frame_counts": [8],
                                                                         "empty_frame_counts": [2]})
    caption(repo, bad)
    rows = by_id(repo)
    assert rows["v-Scene-002"]["status"] == schema.FAILED and "refusing" in rows["v-Scene-002"]["error"]
    assert rows["v-Scene-003"]["status"] == schema.FAILED and rows["v-Scene-003"]["error"] == "empty output"
    assert rows["v-Scene-001"]["status"] == schema.OK  # the rest of the failing batch still captioned
    # backend options are part of the fingerprint: the healthy backend is a fresh computation
    healthy = CaptionConfig(backend="dummy", batch_size=4)
    res = caption(repo, healthy)
    assert res.processed == 6


def test_out_of_memory_retries_with_fewer_frames(source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", source)
    caption(repo, CaptionConfig(backend="dummy", batch_size=2, backend_options={"oom_above_frames": 6}))
    rows = by_id(repo)
    assert rows["v-Scene-001"]["status"] == schema.OK and rows["v-Scene-001"]["num_frames_used"] == 5
    assert rows["v-Scene-002"]["num_frames_used"] == 4


def test_resume_rerun_and_chunks(source: Path, tmp_path: Path, monkeypatch) -> None:
    ref = make_repo(tmp_path / "ref", source)
    caption(ref, CaptionConfig(backend="dummy", batch_size=2))
    expected = ref.read(schema.CLIP_CAPTIONS).to_list()

    repo = make_repo(tmp_path / "lovr", source)
    with killed_on_call(monkeypatch, CaptionStage):
        caption(repo, CaptionConfig(backend="dummy", batch_size=2))
    res = caption(repo, CaptionConfig(backend="dummy", batch_size=2))
    assert (res.skipped_done, res.processed) == (2, 4)
    assert repo.read(schema.CLIP_CAPTIONS).to_list() == expected
    assert caption(repo, CaptionConfig(backend="dummy", batch_size=2)).processed == 0
    assert caption(repo, CaptionConfig(backend="dummy", batch_size=2), RunControl(rerun=True)).processed == 6
    assert repo.read(schema.CLIP_CAPTIONS).to_list() == expected

    chunked = make_repo(tmp_path / "chunks", source)
    for idx in range(3):
        rc = cli_main(["-q", "caption", "--repo", str(chunked.root), "--backend", "dummy", "--batch-size", "2",
                       "--num-chunks", "3", "--chunk-idx", str(idx)])
        assert rc == 0
    assert chunked.read(schema.CLIP_CAPTIONS).to_list() == expected


@SCORERS.register("refined-passes")
class RefinedPasses(QualityScorer):
    """Passes captions made with the refinement prompt (the recording captioner tags captions with the prompt
    length); always fails the 8-frame clips (-> needs_review after all attempts)."""

    def score(self, captions, frames=None):
        refined = f"(prompt {len(CAPTION_USER + REFINE_SUFFIX)} chars"
        always_weak = caption_num_frames(96, 8.0)  # frames of the 8-second clip (also of the 5-second one)
        return [1.0 if len(f) == always_weak else 9.0 if refined in c else 2.0 for c, f in zip(captions, frames)]


def test_refinement_recaptions_weak_clips(source: Path, tmp_path: Path) -> None:
    """Attempt 2 of a short clip (the frame cap does not bind) is another prompt and sampling, not the same
    frames again; the kept attempt's real inputs are recorded, with every attempt in ``attempts_log``."""
    repo = make_repo(tmp_path / "lovr", source)
    caption(repo, CaptionConfig(backend="recording", batch_size=8, min_quality=5.0, scorer="refined-passes"))
    rows = by_id(repo)
    r1 = rows["v-Scene-001"]
    assert (r1["attempts"], r1["quality_score"], r1["status"]) == (2, 9.0, schema.OK)
    s1 = json.loads(r1["settings"])
    log = s1["attempts_log"]
    assert [e["variant"] for e in log] == ["default", "refine_prompt"] and s1["variant"] == "refine_prompt"
    assert [e["score"] for e in log] == [2.0, 9.0]
    assert log[1]["prompt_hash"] != log[0]["prompt_hash"]  # attempt 2 changed the prompt...
    assert (log[1]["temperature"], log[1]["top_p"]) != (log[0]["temperature"], log[0]["top_p"])  # ...and sampling
    assert log[1]["frame_indices"] == log[0]["frame_indices"]  # same frames: more would not come from the rule
    r2 = rows["v-Scene-002"]
    assert (r2["attempts"], r2["quality_score"], r2["status"]) == (3, 1.0, schema.NEEDS_REVIEW)
    assert "after 3 attempt" in r2["error"]
    assert [e["variant"] for e in json.loads(r2["settings"])["attempts_log"]] == ["default", "refine_prompt",
                                                                                   "resample"]
    assert rows["v-Scene-004"]["status"] == schema.SKIPPED  # skipped clips are never scored
    plain = BenchmarkRepo(tmp_path / "plain")
    make_repo(plain.root, source)
    caption(plain, CaptionConfig(backend="dummy"))
    assert all(r["quality_score"] is None and r["attempts"] <= 1 for r in by_id(plain).values())


def test_heuristic_scorer_orders_captions() -> None:
    s = SCORERS.create("heuristic")
    good = ("A man in a red jacket walks along a rainy street at night, passing lit shop windows. "
            "He stops at a corner, looks at his phone and then crosses the road as a bus arrives. "
            "The mood is quiet and slightly melancholic, with reflections of neon signs on the wet asphalt.")
    assert s.score([good])[0] > 8
    assert s.score(["the the the the the the the the the the the the"])[0] < 4
    assert s.score(["A man walks"])[0] < s.score([good])[0]
    assert s.score([""])[0] == 0.0


def test_debug_logs_prompt_and_full_output_of_first_batch(source: Path, tmp_path: Path, caplog) -> None:
    import logging

    repo = make_repo(tmp_path / "lovr", source)
    with caplog.at_level(logging.INFO, logger="lovr_hf.caption.stage"):
        caption(repo, CaptionConfig(backend="dummy", batch_size=2), RunControl(debug=True))
    debug = [r.getMessage() for r in caplog.records if r.getMessage().startswith("debug:")]
    assert len(debug) == 1  # first batch only
    assert "video analysis assistant" in debug[0] and "The clip shows" in debug[0]


def test_credentials_never_enter_fingerprint_or_manifest(source: Path, tmp_path: Path) -> None:
    a = CaptionStage(CaptionConfig(backend="dummy", backend_options={"api_key": "sk-aaa", "delay_s": 0.0}), "r")
    b = CaptionStage(CaptionConfig(backend="dummy", backend_options={"api_key": "sk-bbb", "delay_s": 0.0}), "r")
    assert a.fingerprint() == b.fingerprint()
    assert "sk-aaa" not in json.dumps(a.fingerprint_payload())
    repo = make_repo(tmp_path / "lovr", source)
    caption(repo, CaptionConfig(backend="dummy", backend_options={"api_key": "sk-aaa"}))
    manifests = list(repo.work_dir("caption").glob("*/stage.json"))
    assert manifests and all("sk-aaa" not in m.read_text() for m in manifests)


def test_decoding_is_planned_per_source_and_bounded_in_bytes(source: Path, tmp_path: Path, monkeypatch) -> None:
    """The stage decodes through the decode plan (one sequential pass per source, the caption rule's
    frames only) and hands it its byte budget (CaptionConfig.prefetch_bytes); skipped clips are not decoded."""
    import lovr_hf.caption.stage as caption_mod
    from lovr_hf.video import decode_plan
    from lovr_hf.video.prefetch import DEFAULT_PREFETCH_BYTES

    seen: dict = {"reads": []}
    real_decoder, real_read = caption_mod.ClipDecoder, decode_plan.iter_targets

    class Recording(real_decoder):
        def __init__(self, rows, indices, **kw):
            seen.update(kw, rows=[r["clip_id"] for r in rows])
            super().__init__(rows, indices, **kw)

    def reading(path, targets, **kw):
        seen["reads"].append((str(path), list(targets)))
        return real_read(path, targets, **kw)

    monkeypatch.setattr(caption_mod, "ClipDecoder", Recording)
    monkeypatch.setattr(decode_plan, "iter_targets", reading)
    repo = make_repo(tmp_path / "lovr", source)
    caption(repo, CaptionConfig(backend="dummy", prefetch_bytes=123_456_789))
    assert seen["max_bytes"] == 123_456_789
    rows = {r["clip_id"]: r for r in repo.read(schema.CLIPS)}
    caps = {r["clip_id"]: r for r in repo.read(schema.CLIP_CAPTIONS)}
    planned = [c for c, r in caps.items() if r["status"] != schema.SKIPPED]
    assert sorted(seen["rows"]) == sorted(planned)  # skipped clips are never decoded
    runs: list[tuple[str, set[int]]] = []  # consecutive planned clips of one file share one pass
    for c in seen["rows"]:
        r = rows[c]
        idx = caption_frame_plan(r["num_frames"], caption_mod.clip_duration(r)).indices
        if not runs or runs[-1][0] != r["path"]:
            runs.append((r["path"], set()))
        runs[-1][1].update(int(r["frame_offset"] or 0) + i for i in idx)
    # one pass per run, converting exactly the frames of the caption rule (the missing file is never read)
    assert sorted(seen["reads"]) == sorted((p, sorted(f)) for p, f in runs if Path(p).exists())
    assert DEFAULT_PREFETCH_BYTES == 2 * 1024**3 >= 5 * 64 * 1920 * 1080 * 3  # 5 clips of 64 frames at 1080p
    assert "prefetch_bytes" in CaptionConfig.RUNTIME  # a memory bound never changes a caption
