"""Reads verify shards once per process while the files are unchanged; a changed file is hashed again; the
recorded hashes keep only shards the index lists (a retired shard's hash goes with it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lovr_hf import integrity, schema
from lovr_hf.integrity import SHARD_HASHES, CorruptShardError
from lovr_hf.repo import BenchmarkRepo
from tests.test_repo import clip_rows


def _age(repo: BenchmarkRepo, config: str, seconds: float = 60.0) -> None:
    """Make the shards look written a minute ago (a repo built by an earlier command)."""
    for f in repo.config_files()[config]:
        st = os.stat(repo.root / f)
        os.utime(repo.root / f, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = integrity.shard_problem

    def counting(root, config, files, blobs, recorded):  # type: ignore[no-untyped-def]
        calls.append(config)
        return real(root, config, files, blobs, recorded)

    monkeypatch.setattr(integrity, "shard_problem", counting)
    return calls


def test_a_config_read_several_times_is_hashed_once(tmp_path: Path, hashed: list[str]) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 6))
    _age(repo, schema.CLIPS)
    first = repo.read_table(schema.CLIPS)
    assert repo.read_table(schema.CLIPS).equals(first)
    assert repo.read_columns(schema.CLIPS, ["clip_id"]).column("clip_id").to_pylist() == \
        first.column("clip_id").to_pylist()
    assert BenchmarkRepo(repo.root).read(schema.CLIPS).num_rows == 6  # another repo object, same files
    assert hashed == [schema.CLIPS]
    # a shard rewritten in place with other bytes of the same size is a changed file: hashed again, refused
    shard = repo.root / repo.config_files()[schema.CLIPS][0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError):
        repo.read_table(schema.CLIPS)
    assert hashed == [schema.CLIPS, schema.CLIPS]


def test_a_just_written_shard_is_hashed_on_every_read(tmp_path: Path, hashed: list[str]) -> None:
    """Within the file system's clock tick a same-size rewrite keeps its mtime: a fresh file is never trusted."""
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 3))
    repo.read_table(schema.CLIPS)
    repo.read_table(schema.CLIPS)
    assert hashed == [schema.CLIPS, schema.CLIPS]


def test_read_columns_parses_only_the_columns_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 4))
    asked: list[object] = []
    real = pq.read_table

    def spy(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs.get("columns"))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    got = repo.read_columns(schema.CLIPS, ["clip_id", "start_time"])
    assert got.column_names == ["clip_id", "start_time"] and got.num_rows == 4
    assert asked == [["clip_id", "start_time"]]
    assert got.column("clip_id").to_pylist() == [r["clip_id"] for r in clip_rows("v", 4)]


def test_recorded_hashes_drop_retired_shards(tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 4))
    old = repo.config_files()[schema.CLIPS]
    repo.write(schema.CLIPS, clip_rows("v", 5))
    new = repo.config_files()[schema.CLIPS]
    recorded = json.loads((repo.work_root / SHARD_HASHES).read_text())
    assert set(recorded) == set(new) and not set(old) & set(recorded)
    assert not (repo.root / old[0]).exists()
