"""Merge stage through a real OpenAI-protocol HTTP server on 127.0.0.1 (good answers and faults)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from conftest import killed_on_call

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.engine.control import RunControl
from lovr_hf.merge.config import MergeConfig
from lovr_hf.merge.jsonl import merge_jsonl
from lovr_hf.merge.stage import ClusterStage, merge
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.testing.fake_openai import Error, FakeOpenAIServer, Garbage, Hang, RateLimit


def caption_rows(video_id: str, n: int) -> list[dict]:
    return [
        {"clip_id": schema.clip_id_for(video_id, k), "video_id": video_id, "slice_num": k,
         "caption": f"Clip {k} of {video_id} opens on a street.\nA person in clip {k} walks to a red door.",
         "model": "m", "prompt_hash": "h", "quality_score": None, "attempts": 1, "num_frames_used": 8,
         "settings": "{}", "status": schema.OK, "error": None}
        for k in range(1, n + 1)
    ]


def make_repo(root: Path) -> BenchmarkRepo:
    repo = BenchmarkRepo(root)
    rows = caption_rows("alpha", 23) + caption_rows("beta", 3)
    rows[5]["status"] = schema.SKIPPED  # a skipped clip keeps its place in its run of 10, without text
    rows[5]["caption"] = ""
    repo.write(schema.CLIP_CAPTIONS, rows)
    return repo


def cfg(srv: FakeOpenAIServer, **kw) -> MergeConfig:
    base = dict(llm="openai", api_base=srv.base_url, api_model="fake-model", num_workers=3, timeout=2.0,
                max_retries=3)
    return MergeConfig(**{**base, **kw})


def test_clusters_and_video_captions_with_good_server(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    repo = make_repo(tmp_path / "lovr")
    with FakeOpenAIServer() as srv, caplog.at_level(logging.DEBUG):
        res = merge(repo, cfg(srv, theme=True))
        requests = srv.chat_requests
    clusters = repo.read(schema.CLUSTERS)
    assert clusters["cluster_id"] == ["alpha_0", "alpha_1", "alpha_2", "beta_0"]
    assert clusters["clip_count"] == [10, 10, 3, 3]  # every caption row of alpha (23), as the original
    assert (clusters[1]["start_slice_num"], clusters[1]["end_slice_num"]) == (11, 20)
    assert clusters[0]["error"] == "left out 1 clip(s) without a usable caption: alpha-Scene-006 (skipped)"
    assert "clip 6 of alpha" not in clusters[0]["caption"].lower()
    first = clusters[0]["caption"].split("\n")
    assert first[0] == "Clip 1 of alpha opens on a street."
    assert first[2] == "Then, clip 2 of alpha opens on a street."  # the join rewritten by the LLM
    assert clusters[0]["caption"].index("clip 9 of alpha") < clusters[0]["caption"].index("clip 10 of alpha")
    assert clusters[0]["llm_calls"] == 8 and set(clusters["status"]) == {schema.OK}  # 9 texts, 8 joins
    vids = repo.read(schema.VIDEO_CAPTIONS)
    assert vids["video_id"] == ["alpha", "beta"]
    assert vids[0]["cluster_ids"] == ["alpha_0", "alpha_1", "alpha_2"]
    assert vids[0]["clip_ids"] == [schema.clip_id_for("alpha", k) for k in range(1, 24)]  # every clip, in order
    assert "After that," in vids[0]["caption"]
    assert vids[0]["strategy"].startswith("sequential:")
    themes = repo.read(schema.THEME_CAPTIONS)
    assert themes.num_rows == 2 and all(t.strip() for t in themes["caption"])
    assert res.stats["clusters"] == 4
    assert all(r.authorization == "Bearer sk-test-secret-123" for r in requests)
    assert "sk-test-secret-123" not in caplog.text
    assert "sk-test-secret-123" not in (repo.root / "README.md").read_text()


def test_faulty_server_run_completes_and_records(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr")
    with FakeOpenAIServer() as srv:
        # 500 then ok, 429 with Retry-After then ok, a hang past the timeout then ok, garbage 4x (fails)
        srv.push(Error(500), RateLimit(retry_after=0.2), Hang(seconds=5),
                 Garbage("not_json"), Garbage("not_json"), Garbage("not_json"), Garbage("not_json"))
        merge(repo, cfg(srv, video_captions=False, num_workers=1))
        n_requests = len(srv.chat_requests)
    clusters = repo.read(schema.CLUSTERS)
    assert clusters.num_rows == 4  # nothing lost
    total_calls = sum(clusters["llm_calls"])
    assert n_requests > total_calls  # retries happened
    failed = [r for r in clusters if r["status"] == schema.FAILED]
    assert failed and all(r["failed_calls"] >= 1 and r["error"] for r in failed)
    # the failed join kept both original paragraphs
    assert "Clip 2 of alpha opens on a street." in failed[0]["caption"] or failed[0]["cluster_id"] != "alpha_0"
    with FakeOpenAIServer() as srv:
        res = merge(repo, cfg(srv, video_captions=False, num_workers=1), RunControl(retry_failed=True))
    assert res.processed == len(failed)
    assert set(repo.read(schema.CLUSTERS)["status"]) == {schema.OK}


def test_resume_after_kill_equals_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    ref = make_repo(tmp_path / "ref")
    merge(ref, MergeConfig(llm="dummy", num_workers=2))
    repo = make_repo(tmp_path / "lovr")
    with killed_on_call(monkeypatch, ClusterStage):
        merge(repo, MergeConfig(llm="dummy", num_workers=2))
    assert not repo.has(schema.CLUSTERS) and not repo.has(schema.VIDEO_CAPTIONS)
    res = merge(repo, MergeConfig(llm="dummy", num_workers=2))
    assert res.processed == 2 + 2  # the two clusters left + two videos
    for config in (schema.CLUSTERS, schema.VIDEO_CAPTIONS):
        assert repo.read(config).to_list() == ref.read(config).to_list()


def test_original_jsonl_mode_in_out_and_resume(tmp_path: Path) -> None:
    caps = tmp_path / "caps.jsonl"
    rows = [{"vid": r["video_id"], "slice_num": r["slice_num"], "cap": r["caption"]} for r in caption_rows("v", 23)]
    rows.reverse()  # order in the file does not matter; numeric slice order does
    caps.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "merged.jsonl"
    # a previous run died mid-line after writing cluster v_0
    first = {"vid": "v", "start_slice_num": 1, "end_slice_num": 10, "cap": "kept from before", "clip_count": 10,
             "cluster_id": "v_0", "merged_paragraphs": 2}
    out.write_text(json.dumps(first) + "\n" + '{"vid": "v", "start_sl')
    rc = cli_main(["-q", "merge", "--cap-file", str(caps), "--result-file", str(out), "--num-workers", "2",
                   "--llm", "dummy"])
    assert rc == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["cluster_id"] for g in got] == ["v_0", "v_1", "v_2"]
    assert got[0]["cap"] == "kept from before"
    assert [(g["start_slice_num"], g["end_slice_num"], g["clip_count"]) for g in got[1:]] == [(11, 20, 10), (21, 23, 3)]
    assert set(got[1]) >= {"vid", "start_slice_num", "end_slice_num", "cap", "clip_count", "cluster_id",
                           "merged_paragraphs"}
    assert merge_jsonl(str(caps), str(out), MergeConfig(llm="dummy")) == 0  # nothing left


def test_jsonl_resume_rewrite_never_truncates_finished_clusters(tmp_path: Path, monkeypatch) -> None:
    """Dropping a torn tail rewrites the result file; dying in that rewrite must keep every finished line."""
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"vid": "v", "slice_num": i, "cap": f"clip {i}."}) + "\n" for i in range(1, 21)))
    out = tmp_path / "merged.jsonl"
    done = {"vid": "v", "start_slice_num": 1, "end_slice_num": 10, "cap": "finished", "clip_count": 10,
            "cluster_id": "v_0", "merged_paragraphs": 1}
    before = json.dumps(done) + "\n" + '{"vid": "v", "start_sl'
    out.write_text(before)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed during the rewrite")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        merge_jsonl(str(caps), str(out), MergeConfig(llm="dummy"))
    monkeypatch.undo()
    assert out.read_text() == before  # untouched, not truncated
    assert merge_jsonl(str(caps), str(out), MergeConfig(llm="dummy")) == 1
    assert [json.loads(line)["cluster_id"] for line in out.read_text().splitlines()] == ["v_0", "v_1"]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["caps.jsonl", "merged.jsonl"]


def test_reply_that_drops_a_paragraph_keeps_the_originals() -> None:
    from lovr_hf.backends.standins.chat_llms import ScriptedLLM
    from lovr_hf.merge.text import smooth_group

    prev = "A man walks down a rainy street at night, passing shops."
    nxt = "He stops at a corner, checks his phone and crosses as a bus arrives."
    echo = f"{prev}\n{prev}"  # what a tiny model does: repeat the first paragraph, lose the second
    res = smooth_group([prev, nxt], ScriptedLLM([echo]))
    assert res.caption == f"{prev}\n{nxt}" and res.failed_calls == 1 and "dropped" in res.error
    good = ScriptedLLM([f"{prev}\nThen he stops at a corner, checks his phone and crosses as a bus arrives."])
    assert smooth_group([prev, nxt], good).failed_calls == 0


def test_jsonl_mode_where_no_join_succeeds_exits_non_zero(tmp_path: Path, monkeypatch) -> None:
    """The original JSONL mode exited 0 whatever happened to its joins: a run where nothing was merged (every
    call failed) keeps its lines (original text, counted) but exits 1; one good join is a success."""
    import lovr_hf.merge.jsonl as merge_mod
    from lovr_hf.backends.standins.chat_llms import ScriptedLLM

    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"vid": v, "slice_num": i, "cap": f"{v} clip {i} shows a red car."}) + "\n"
                            for v in ("a", "b") for i in range(1, 4)))
    out = tmp_path / "merged.jsonl"
    down = ScriptedLLM(default=ConnectionError("connection refused by 127.0.0.1:9"))
    monkeypatch.setattr(merge_mod, "make_llm", lambda config: down)
    args = ["-q", "merge", "--cap-file", str(caps), "--result-file", str(out), "--llm", "dummy", "--num-workers", "1"]
    assert cli_main(args) == 1
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["cluster_id"] for g in got] == ["a_0", "b_0"] and all(g["failed_calls"] == 2 for g in got)
    out.unlink()
    monkeypatch.setattr(merge_mod, "make_llm", lambda config: ScriptedLLM())  # the fake server's honest joins
    assert cli_main(args) == 0
    assert all(json.loads(line)["failed_calls"] == 0 for line in out.read_text().splitlines())
