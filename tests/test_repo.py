"""Benchmark repo: schema round trip, card YAML, atomic writes, no stale rows through load_dataset."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from lovr_hf import schema
from lovr_hf.ids import check_id, safe_id, safe_join
from lovr_hf.integrity import CorruptCardError, CorruptShardError
from lovr_hf.redact import redact
from lovr_hf.repo import BenchmarkRepo, atomic_write_bytes, table_to_parquet_bytes
from lovr_hf.report.card import write_card


def clip_rows(video_id: str, n: int, length: float = 5.0) -> list[dict]:
    return [
        {
            "video_id": video_id,
            "clip_id": schema.clip_id_for(video_id, i),
            "slice_num": i,
            "start_time": (i - 1) * length,
            "end_time": i * length,
            "start_frame": (i - 1) * 120,
            "end_frame": i * 120,
            "num_frames": 120,
            "fps": 24.0,
            "path": f"clips/{video_id}/{schema.clip_id_for(video_id, i)}.mp4",
            "frame_offset": 0,
            "clip_mode": "exact",
            "status": schema.OK,
            "error": None,
        }
        for i in range(1, n + 1)
    ]


def test_schema_round_trip_through_parquet_and_load_dataset(tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    rows = clip_rows("vidA", 12) + clip_rows("vidB", 3)
    repo.write(schema.CLIPS, list(reversed(rows)))  # written sorted by (video_id, slice_num)
    ds = load_dataset(str(repo.root), schema.CLIPS, split="train")
    # a local repo stores video undecoded (repo-relative paths: lovr_hf.clip_video), otherwise the schema
    assert ds.features == schema.features_for(schema.CLIPS)
    assert {k: v for k, v in ds.features.items() if k != schema.VIDEO} == {
        k: v for k, v in schema.CLIPS_FEATURES.items() if k != schema.VIDEO}
    assert [r["clip_id"] for r in ds] == [r["clip_id"] for r in rows]
    assert ds[10]["clip_id"] == "vidA-Scene-011"  # numeric slice order, not string order
    assert ds[10]["video"] == {"bytes": None, "path": ds[10]["path"]}  # repo-relative, like path
    assert repo.read(schema.CLIPS).to_list() == ds.to_list()


def test_card_yaml_lists_fingerprinted_shards(tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 4))
    repo.write(schema.VIDEOS, [{"video_id": "v", "source_name": "v.mp4", "path": "/x/v.mp4", "duration_s": 20.0,
                                "fps": 24.0, "num_frames": 480, "width": 64, "height": 48, "rotation": 0, "threshold": 34.0,
                                "status": "ok", "error": None}])
    write_card(repo)  # storage never renders: the body comes from the report layer
    card = DatasetCard.load(repo.card_path)
    configs = {c["config_name"]: c for c in card.data.to_dict()["configs"]}
    assert set(configs) == {"videos", "clips"}
    paths = configs["clips"]["data_files"][0]["path"]
    assert len(paths) == 1 and "*" not in paths[0]
    assert paths[0].startswith("data/clips/clips-00000-of-00001-") and (repo.root / paths[0]).exists()
    assert (repo.root / "assets/clip_lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert "assets/clip_lengths.png" in card.text
    assert "| clips | 4 |" in card.text


def test_rewrite_and_same_named_repo_never_serve_stale_rows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("first", 5))
    assert load_dataset("lovr", "clips", split="train").num_rows == 5
    repo.write(schema.CLIPS, clip_rows("second", 2))  # a re-run rewrites the config
    ds = load_dataset("lovr", "clips", split="train")
    assert ds.num_rows == 2 and set(ds["video_id"]) == {"second"}
    assert len(list((repo.root / "data/clips").glob("*.parquet"))) == 1  # old shard removed
    other = BenchmarkRepo(tmp_path / "elsewhere" / "lovr")  # same folder name, different rows
    other.write(schema.CLIPS, clip_rows("third", 7))
    ds2 = load_dataset(str(other.root), "clips", split="train")
    assert ds2.num_rows == 7 and set(ds2["video_id"]) == {"third"}


def test_crash_mid_write_leaves_previous_state_loadable(tmp_path: Path, monkeypatch) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 3))
    before = repo.read(schema.CLIPS).to_list()

    calls = {"n": 0}
    real_replace = os.replace

    def crash_on_card(src, dst):  # the shard lands, then the process "dies" before the card is renamed
        calls["n"] += 1
        if str(dst).endswith("README.md"):
            raise KeyboardInterrupt("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_card)
    with pytest.raises(KeyboardInterrupt):
        repo.write(schema.CLIPS, clip_rows("v", 9))
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls["n"] >= 2
    assert repo.read(schema.CLIPS).to_list() == before
    assert load_dataset(str(repo.root), "clips", split="train").num_rows == 3
    # leftover temp files are hidden and never listed; a half-written parquet never loads as a shard
    for p in (repo.root / "data/clips").iterdir():
        if not p.name.startswith("."):
            pq.read_table(p)
    repo.write(schema.CLIPS, clip_rows("v", 9))
    assert repo.read(schema.CLIPS).num_rows == 9
    assert not [p for p in (repo.root / "data/clips").iterdir() if p.name.startswith(".tmp-")]


def test_atomic_write_bytes_never_exposes_partial_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new-but-broken")
    assert target.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["f.bin"]  # the failed write's temp is gone too


def test_temp_of_a_killed_writer_is_swept_by_the_next_write(tmp_path: Path) -> None:
    """kill -9 between write and rename leaves a temp; the next write of that file removes it, and
    never a temp of a writer that is still alive (its rename must not fail)."""
    import subprocess
    import sys

    card = tmp_path / "README.md"
    code = (
        "import os, sys, lovr_hf.repo as r\n"
        "os.replace = lambda *a: os.kill(os.getpid(), 9)\n"
        "r.atomic_write_bytes(sys.argv[1], b'half')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(card)], check=False)
    assert proc.returncode == -9
    left = [q.name for q in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-README.md-"), left
    live = tmp_path / f".tmp-README.md-{left[0].split('-')[-3]}-{os.getpid()}-0123abcd"
    live.write_bytes(b"a live writer's temp")
    old_style = tmp_path / ".tmp-README.md-ac1abd64"  # naming before host/pid were recorded
    old_style.write_bytes(b"x")
    other = tmp_path / ".tmp-run_config.json-h-1-0123abcd"  # another file's temp is not ours to judge
    other.write_bytes(b"x")
    atomic_write_bytes(card, b"full")
    assert card.read_bytes() == b"full"
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["README.md", live.name, other.name])


@pytest.mark.parametrize(
    "name", ["../x.mp4", "../../etc/passwd", "my video é.mp4", "視頻 1.mkv", "a/b.mp4", "-rf.mp4", "..", ".hidden.mp4"]
)
def test_unsafe_video_names_get_safe_ids(tmp_path: Path, name: str) -> None:
    vid = safe_id(name)
    assert check_id(vid) == vid
    p = safe_join(tmp_path, vid, schema.clip_id_for(vid, 1) + ".mp4")
    assert tmp_path.resolve() in p.parents
    assert safe_id(name) == vid  # stable


def test_safe_ids_keep_release_ids_and_do_not_collide() -> None:
    assert safe_id("Z5p0xAyQhVQ.mp4") == "Z5p0xAyQhVQ"
    assert safe_id("a b.mp4") != safe_id("a_b.mp4")
    with pytest.raises(ValueError):
        safe_join("/tmp/base", "..", "x")
    with pytest.raises(ValueError):
        check_id("../x")


def test_redact_drops_credentials_but_keeps_token_counts() -> None:
    cfg = {"api_key": "sk-123", "hf_token": "hf_abc", "max_new_tokens": 1024, "nested": {"OPENAI_API_KEY": "x"}}
    out = redact(cfg)
    assert out["api_key"] == "<redacted>" and out["hf_token"] == "<redacted>"
    assert out["nested"]["OPENAI_API_KEY"] == "<redacted>"
    assert out["max_new_tokens"] == 1024


def test_remove_config(tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, clip_rows("v", 2))
    repo.remove(schema.CLIPS)
    assert not repo.has(schema.CLIPS)
    shutil.rmtree(repo.root)


def test_every_config_of_a_built_repo_loads_and_streams_row_for_row(tmp_path: Path) -> None:
    """A repo built end to end, plus an empty config (theme_captions with no rows): every config
    the card lists loads with and without streaming, row for row; the empty one is not listed, yet the repo
    still knows it exists (so no stage recomputes it)."""
    import yaml
    from datasets import load_dataset

    from lovr_hf.cli.app import main as cli_main
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec

    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=1)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"input_folder": str(vids), "repo": str(tmp_path / "lovr"),
                                   "segment": {"clip_mode": "virtual"}, "caption": {"backend": "dummy"},
                                   "merge": {"llm": "dummy"}}))
    assert cli_main(["-q", "run", "--config", str(cfg)]) == 0
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.THEME_CAPTIONS, [])  # a config that exists and has no rows (e.g. every theme rejected)
    assert repo.has(schema.THEME_CAPTIONS) and repo.empty_configs() == [schema.THEME_CAPTIONS]
    card = yaml.safe_load(repo.card_path.read_text().split("---")[1])
    listed = [c["config_name"] for c in card["configs"]]
    assert schema.THEME_CAPTIONS not in listed and listed == repo.listed_configs()
    assert {"videos", "clips", "clip_captions", "clusters", "video_captions"} <= set(listed)
    for config in listed:
        want = repo.read(config).to_list()
        assert load_dataset(str(repo.root), config, split="train").to_list() == want, config
        assert list(load_dataset(str(repo.root), config, split="train", streaming=True)) == want, config
    # the empty config turns into a listed one as soon as it has rows, and back
    repo.write(schema.THEME_CAPTIONS, [{"video_id": "a", "clip_id": "", "caption": "t", "model": "m",
                                        "prompt_hash": "", "status": "ok", "error": None}])
    assert schema.THEME_CAPTIONS in repo.listed_configs() and not repo.empty_configs()
    assert len(load_dataset(str(repo.root), schema.THEME_CAPTIONS, split="train")) == 1
    repo.write(schema.THEME_CAPTIONS, [])
    assert repo.empty_configs() == [schema.THEME_CAPTIONS] and repo.read(schema.THEME_CAPTIONS).num_rows == 0
    assert not list((repo.root / "data" / schema.THEME_CAPTIONS).glob("*.parquet"))


def test_shards_of_an_older_version_load_with_the_new_columns_null(tmp_path: Path) -> None:
    """A repo written before a column existed (e.g. videos.sha256) keeps loading: missing columns read as null."""
    import pyarrow.parquet as pq

    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.SPLITS, [{"clip_id": "a-Scene-001", "video_id": "a", "split": "test"}])
    shard = repo.root / repo.config_files()[schema.SPLITS][0]
    # as an older writer left it: its own bytes under its own fingerprinted name, listed in the card
    blob = table_to_parquet_bytes(pq.read_table(shard).drop_columns(["video_id"]))
    old = shard.with_name(f"splits-00000-of-00001-{hashlib.sha256(blob).hexdigest()[:12]}.parquet")
    old.write_bytes(blob)
    shard.unlink()
    with repo.lock():
        repo._write_card({schema.SPLITS: [old.relative_to(repo.root).as_posix()]})
    assert repo.read(schema.SPLITS).to_list() == [{"clip_id": "a-Scene-001", "video_id": None, "split": "test"}]


# ---- integrity: a shard is what its name says, or the read stops with one line ---------------------------


def _captions(n: int) -> list[dict]:
    return [{"clip_id": f"v{i}-Scene-001", "video_id": f"v{i}", "slice_num": 1, "caption": f"caption number {i}",
             "model": "m", "prompt_hash": "", "status": "ok"} for i in range(n)]


def test_a_shard_rewritten_with_fewer_rows_under_its_name_is_refused_and_a_rewrite_repairs_it(tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    rows = _captions(9)
    repo.write(schema.CLIP_CAPTIONS, rows)
    shard = repo.root / repo.config_files()[schema.CLIP_CAPTIONS][0]
    pq.write_table(pq.read_table(shard).slice(0, 6), shard)  # 6 of 9 rows, same file name
    with pytest.raises(CorruptShardError, match=r"clip_captions.*does not match.*lovr doctor .* --fix.*lovr caption"):
        repo.read(schema.CLIP_CAPTIONS)
    with pytest.raises(CorruptShardError):
        repo.read_columns(schema.CLIP_CAPTIONS, ["clip_id", "caption"])
    assert schema.CLIP_CAPTIONS in repo.verify()
    from lovr_hf.evaluation.verify import verify

    report = verify(repo)  # lovr eval --verify: a tampered table never verifies as OK
    assert not report.ok and "rebuild it with: lovr caption" in report.render()
    # the same rows written again: the file of that name is rewritten (it used to be skipped as "exists")
    repo.write(schema.CLIP_CAPTIONS, rows)
    assert len(repo.read(schema.CLIP_CAPTIONS)) == 9
    assert repo.verify() == {}


def test_one_flipped_byte_or_a_truncated_shard_is_refused_even_without_the_work_state(tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIP_CAPTIONS, _captions(9))
    shard = repo.root / repo.config_files()[schema.CLIP_CAPTIONS][0]
    good = shard.read_bytes()
    pos = len(good) // 2
    shard.write_bytes(good[:pos] + bytes([good[pos] ^ 1]) + good[pos + 1:])  # one flipped bit
    shutil.rmtree(repo.work_root)  # a downloaded copy: no recorded hashes, only the names
    with pytest.raises(CorruptShardError, match="fingerprint in its name"):
        repo.read(schema.CLIP_CAPTIONS)
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptShardError):
        repo.read(schema.CLIP_CAPTIONS)
    shard.write_bytes(good)
    assert len(repo.read(schema.CLIP_CAPTIONS)) == 9


@pytest.mark.parametrize("card", ["---\nconfigs: [\n---\nbody\n", "---\nconfigs:\n  - 3\n---\n", "---\nunterminated"])
def test_an_invalid_card_is_one_clear_error_naming_the_repair(tmp_path: Path, card: str) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIP_CAPTIONS, _captions(2))
    repo.card_path.write_text(card)
    with pytest.raises(CorruptCardError, match=r"README.md.*invalid.*lovr doctor --repo .* --fix") as exc:
        repo.configs()
    assert "\n" not in str(exc.value)


def test_readers_survive_index_switches_of_a_concurrent_writer(tmp_path: Path) -> None:
    """A writer rewriting a config over and over (new shard, card switch, old shard deleted) while readers
    read it: no reader ever fails (they used to hit FileNotFoundError right after the switch)."""
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIP_CAPTIONS, _captions(5))
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        r = BenchmarkRepo(repo.root)
        while not stop.is_set():
            try:
                assert len(r.read_table(schema.CLIP_CAPTIONS)) in (5, 6)
                reads[0] += 1
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(60):
        repo.write(schema.CLIP_CAPTIONS, _captions(5 + i % 2))
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert reads[0] > 20


def test_run_config_card_and_logs_never_hold_url_credentials(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lovr_hf.redact import find_secret, redact_text

    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write_run_config({"caption": {"api_base": "http://user:pw@example.org:8000/v1",
                                       "url": "https://h/x?api_key=abc123&page=2", "keyframes": 4,
                                       "max_new_tokens": 64, "hf_token": "hf_abcdefghijklmnopqrstuv"}})
    text = (repo.root / "run_config.json").read_text()
    assert "pw" not in text and "user:" not in text and "abc123" not in text and "hf_abcdef" not in text
    cfg = repo.run_config()["caption"]
    assert cfg["api_base"] == "http://<redacted>@example.org:8000/v1"
    assert cfg["url"] == "https://h/x?api_key=<redacted>&page=2"
    assert cfg["keyframes"] == 4 and cfg["max_new_tokens"] == 64  # not credentials
    assert find_secret(text) is None and find_secret("see http://a:b@c/d") is not None
    assert redact_text("Authorization: Bearer abcdefghijk123") == "Authorization: Bearer <redacted>"
    with caplog.at_level(logging.DEBUG, logger="lovr_hf"):
        logging.getLogger("lovr_hf.caption.stage").debug("calling %s", "http://user:pw@example.org/v1")
    assert "pw@" not in caplog.text and "<redacted>@example.org" in caplog.text
    assert json.loads(text)  # still JSON


def test_a_full_disk_during_a_write_is_one_clear_error_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    import errno

    from lovr_hf.integrity import EnvironmentFault

    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIP_CAPTIONS, _captions(2))
    before = repo.read(schema.CLIP_CAPTIONS).to_list()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(EnvironmentFault, match=r"no space left on device .*rerun the same command"):
        repo.write(schema.CLIP_CAPTIONS, _captions(5))
    monkeypatch.undo()
    assert not [p for p in repo.root.rglob(".tmp-*")]
    assert repo.read(schema.CLIP_CAPTIONS).to_list() == before  # the old table stands
    repo.write(schema.CLIP_CAPTIONS, _captions(5))  # space freed: the same write completes
    assert len(repo.read(schema.CLIP_CAPTIONS)) == 5
