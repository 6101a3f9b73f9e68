"""The resumable map engine: commits per batch, resume, rerun, retry-failed, shards, num_proc."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.dist import Shard, shard_range
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stage import Stage, committed_batches, completed_keys


@dataclasses.dataclass
class ToyConfig:
    batch_size: int = 2
    factor: float = 1.0
    crash_on: str = ""  # runtime-only: simulated kill
    fail_on: str = ""
    runtime_fields = ("crash_on", "fail_on")


class ToyStage(Stage):
    """videos-in -> videos rows with duration = factor * len(name); expands nothing."""

    name = "toy"
    input_key = schema.VIDEO_ID
    outputs = (schema.VIDEOS,)
    status_config = schema.VIDEOS
    runtime_fields = ("crash_on", "fail_on")

    def process(self, batch):
        rows = []
        for vid in batch["video_id"]:
            if vid == self.config.crash_on:
                raise KeyboardInterrupt("simulated kill")
            bad = vid in self.config.fail_on.split(",")
            rows.append({"video_id": vid, "source_name": vid, "path": "/x", "duration_s": self.config.factor * len(vid),
                         "fps": 1.0, "num_frames": 1, "width": 1, "height": 1, "rotation": 0, "threshold": None,
                         "status": schema.FAILED if bad else schema.OK, "error": "boom" if bad else None})
        return {schema.VIDEOS: rows}


def inputs(n: int = 7) -> Dataset:
    return Dataset.from_dict({"video_id": [f"v{i:02d}" + "x" * i for i in range(n)]})


def test_fingerprint_ignores_runtime_fields() -> None:
    assert ToyStage(ToyConfig(crash_on="a")).fingerprint() == ToyStage(ToyConfig()).fingerprint()
    assert ToyStage(ToyConfig(factor=2)).fingerprint() != ToyStage(ToyConfig()).fingerprint()


def test_resume_after_kill_gives_same_rows(tmp_path: Path) -> None:
    ds = inputs()
    ref = BenchmarkRepo(tmp_path / "ref")
    ToyStage(ToyConfig()).apply(ds, ref)
    expected = ref.read(schema.VIDEOS).to_list()

    repo = BenchmarkRepo(tmp_path / "lovr")
    with pytest.raises(KeyboardInterrupt):
        ToyStage(ToyConfig(crash_on=ds[4]["video_id"])).apply(ds, repo)
    assert len(committed_batches(ToyStage(ToyConfig()).work_path(repo))) == 2  # batches 0-1, 2-3 committed
    assert not repo.has(schema.VIDEOS)
    res = ToyStage(ToyConfig()).apply(ds, repo)
    assert res.skipped_done == 4 and res.processed == 3
    assert repo.read(schema.VIDEOS).to_list() == expected
    again = ToyStage(ToyConfig()).apply(ds, repo)
    assert again.processed == 0
    assert repo.read(schema.VIDEOS).to_list() == expected


def test_retry_failed_reprocesses_only_failed_rows(tmp_path: Path) -> None:
    ds = inputs(5)
    repo = BenchmarkRepo(tmp_path / "lovr")
    bad = ds[1]["video_id"]
    ToyStage(ToyConfig(fail_on=bad)).apply(ds, repo)
    assert repo.read(schema.VIDEOS).filter(lambda r: r["status"] == schema.FAILED)["video_id"] == [bad]
    res = ToyStage(ToyConfig()).apply(ds, repo, retry_failed=True)
    assert res.processed == 1
    rows = repo.read(schema.VIDEOS)
    assert rows.num_rows == 5 and set(rows["status"]) == {schema.OK}  # superseded, not duplicated


def test_rerun_recomputes_and_resumes_itself(tmp_path: Path) -> None:
    ds = inputs(5)
    repo = BenchmarkRepo(tmp_path / "lovr")
    ToyStage(ToyConfig()).apply(ds, repo)
    with pytest.raises(KeyboardInterrupt):
        ToyStage(ToyConfig(crash_on=ds[3]["video_id"])).apply(ds, repo, rerun=True)
    res = ToyStage(ToyConfig()).apply(ds, repo, rerun=True)
    assert res.processed == 3  # the killed rerun's first batch (2 rows) counts
    assert repo.read(schema.VIDEOS).num_rows == 5
    assert ToyStage(ToyConfig()).apply(ds, repo, rerun=True).processed == 5  # a new rerun starts over


def test_manual_chunks_then_gather_equal_single_run(tmp_path: Path) -> None:
    ds = inputs(9)
    single = BenchmarkRepo(tmp_path / "single")
    ToyStage(ToyConfig()).apply(ds, single)
    repo = BenchmarkRepo(tmp_path / "chunks")
    owned = []
    for idx in range(3):
        shard = Shard(idx, 3)
        owned += list(shard_range(len(ds), shard))
        ToyStage(ToyConfig()).apply(ds, repo, shard=shard)
        assert repo.has(schema.VIDEOS) == (idx == 2)  # the chunk finishing last gathers
    assert owned == list(range(9))
    assert repo.read(schema.VIDEOS).to_list() == single.read(schema.VIDEOS).to_list()


def test_num_proc_2_equals_num_proc_1(tmp_path: Path) -> None:
    ds = inputs(6)
    a, b = BenchmarkRepo(tmp_path / "a"), BenchmarkRepo(tmp_path / "b")
    ToyStage(ToyConfig()).apply(ds, a)
    ToyStage(ToyConfig()).apply(ds, b, num_proc=2)
    assert a.read(schema.VIDEOS).to_list() == b.read(schema.VIDEOS).to_list()
    assert completed_keys(ToyStage(ToyConfig()).work_path(b)) == set(ds["video_id"])
