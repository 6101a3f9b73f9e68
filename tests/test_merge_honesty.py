"""``lovr merge`` says what the LLM really did: a server that cannot be used stops the command before any row,
and a video whose cluster joins fell back (failed calls or rejected replies) is not reported ``ok``."""

from __future__ import annotations

import socket
from pathlib import Path

from test_merge import caption_rows

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.merge.counts import summarize
from lovr_hf.pipeline import summarize as run_summary
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.testing.fake_openai import Error, FakeOpenAIServer


def small_repo(root: Path) -> BenchmarkRepo:
    """Two videos of 4 clips: one cluster each, so the video caption needs no integration call."""
    repo = BenchmarkRepo(root)
    repo.write(schema.CLIP_CAPTIONS, caption_rows("alpha", 4) + caption_rows("beta", 4))
    return repo


def _merge(repo: BenchmarkRepo, *extra: str) -> int:
    return cli_main(["-q", "merge", "--repo", str(repo.root), "--num-workers", "1", *extra])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_merge_without_key_or_server_fails_before_any_row(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    repo = small_repo(tmp_path / "lovr")
    assert _merge(repo) == 2  # the default --llm openai, no key, official endpoint
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lovr ")]
    assert len(lines) == 1 and "no OPENAI_API_KEY" in lines[0]
    assert not repo.has(schema.CLUSTERS) and not repo.has(schema.VIDEO_CAPTIONS)
    # a local server that is not running
    assert _merge(repo, "--api-base", f"http://127.0.0.1:{_free_port()}/v1", "--max-retries", "0") == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lovr ")]
    assert len(lines) == 1 and "cannot reach the server" in lines[0]
    assert not repo.has(schema.CLUSTERS) and not repo.has(schema.VIDEO_CAPTIONS)


def test_rejected_joins_make_the_video_caption_failed_and_counted(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "lovr")
    with FakeOpenAIServer(lambda body: "Sure!") as srv:  # every join reply too short: rejected by the guard
        rc = _merge(repo, "--api-base", srv.base_url, "--api-model", "fake-model")
        calls = len(srv.chat_requests)
    assert rc == 1  # every unit fell back: nothing the LLM did was used (the original text is kept, labelled)
    clusters = list(repo.read(schema.CLUSTERS))
    assert calls == 6 and [c["llm_calls"] for c in clusters] == [3, 3]  # 4 captions: 3 joins each
    assert all(c["failed_calls"] == 3 and c["rejected_replies"] == 3 for c in clusters)
    vids = list(repo.read(schema.VIDEO_CAPTIONS))
    assert len(vids) == 2
    for v in vids:
        assert v["llm_calls"] == 0 and v["strategy"] == "single"  # one cluster: no integration call
        assert v["status"] == schema.FAILED  # was "ok" although every join fell back
        assert (v["join_calls"], v["join_failed_calls"], v["rejected_replies"]) == (3, 3, 3)
        assert f"cluster {v['video_id']}_0: join 0->1: rejected reply" in v["error"]
    stats = summarize(repo)
    assert stats["rejected_replies"] == 6 and stats["videos_failed"] == 2
    s = run_summary(repo)
    assert (s["merge_calls"], s["merge_failed_calls"], s["merge_rejected_replies"]) == (6, 6, 6)


def test_failed_join_calls_are_failed_with_the_error(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "lovr")
    with FakeOpenAIServer() as srv:
        srv.push(*[Error(500)] * 4)  # the first join of alpha: 4 attempts, all 500
        rc = _merge(repo, "--api-base", srv.base_url, "--max-retries", "3", "--timeout", "5")
    assert rc == 0
    vids = {v["video_id"]: v for v in repo.read(schema.VIDEO_CAPTIONS)}
    alpha, beta = vids["alpha"], vids["beta"]
    assert alpha["status"] == schema.FAILED and alpha["join_failed_calls"] == 1 and alpha["rejected_replies"] == 0
    assert "500" in alpha["error"] and "cluster alpha_0: join" in alpha["error"]
    assert beta["status"] == schema.OK and beta["join_failed_calls"] == 0 and beta["error"] is None
    assert run_summary(repo)["merge_failed_calls"] == 1


def test_strict_counts_fallback_videos(tmp_path: Path) -> None:
    repo = small_repo(tmp_path / "lovr")
    with FakeOpenAIServer() as srv:
        srv.push(*[Error(500)] * 4)
        assert _merge(repo, "--api-base", srv.base_url, "--strict", "--timeout", "5") == 1


def test_merge_with_a_missing_local_llm_fails_before_any_row(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    repo = small_repo(tmp_path / "lovr")
    assert _merge(repo, "--llm", "transformers", "--model-path", "./models/my-llm") == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lovr ")]
    assert len(lines) == 1 and "./models/my-llm" in lines[0] and "does not exist" in lines[0]
    assert not repo.has(schema.CLUSTERS)


def test_run_with_the_default_llm_and_no_key_stops_at_merge(tmp_path: Path, monkeypatch, capsys) -> None:
    """``lovr run`` offline with the default ``--llm openai`` (no key, no server): one line and exit 2 at the
    merge, before any cluster row (it used to mark every row and exit 0)."""
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "v.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=21)
    repo = BenchmarkRepo(tmp_path / "lovr")
    rc = cli_main(["-q", "run", "--input_folder", str(folder), "--repo", str(repo.root), "--captioner", "dummy",
                   "--clip_mode", "virtual"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("lovr ")]
    assert len(lines) == 1 and lines[0].startswith("lovr run: LLM gpt-4o: no OPENAI_API_KEY")
    assert repo.has(schema.CLIP_CAPTIONS) and not repo.has(schema.CLUSTERS) and not repo.has(schema.VIDEO_CAPTIONS)


def test_merge_counts_come_from_the_count_columns_not_the_error_text(tmp_path: Path) -> None:
    """The run summary counts rejected replies from ``rejected_replies`` (joins on the clusters, integrations
    as the video's count less its clusters'); it used to re-parse the ``error`` text, which missed any
    rejection whose reason was not spelled there."""
    from lovr_hf.merge.counts import merge_call_counts
    from lovr_hf.pipeline import summarize as run_summary
    from lovr_hf.repo import BenchmarkRepo

    repo = BenchmarkRepo(tmp_path / "lovr")
    base = {"start_slice_num": 0, "end_slice_num": 1, "clip_count": 2, "caption": "x", "merged_paragraphs": 2,
            "model": "m", "prompt_hash": "h", "status": schema.OK, "error": None}
    repo.write(schema.CLUSTERS, [
        {**base, "video_id": "a", "cluster_id": "a_0", "llm_calls": 3, "failed_calls": 2, "rejected_replies": 1},
        {**base, "video_id": "a", "cluster_id": "a_1", "llm_calls": 2, "failed_calls": 0, "rejected_replies": 0},
        {**base, "video_id": "b", "cluster_id": "b_0", "llm_calls": 1, "failed_calls": 1, "rejected_replies": 1}])
    vbase = {"caption": "x", "cluster_ids": [], "clip_ids": [], "strategy": "iterative", "model": "m",
             "prompt_hash": "h", "status": schema.FAILED, "error": None}
    repo.write(schema.VIDEO_CAPTIONS, [
        {**vbase, "video_id": "a", "llm_calls": 1, "failed_calls": 1, "join_calls": 5, "join_failed_calls": 2,
         "rejected_replies": 2},  # 1 rejected join + 1 rejected integration
        {**vbase, "video_id": "b", "llm_calls": 0, "failed_calls": 0, "join_calls": 1, "join_failed_calls": 1,
         "rejected_replies": 1}])
    c = merge_call_counts(repo)
    assert (c["join_calls"], c["join_failed_calls"], c["join_rejected"]) == (6, 3, 2)
    assert (c["integrate_calls"], c["integrate_failed_calls"], c["integrate_rejected"]) == (1, 1, 1)
    s = run_summary(repo)
    assert (s["merge_calls"], s["merge_failed_calls"], s["merge_rejected_replies"]) == (7, 4, 3)  # before: 0 rejected
    from lovr_hf.report.summary import merge_line

    assert merge_line(s) == ("merge texts: 7 (6 joins + 1 integrations): 3 by the LLM, 4 kept the original text "
                             "(3 LLM replies rejected by the reply guard, 1 failed calls)")
