"""``clips.video``: each clip file as a ``datasets.Video`` that ``load_dataset`` decodes (local repo, streaming,
published through the loopback Hub, release import), and old repos without the column still read.

Frames decoded through ``datasets`` (torchcodec) are compared with lovr's own clip reader (PyAV) on the same
clip: same frame count, the same pictures up to a small pixel tolerance (two decoders' colour conversion).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _release_helpers import BROKEN, MISSING, build_release
from datasets import Video, load_dataset
from huggingface_hub import HfApi
from huggingface_hub.hf_file_system import parse_hf_uri

from lovr_hf import schema
from lovr_hf.clip_video import clips_with_video
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.hub.publish import stage
from lovr_hf.hub.push import push_to_hub
from lovr_hf.hub.release import import_release
from lovr_hf.integrity import sha256_hex
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, segment
from lovr_hf.testing.fake_hub import FakeHub
from lovr_hf.video.reader import probe, read_clip_frames

pytest.importorskip("torchcodec")
TOKEN = "hf_clipsvideotoken1"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BenchmarkRepo]:
    """One short two-scene video segmented in each clip mode."""
    root = tmp_path_factory.mktemp("clips_video")
    src = root / "in"
    src.mkdir()
    make_video(src / "a.mp4", [SceneSpec(24), SceneSpec(30)], 64, 48, 12, seed=1)
    out = {}
    for mode in ("exact", "copy", "virtual"):
        out[mode] = BenchmarkRepo(root / mode)
        segment(src, out[mode], SegmentConfig(clip_mode=mode, min_clip_duration=1.0))
    return out


def _frame(decoder, i: int) -> np.ndarray:
    """Frame ``i`` of a torchcodec decoder as RGB HWC uint8 (datasets' default dimension order is NCHW)."""
    return decoder[i].numpy().transpose(1, 2, 0)


def assert_decodes_like_lovr(row: dict, repo: BenchmarkRepo) -> None:
    video = row["video"]
    assert video is not None, row
    clip_file = repo.resolve(row["path"])
    assert len(video) == probe(clip_file).num_frames  # the whole file (copy: pre-roll included)
    first, last = row["frame_offset"], row["frame_offset"] + row["num_frames"] - 1
    want = read_clip_frames(row, [0, row["num_frames"] - 1], root=repo.root).astype(int)
    got = np.stack([_frame(video, first), _frame(video, last)]).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 3, "datasets' decoder and lovr's reader disagree on the clip's frames"
    assert np.abs(got[0] - got[1]).mean() > 3  # real, distinct frames were compared


@pytest.mark.parametrize("mode", ["exact", "copy"])
def test_local_clips_load_anywhere_and_decode_through_clips_with_video(
        repos: dict, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = repos[mode]
    monkeypatch.chdir(tmp_path)  # not the repo: a stored relative path would not open from here
    ds = load_dataset(str(repo.root), "clips", split="train")
    assert ds.num_rows == 2
    for row in ds:  # iterating a local repo never opens a decoder: the stored cell, repo-relative like path
        assert row["clip_mode"] == mode and row["status"] == schema.OK
        assert row["video"] == {"bytes": None, "path": row["path"]} and not Path(row["path"]).is_absolute()
    decoded = clips_with_video(repo)
    assert decoded.num_rows == 2
    for row in decoded:
        assert row["video"].metadata.path == str(repo.root / row["path"])
        assert_decodes_like_lovr(row, repo)
    # the view changed nothing on disk, and lovr's own reads do not decode either
    assert repo.read(schema.CLIPS)[0]["video"] == {"bytes": None, "path": ds[0]["path"]}
    # from inside the repo folder, the stored cells decode as they are
    monkeypatch.chdir(repo.root)
    row = ds.cast_column("video", Video())[0]
    assert_decodes_like_lovr(row, repo)


def test_virtual_clips_have_no_video(repos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(str(repos["virtual"].root), "clips", split="train")
    assert ds.num_rows == 2 and ds["video"] == [None, None]


def test_streaming_load_decodes_clip_video(repos: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = repos["exact"]
    monkeypatch.chdir(repo.root)
    stream = load_dataset(str(repo.root), "clips", split="train", streaming=True)
    assert list(stream) == load_dataset(str(repo.root), "clips", split="train").to_list()
    rows = list(stream.cast_column("video", Video()))
    assert len(rows) == 2
    for row in rows:
        assert_decodes_like_lovr(row, repo)


def test_a_moved_repo_decodes_its_own_clips_without_a_rewrite(
        repos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No table depends on where the repo lies: a copy holds the same shards and decodes its own files."""
    first = BenchmarkRepo(shutil.copytree(repos["exact"].root, tmp_path / "first"))
    moved = BenchmarkRepo(shutil.move(first.root, tmp_path / "moved"))
    assert not first.root.exists()
    assert moved.config_files()[schema.CLIPS] == repos["exact"].config_files()[schema.CLIPS]  # same shards
    monkeypatch.chdir(tmp_path)
    rows = list(clips_with_video(moved))
    assert len(rows) == 2
    for row in rows:
        assert_decodes_like_lovr(row, moved)


def test_old_repo_without_video_column_reads_and_gains_it_on_rewrite(
        repos: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = BenchmarkRepo(shutil.copytree(repos["exact"].root, tmp_path / "old"))
    # the shard as an older lovr_hf wrote it: no ``video`` column, its own fingerprint and recorded hash
    [rel] = repo.config_files()[schema.CLIPS]
    table = pq.read_table(repo.root / rel).drop_columns([schema.VIDEO])
    table = table.replace_schema_metadata(None)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    blob = buf.getvalue()
    new_rel = f"data/clips/clips-00000-of-00001-{hashlib.sha256(blob).hexdigest()[:12]}.parquet"
    (repo.root / new_rel).write_bytes(blob)
    (repo.root / rel).unlink()
    with repo.lock():
        repo._record_hashes({new_rel: sha256_hex(blob)})
        repo._write_card(repo.config_files() | {schema.CLIPS: [new_rel]})
    assert repo.read_table(schema.CLIPS).column("video").to_pylist() == [None, None]  # conformed, no failure
    monkeypatch.chdir(tmp_path)
    assert load_dataset(str(repo.root), "clips", split="train").num_rows == 2
    repo.write(schema.CLIPS, repo.read(schema.CLIPS))  # the next write derives it
    assert_decodes_like_lovr(clips_with_video(repo)[0], repo)


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)


def test_push_points_video_at_the_uploaded_clip_files(repos: dict, tmp_path: Path, hub_env: None) -> None:
    repo = BenchmarkRepo(shutil.copytree(repos["exact"].root, tmp_path / "lovr"))
    with FakeHub(tokens={TOKEN}) as hub:
        push_to_hub(repo.root, "me/vids", api=HfApi(endpoint=hub.endpoint))
        files = hub.files("me/vids")
    [shard] = [f for f in files if f.startswith("data/clips/")]
    table = pq.read_table(io.BytesIO(files[shard]))
    paths = table.column("path").to_pylist()
    videos = [v["path"] for v in table.column("video").to_pylist()]
    assert videos == [f"hf://datasets/me/vids@main/{p}" for p in paths]
    for url, p in zip(videos, paths):
        uri = parse_hf_uri(url)
        assert (uri.id, uri.revision, uri.path_in_repo) == ("me/vids", "main", p)
        assert files[p] == (repo.root / p).read_bytes()  # the file it points at was uploaded
    for name, data in files.items():
        assert str(tmp_path).encode() not in data, f"{name} leaks a local path"
    assert b"Video" in table.schema.metadata[b"huggingface"]  # the Hub reads it as a video column


def test_stage_quotes_a_branch_and_index_only_has_no_video(repos: dict, tmp_path: Path) -> None:
    repo = BenchmarkRepo(shutil.copytree(repos["exact"].root, tmp_path / "lovr"))
    pub = stage(repo, repo_id="me/vids", revision="feat/clips")
    table = BenchmarkRepo(pub.root).read_table(schema.CLIPS)
    for v, p in zip(table.column("video").to_pylist(), table.column("path").to_pylist()):
        assert v["path"] == f"hf://datasets/me/vids@feat%2Fclips/{p}"
        assert parse_hf_uri(v["path"]).revision == "feat/clips"
    for kwargs in ({"repo_id": "me/vids", "no_media": True}, {}):
        pub = stage(repo, **kwargs)
        assert BenchmarkRepo(pub.root).read_table(schema.CLIPS).column("video").to_pylist() == [None, None]
        assert "`clips.video` is null in every row" in (pub.root / "README.md").read_text()


def test_release_import_carries_video_where_clip_files_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = build_release(tmp_path / "release")
    repo = BenchmarkRepo(tmp_path / "repo")
    import_release(release, repo.root)
    rows = {r[schema.CLIP_ID]: r for r in repo.read(schema.CLIPS)}
    assert rows[BROKEN[1]]["status"] != schema.OK and rows[BROKEN[1]]["video"] is None
    if MISSING in rows:
        assert rows[MISSING]["video"] is None
    ok = [r for r in rows.values() if r["status"] == schema.OK]
    assert len(ok) == 7
    for r in ok:
        assert r["video"] == {"bytes": None, "path": r["path"]}
        assert repo.resolve(r["video"]["path"]).is_file()
    monkeypatch.chdir(tmp_path)
    row = next(r for r in clips_with_video(repo) if r["status"] == schema.OK)
    assert_decodes_like_lovr(row, repo)


_HUB_CHILD = """
import sys
import numpy as np
from datasets import Video, load_dataset
row = next(iter(load_dataset(sys.argv[1], "clips", split="train", streaming=True)))
video = row["video"]
first, last = row["frame_offset"], row["frame_offset"] + row["num_frames"] - 1
np.save(sys.argv[2], np.stack([video[first].numpy(), video[last].numpy()]).transpose(0, 2, 3, 1))
print(video.metadata.path, len(video), row["clip_id"])
"""


def test_load_dataset_from_the_hub_streams_and_decodes_the_clip(
        repos: dict, tmp_path: Path, hub_env: None) -> None:
    """``load_dataset("me/vids", "clips", streaming=True)`` against the loopback Hub (HF_ENDPOINT, a fresh
    process so every client reads it): the row's video is opened through ``hf://`` from the uploaded file of a
    private repo (the token of the environment reaches the video reader too)."""
    import os
    import subprocess
    import sys

    repo = BenchmarkRepo(shutil.copytree(repos["exact"].root, tmp_path / "lovr"))
    with FakeHub(tokens={TOKEN}) as hub:
        push_to_hub(repo.root, "me/vids", private=True, api=HfApi(endpoint=hub.endpoint))  # reads need the token
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1",
                   HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", HF_TOKEN=TOKEN)
        out = subprocess.run([sys.executable, "-c", _HUB_CHILD, "me/vids", str(tmp_path / "frames.npy")],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]
        reads = [r.path for r in hub.requests if r.method == "GET" and r.path.endswith(".mp4")]
    url, n, cid = out.stdout.split()[-3:]
    row = next(r for r in repo.read(schema.CLIPS) if r[schema.CLIP_ID] == cid)
    assert url == f"hf://datasets/me/vids@main/{row['path']}"
    assert f"/datasets/me/vids/resolve/main/{row['path']}" in reads  # the bytes came from the Hub
    assert int(n) == probe(repo.resolve(row["path"])).num_frames
    got = np.load(tmp_path / "frames.npy").astype(int)
    want = read_clip_frames(row, [0, row["num_frames"] - 1], root=repo.root).astype(int)
    assert got.shape == want.shape and np.abs(got - want).mean() < 3


def test_copy_clip_video_starts_with_its_pre_roll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``copy`` clip cut off a key frame: the decoder's first ``frame_offset`` frames are the pre-roll; the
    clip's frames start at ``frame_offset``, exactly where lovr's reader starts them."""
    from lovr_hf.video import clip_files, clipper

    src = tmp_path / "src.mp4"
    make_video(src, [SceneSpec(48)], 64, 48, 12, seed=4, gop=12)
    repo = BenchmarkRepo(tmp_path / "lovr")
    files = clipper.cut_clips(src, [(0, 17), (17, 48)], repo.root / "clips", "v", mode="copy")
    repo.write(schema.CLIPS, clip_files.rows_for(files, "v", 12.0, root=repo.root))
    monkeypatch.chdir(tmp_path)
    row = clips_with_video(repo)[1]
    assert row["clip_mode"] == "copy" and row["frame_offset"] > 0  # a real pre-roll
    assert len(row["video"]) >= row["frame_offset"] + row["num_frames"]
    assert_decodes_like_lovr(row, repo)
    # the pre-roll frames are frames before the clip: the decoder's frame 0 is not the clip's first frame
    pre = _frame(row["video"], 0).astype(int)
    assert np.abs(pre - read_clip_frames(row, [0], root=repo.root)[0].astype(int)).mean() > 3


def test_leak_check_reads_video_cells_and_accepts_hub_urls(tmp_path: Path) -> None:
    """The publish gate sees a local path inside a ``video`` struct, and never flags the ``hf://`` head."""
    import pyarrow as pa

    from lovr_hf.clip_video import VIDEO_TYPE
    from lovr_hf.hub.publish import PublishError, check_no_local_paths

    def shard(path: str) -> str:
        pq.write_table(pa.table({"video": pa.array([{"bytes": None, "path": path}], VIDEO_TYPE)}),
                       tmp_path / "c.parquet")
        return "c.parquet"

    with pytest.raises(PublishError, match="/home/me/lovr"):
        check_no_local_paths(tmp_path, [shard("/home/me/lovr/clips/a/a-Scene-001.mp4")], ["/home/me/lovr"])
    check_no_local_paths(tmp_path, [shard("hf://datasets/me/vids@main/clips/a/a-Scene-001.mp4")], ["/datasets"])


def test_push_to_a_branch_points_video_at_that_branch(repos: dict, tmp_path: Path) -> None:
    """``lovr push --revision dev`` stages URLs at ``@dev``: a dry run keeps the staged folder to read."""
    repo = BenchmarkRepo(shutil.copytree(repos["exact"].root, tmp_path / "lovr"))
    staged = push_to_hub(repo.root, "me/vids", revision="dev", dry_run=True)
    table = BenchmarkRepo(staged).read_table(schema.CLIPS)
    paths = table.column("path").to_pylist()
    assert [v["path"] for v in table.column("video").to_pylist()] == [f"hf://datasets/me/vids@dev/{p}" for p in paths]
