"""Failure classes and exit codes through ``lovr`` itself: a model that cannot load stops ``lovr eval`` before
any row (one line, exit 2, no table written); a mistyped ``--repo`` creates nothing; a plug-in whose every call
raises a programming error exits non-zero with the bug recorded on its rows; usage errors are one line."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest
from _caption_helpers import FPS, clip_row
from test_embed import make_repo
from test_merge import caption_rows

from lovr_hf import schema
from lovr_hf.backends.standins.testing import DummyCaptioner
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.failures import BUG_MARKER, classify, is_bug_text
from lovr_hf.repo import BenchmarkRepo


def _lovr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("lovr ")]


def _configs(repo: BenchmarkRepo) -> dict[str, list[str]]:
    return {k: list(v) for k, v in repo.config_files().items()}


@pytest.mark.parametrize("model, says, protocol", [
    ("./models/my-clip", "does not exist", "lovr"),
    ("openai/clip-vit-base-patch32", "not in the local Hugging Face cache and HF_HUB_OFFLINE is set", "lovr"),
    # CLIP under the original protocol is wrapped to receive BGR frames: the wrapper must load its model too
    ("openai/clip-vit-base-patch32", "not in the local Hugging Face cache and HF_HUB_OFFLINE is set", "original"),
])
def test_eval_model_that_cannot_load_stops_before_any_row(model: str, says: str, protocol: str, eval_source: Path,
                                                          tmp_path: Path, monkeypatch, capsys) -> None:
    from lovr_hf.evaluation.models import EmbedConfig, swaps_channels

    assert swaps_channels(EmbedConfig(model=model, protocol=protocol)) == (protocol == "original")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    repo = make_repo(tmp_path / "lovr", eval_source)
    before = _configs(repo)
    t0 = time.perf_counter()
    rc = cli_main(["-q", "eval", "--repo", str(repo.root), "--model", model, "--device", "cpu",
                   "--protocol", protocol])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2
    lines = _lovr_lines(err)
    assert len(lines) == 1 and says in lines[0] and model in lines[0], err
    assert "Traceback" not in err
    assert _configs(repo) == before  # no embeddings, rankings or results config written
    assert not any(c.startswith(("embeddings-", "rankings-")) for c in before)
    assert took < 120  # one load attempt, not one per row


def test_eval_on_a_mistyped_repo_creates_nothing(tmp_path: Path, capsys) -> None:
    typo = tmp_path / "lovrr"
    assert cli_main(["-q", "eval", "--repo", str(typo), "--model", "dummy"]) == 2
    lines = _lovr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is not a benchmark repo" in lines[0]
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["-q", "eval", "--repo", str(empty), "--model", "dummy"]) == 2
    assert list(empty.iterdir()) == []


class BrokenCaptioner(DummyCaptioner):
    """A plug-in with a bug: every call raises ``AttributeError``."""

    def caption(self, batch, prompt, params):
        return [self.no_such_attribute for _ in batch]


@pytest.fixture(scope="module")
def caption_source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fail_src")
    make_video(d / "v.mp4", [SceneSpec(60), SceneSpec(60)], 96, 64, FPS, seed=3)
    return d / "v.mp4"


def test_plugin_bug_fails_rows_with_the_bug_and_exits_non_zero(caption_source: Path, tmp_path: Path,
                                                                capsys) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, [clip_row(caption_source, "v", 1, 0, 60), clip_row(caption_source, "v", 2, 60, 60)])
    rc = cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "test_failures:BrokenCaptioner"])
    assert rc == 1  # without --strict
    rows = list(repo.read(schema.CLIP_CAPTIONS))
    assert len(rows) == 2 and all(r["status"] == schema.FAILED for r in rows)
    assert all(r["error"].startswith(f"{BUG_MARKER}AttributeError") and "no_such_attribute" in r["error"]
               and "test_failures.py" in r["error"] for r in rows)
    # the working captioner on the same repo: every row ok, exit 0
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy", "--retry-failed"]) == 0
    assert {r["status"] for r in repo.read(schema.CLIP_CAPTIONS)} == {schema.OK}


def test_every_row_failed_exits_non_zero_without_strict(caption_source: Path, tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, [clip_row(caption_source, "v", 1, 0, 60), clip_row(caption_source, "v", 2, 60, 60)])
    # the dummy captioner fails clips of these frame counts (a failed call, not a bug)
    opts = ["--backend-option", "fail_frame_counts=[8]"]
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy", *opts]) == 1
    rows = list(repo.read(schema.CLIP_CAPTIONS))
    assert {r["status"] for r in rows} == {schema.FAILED} and not any(is_bug_text(r["error"]) for r in rows)


def test_classify_separates_bugs_from_environment_faults() -> None:
    try:
        {}["x"]
    except KeyError as exc:
        f = classify(exc)
    assert f.status == schema.FAILED and f.bug and f.message.startswith("bug: KeyError") and "test_failures.py" in f.message
    f = classify(OSError(errno.ENOSPC, "No space left on device", "/data/x.arrow"))
    assert f.status == schema.FAILED and not f.bug and not is_bug_text(f.message)
    assert is_bug_text("clip v-Scene-001: bug: TypeError: x") and not is_bug_text("HTTP 500: debug: x")


def test_unreadable_clip_is_error_but_a_refused_permission_is_failed(caption_source: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """A clip that does not decode is bad input (``error``); one the OS refuses to open is the environment's
    fault (``failed``, retried by ``--retry-failed`` once fixed)."""
    import lovr_hf.video.decode_plan as decode_plan

    locked = tmp_path / "locked.mp4"
    locked.write_bytes(caption_source.read_bytes())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 50)
    real_probe = decode_plan.probe

    def probe(path, *a, **k):
        if str(path).endswith("locked.mp4"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_probe(path, *a, **k)

    monkeypatch.setattr(decode_plan, "probe", probe)
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, [clip_row(caption_source, "v", 1, 0, 60), clip_row(caption_source, "v", 2, 0, 60,
                                                                                 path=str(locked)),
                              clip_row(caption_source, "v", 3, 0, 60, path=str(broken))])
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy"]) == 0
    rows = {r["clip_id"]: r for r in repo.read(schema.CLIP_CAPTIONS)}
    assert rows["v-Scene-001"]["status"] == schema.OK
    assert rows["v-Scene-002"]["status"] == schema.FAILED and "Permission denied" in rows["v-Scene-002"]["error"]
    assert rows["v-Scene-003"]["status"] == schema.ERROR
    monkeypatch.setattr(decode_plan, "probe", real_probe)  # permission fixed: --retry-failed redoes that clip
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy", "--retry-failed"]) == 0
    rows = {r["clip_id"]: r for r in repo.read(schema.CLIP_CAPTIONS)}
    assert rows["v-Scene-002"]["status"] == schema.OK and rows["v-Scene-003"]["status"] == schema.ERROR


def test_caption_with_a_missing_local_model_stops_before_any_row(caption_source: Path, tmp_path: Path,
                                                                 monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, [clip_row(caption_source, "v", 1, 0, 60)])
    rc = cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "transformers", "--model-path",
                   "./models/my-vlm", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = _lovr_lines(err)
    assert len(lines) == 1 and "./models/my-vlm" in lines[0] and "does not exist" in lines[0]
    assert not repo.has(schema.CLIP_CAPTIONS)


def test_merge_with_a_wrapped_llm_that_cannot_load_stops_before_any_row(tmp_path: Path, monkeypatch,
                                                                         capsys) -> None:
    """The demo's guarded merger wraps the transformers LLM; its weights are loaded before any row (it declared no
    ``load``, so a missing model folder used to fail every cluster row, one load attempt each)."""
    monkeypatch.chdir(tmp_path)
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIP_CAPTIONS, caption_rows("v", 3))
    rc = cli_main(["-q", "merge", "--repo", str(repo.root), "--llm",
                   "lovr_hf.backends.standins.demo_merge:GuardedMerger", "--model-path", "./models/my-llm"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = _lovr_lines(err)
    assert len(lines) == 1 and "./models/my-llm" in lines[0] and "does not exist" in lines[0], err
    assert not repo.has(schema.CLUSTERS) and not repo.has(schema.VIDEO_CAPTIONS)


def test_decode_reasons_follow_the_one_failure_rule() -> None:
    """The decode plan stored every reading failure as ``cannot decode clip: Type: msg``, so a bug in the
    decoding code (or a full disk) became a bad-input ``error`` row and the command exited 0."""
    import errno

    from lovr_hf.failures import is_bug_text, reason_status
    from lovr_hf.video.decode_plan import error_text
    from lovr_hf.video.frame_index import VideoError

    bug = error_text(AttributeError("'NoneType' object has no attribute 'decode'"))
    assert is_bug_text(bug) and reason_status(bug) == schema.FAILED
    full = error_text(OSError(errno.ENOSPC, "No space left on device", "/tmp/x"))
    assert not is_bug_text(full) and reason_status(full) == schema.FAILED
    bad = error_text(VideoError("moov atom not found"))
    assert bad.startswith("cannot decode clip: ") and reason_status(bad) == schema.ERROR
