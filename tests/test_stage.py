"""The resumable map engine: commits per batch, resume, rerun, retry-failed, shards, num_proc."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.engine.dist import Shard, shard_range
from lovr_hf.engine.stage import Stage
from lovr_hf.engine.workdir import committed_batches, completed_keys
from lovr_hf.repo import BenchmarkRepo


@dataclasses.dataclass
class ToyConfig:
    batch_size: int = 2
    factor: float = 1.0
    crash_on: str = ""  # runtime-only: simulated kill
    fail_on: str = ""
    fail_error: str = "boom"
    runtime_fields = ("crash_on", "fail_on", "fail_error")


class ToyStage(Stage):
    """videos-in -> videos rows with duration = factor * len(name); expands nothing."""

    name = "toy"
    input_key = schema.VIDEO_ID
    outputs = (schema.VIDEOS,)
    status_config = schema.VIDEOS
    runtime_fields = ("crash_on", "fail_on", "fail_error")

    def process(self, batch):
        rows = []
        for vid in batch["video_id"]:
            if vid == self.config.crash_on:
                raise KeyboardInterrupt("simulated kill")
            bad = vid in self.config.fail_on.split(",")
            rows.append({"video_id": vid, "source_name": vid, "path": "/x", "duration_s": self.config.factor * len(vid),
                         "fps": 1.0, "num_frames": 1, "width": 1, "height": 1, "rotation": 0, "threshold": None,
                         "status": schema.FAILED if bad else schema.OK,
                         "error": self.config.fail_error if bad else None})
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


# ---- environment faults, garbled work state, tampered outputs (issue #22) -----------------------------------


def test_disk_full_at_commit_is_one_clear_error_leaves_no_temp_folder_and_a_plain_rerun_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from lovr_hf.engine import workdir
    from lovr_hf.integrity import EnvironmentFault

    ds = inputs(7)
    repo = BenchmarkRepo(tmp_path / "lovr")
    real = workdir._write_synced
    budget = {"writes": 4}  # two batches' worth of files, then the disk is full

    def full_disk(path, data):
        if budget["writes"] <= 0:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])  # a partial file, as a real ENOSPC leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        budget["writes"] -= 1
        real(path, data)

    monkeypatch.setattr(workdir, "_write_synced", full_disk)
    with pytest.raises(EnvironmentFault, match=r"no space left on device.*rerun the same command") as exc:
        ToyStage(ToyConfig()).apply(ds, repo)
    assert "\n" not in str(exc.value)
    work = ToyStage(ToyConfig()).work_path(repo)
    assert not list(work.glob(".tmp-*")), "a failed commit left its temp folder"
    assert len(committed_batches(work)) == 2
    monkeypatch.setattr(workdir, "_write_synced", real)  # space freed
    res = ToyStage(ToyConfig()).apply(ds, repo)
    assert res.processed == 3 and res.complete and len(repo.read(schema.VIDEOS)) == 7


def test_rows_failed_by_the_machine_retry_without_retry_failed(tmp_path: Path) -> None:
    ds = inputs(5)
    repo = BenchmarkRepo(tmp_path / "lovr")
    env_bad, input_bad = ds[1]["video_id"], ds[3]["video_id"]
    ToyStage(ToyConfig(fail_on=env_bad, fail_error="cannot write clip: [Errno 28] No space left on device")).apply(
        ds, repo)
    ToyStage(ToyConfig(fail_on=input_bad)).apply(ds, repo)  # a plain rerun: the disk-full unit is retried
    rows = {r["video_id"]: r["status"] for r in repo.read(schema.VIDEOS).to_list()}
    assert rows[env_bad] == schema.OK
    res = ToyStage(ToyConfig()).apply(ds, repo)  # a failure of the input itself waits for --retry-failed
    assert res.processed == 0


def test_a_garbled_done_json_is_set_aside_and_its_units_recomputed(tmp_path: Path, caplog) -> None:
    ds = inputs(6)
    repo = BenchmarkRepo(tmp_path / "lovr")
    ToyStage(ToyConfig()).apply(ds, repo)
    work = ToyStage(ToyConfig()).work_path(repo)
    batch = committed_batches(work)[1]
    (batch / "done.json").write_text('{"keys": ["v0')  # truncated
    res = ToyStage(ToyConfig()).apply(ds, repo)
    assert res.processed == 2 and len(repo.read(schema.VIDEOS)) == 6
    assert "garbled" in caplog.text and (work / ("corrupt-" + batch.name)).is_dir()


def test_a_tampered_output_is_rebuilt_from_the_work_state_by_a_plain_rerun(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    ds = inputs(7)
    repo = BenchmarkRepo(tmp_path / "lovr")
    ToyStage(ToyConfig()).apply(ds, repo)
    want = repo.read(schema.VIDEOS).to_list()
    shard = repo.root / repo.config_files()[schema.VIDEOS][0]
    pq.write_table(pq.read_table(shard).slice(0, 4), shard)
    res = ToyStage(ToyConfig()).apply(ds, repo)
    assert res.processed == 0  # nothing recomputed: the committed work rebuilds the table
    assert repo.read(schema.VIDEOS).to_list() == want


def test_a_second_writer_of_a_stage_waits_or_reports_who_holds_the_repo(tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys
    import textwrap

    from lovr_hf.locks import RepoBusyError, writer_lock

    repo = BenchmarkRepo(tmp_path / "lovr")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from lovr_hf.locks import writer_lock
        with writer_lock({str(repo.work_root)!r}, "toy"):
            print("held", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("LOVR_LOCK_TIMEOUT", "0.5")
        with pytest.raises(RepoBusyError, match=rf"repo is busy: pid {holder.pid} on .* runs toy since"):
            ToyStage(ToyConfig()).apply(inputs(3), repo)
        with writer_lock(repo.work_root, "toy", rank=1, world_size=2):  # another chunk runs alongside
            pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died (kill -9): its lock went with it, a rerun proceeds at once
    res = ToyStage(ToyConfig()).apply(inputs(3), repo)
    assert res.complete and len(repo.read(schema.VIDEOS)) == 3


def test_two_gathers_of_one_stage_never_interleave(tmp_path: Path, monkeypatch) -> None:
    """Chunks hold only their own rank's lock, so two chunks finishing together both gathered, each reading
    the old tables and writing new ones; the gather now holds the stage's gather lock."""
    import subprocess
    import sys
    import textwrap

    from lovr_hf.locks import RepoBusyError

    repo = BenchmarkRepo(tmp_path / "lovr")
    ToyStage(ToyConfig()).apply(inputs(3), repo, gather=False)  # work committed, not yet gathered
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from lovr_hf.locks import writer_lock
        with writer_lock({str(repo.work_root)!r}, "toy-gather"):
            print("held", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("LOVR_LOCK_TIMEOUT", "0.5")
        with pytest.raises(RepoBusyError, match=r"runs toy-gather since"):
            ToyStage(ToyConfig()).gather(repo, inputs(3))
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.delenv("LOVR_LOCK_TIMEOUT")
    ToyStage(ToyConfig()).gather(repo, inputs(3))
    assert len(repo.read(schema.VIDEOS)) == 3
