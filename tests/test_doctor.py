"""lovr doctor: finds a garbled card, tampered shards, garbled work state, temp leftovers and credentials;
--fix repairs what can be repaired in place, and names the command for the rest (issue #22)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.cli import doctor
from lovr_hf.engine.workdir import committed_batches
from lovr_hf.integrity import CorruptCardError
from lovr_hf.repo import BenchmarkRepo
from tests.test_stage import ToyConfig, ToyStage


def _run(repo: BenchmarkRepo, fix: bool = False) -> int:
    return doctor.main(argparse.Namespace(repo=str(repo.root), fix=fix))


def _repo(tmp_path: Path) -> BenchmarkRepo:
    repo = BenchmarkRepo(tmp_path / "lovr")
    ToyStage(ToyConfig()).apply(Dataset.from_dict({"video_id": [f"v{i}" for i in range(6)]}), repo)
    repo.write(schema.SPLITS, [{"clip_id": "v1-Scene-001", "video_id": "v1", "split": "test"}])
    return repo


def test_doctor_rebuilds_an_invalid_card_from_the_shards(tmp_path: Path, caplog) -> None:
    repo = _repo(tmp_path)
    want = {c: repo.read(c).to_list() for c in repo.configs()}
    repo.card_path.write_text("---\nconfigs: [ {config_name: videos\n---\n")
    with pytest.raises(CorruptCardError):
        repo.configs()
    assert _run(repo) == 1 and "README.md" in caplog.text and "PROBLEM" in caplog.text
    assert _run(repo, fix=True) == 0
    assert {c: repo.read(c).to_list() for c in repo.configs()} == want
    assert _run(repo) == 0


def test_doctor_names_the_command_for_a_tampered_shard_and_sets_garbled_batches_aside(tmp_path: Path, caplog) -> None:
    repo = _repo(tmp_path)
    shard = repo.root / repo.config_files()[schema.VIDEOS][0]
    pq.write_table(pq.read_table(shard).slice(0, 3), shard)
    work = ToyStage(ToyConfig()).work_path(repo)
    batch = committed_batches(work)[0]
    (batch / "videos.parquet").write_bytes(b"PAR1 garbage")
    from lovr_hf.repo import _host_tag

    tmp = work / f".tmp-{_host_tag()}~123-999999-abcdef"  # a commit of a writer that died
    tmp.mkdir()
    with caplog.at_level(logging.INFO):
        assert _run(repo, fix=True) == 1
    text = caplog.text
    assert "videos: " in text and "taken out of the index" in text and "now run: lovr segment --repo" in text
    assert not repo.has(schema.VIDEOS) and repo.verify() == {}
    assert "does not match the SHA-256 of its commit -> set aside" in text
    assert (batch.parent / ("corrupt-" + batch.name)).is_dir() and not tmp.exists()
    # the stage's plain rerun recomputes the set-aside units and rebuilds the tampered table
    res = ToyStage(ToyConfig()).apply(Dataset.from_dict({"video_id": [f"v{i}" for i in range(6)]}), repo)
    assert res.processed == 2 and len(repo.read(schema.VIDEOS)) == 6
    assert _run(repo) == 0


def test_doctor_redacts_credentials_left_in_a_run_config(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo.root / "run_config.json").write_text(json.dumps({"caption": {"api_base": "http://u:pw@h/v1"}}))
    assert _run(repo) == 1
    assert _run(repo, fix=True) == 0
    assert "pw@" not in (repo.root / "run_config.json").read_text()
