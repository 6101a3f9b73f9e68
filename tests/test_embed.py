"""Embedding stages on real decoded frames: the original frame-sampling rule (exact frames decoded, full-video
stride continuous across clips), pooling, Arrow float32 storage, resume after a kill, slugs, tiny CLIP/SigLIP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import EVAL_FPS, killed_on_call

from lovr_hf import schema
from lovr_hf.backends.standins.testing import DummyEmbedder
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.evaluation.embed import embed
from lovr_hf.evaluation.embed_video import VideoEmbedStage
from lovr_hf.evaluation.models import EmbedConfig, model_slug
from lovr_hf.evaluation.visual_plan import sample_video
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video import decode_plan
from lovr_hf.video.frame_index import VideoError
from lovr_hf.video.frames import uniform_indices
from lovr_hf.video.reader import read_clip_frames

FPS = EVAL_FPS  # clip rows describe the conftest source video
# video a: clips of 45, 20, 50 frames; video b: 60, 55 (b uses later frames of the source: no duplicates)
LAYOUT = {"a": [(0, 45), (45, 20), (65, 50)], "b": [(115, 60), (175, 55)]}
LONG = " ".join(f"In scene {i} a man in a red jacket walks along the busy street." for i in range(30))


def clip_rows(src: Path) -> list[dict]:
    rows = []
    for vid, clips in LAYOUT.items():
        for k, (start, n) in enumerate(clips, start=1):
            rows.append({"video_id": vid, "clip_id": schema.clip_id_for(vid, k), "slice_num": k,
                         "start_time": start / FPS, "end_time": (start + n) / FPS, "start_frame": start,
                         "end_frame": start + n, "num_frames": n, "fps": float(FPS), "path": str(src),
                         "frame_offset": start, "clip_mode": "virtual", "status": "ok", "error": None})
    return rows


def make_repo(root: Path, src: Path, long_caption: bool = False, themes: bool = False) -> BenchmarkRepo:
    repo = BenchmarkRepo(root)
    rows = clip_rows(src)
    repo.write(schema.CLIPS, rows)
    repo.write(schema.CLIP_CAPTIONS, [
        {"clip_id": r["clip_id"], "video_id": r["video_id"], "slice_num": r["slice_num"],
         "caption": f"a red and blue scene number {i}", "model": "m", "prompt_hash": "", "quality_score": None,
         "attempts": 1, "num_frames_used": 8, "settings": "{}", "status": "ok", "error": None}
        for i, r in enumerate(rows)
    ])
    repo.write(schema.VIDEO_CAPTIONS, [
        {"video_id": v, "caption": LONG if long_caption and v == "a" else f"video {v} shows green things",
         "cluster_ids": [], "clip_ids": [], "strategy": "x", "llm_calls": 0, "failed_calls": 0, "model": "m",
         "prompt_hash": "", "status": "ok", "error": None}
        for v in LAYOUT
    ])
    if themes:  # video-level themes, as `lovr merge` writes them
        repo.write(schema.THEME_CAPTIONS, [
            {"video_id": v, "clip_id": "", "caption": f"the theme of {v} is red", "model": "m", "prompt_hash": "",
             "status": "ok", "error": None}
            for v in LAYOUT
        ])
    return repo


def rows_of(repo: BenchmarkRepo, slug: str) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["item_id"]): r for r in repo.read(schema.embeddings_config(slug))}


def test_sampling_rule_known_counts() -> None:
    # every 30 frames: clips restart at 0; the video continues the stride across clips: 0, 30 | 60 | 90
    clip_sel, video_sel = sample_video([45, 20, 50], interval=30)
    assert clip_sel == [[0, 30], [0], [0, 30]]
    assert video_sel == [[0, 30], [15], [25]]
    # uniform: 4 per clip, 4 over the concatenated 115 frames (0, 38 | - | 76-65, 114-65)
    clip_sel, video_sel = sample_video([45, 20, 50], num_frames=4)
    assert clip_sel == [[0, 14, 29, 44], [0, 6, 12, 19], [0, 16, 32, 49]]
    assert video_sel == [[0, 38], [], [11, 49]]


def recording_reads(monkeypatch) -> list[tuple[str, list[int]]]:
    """Record every sequential read the visual stage makes: (file, file frame indices converted)."""
    seen: list[tuple[str, list[int]]] = []
    real = decode_plan.iter_targets

    def recording(path, targets, **kw):
        seen.append((str(path), [int(t) for t in targets]))
        return real(path, targets, **kw)

    monkeypatch.setattr(decode_plan, "iter_targets", recording)
    return seen


def test_decodes_exactly_the_sampled_frames_once(eval_source: Path, tmp_path: Path, monkeypatch) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    seen = recording_reads(monkeypatch)
    embed(repo, EmbedConfig(model="dummy", interval=30, frames_per_read=2), text=False)
    # one sequential pass per video over its source, converting the union of its clip and video frames once:
    # a: clips at 0 (45 f), 45 (20 f), 65 (50 f) -> clip frames 0,30 | 0 | 0,30 and video stride 0,30 | 15 | 25
    # b: clips at 115 (60 f), 175 (55 f): 60 frames, so the stride lands on frame 0 of clip 2 again
    assert sorted(seen) == sorted([(str(eval_source), [0, 30, 45, 60, 65, 90, 95]),
                                   (str(eval_source), [115, 145, 175, 205])])

    got = rows_of(repo, "dummy")
    assert {k for k in got} == {("clip", r["clip_id"]) for r in clip_rows(eval_source)} | {("video", "a"), ("video", "b")}
    assert [got[("clip", f"a-Scene-00{i}")]["num_frames"] for i in (1, 2, 3)] == [2, 1, 2]
    assert got[("video", "a")]["num_frames"] == 4 and got[("video", "a")]["interval"] == 30
    assert {r["frame_rule"] for r in got.values()} == {"interval:30"}
    assert {r["protocol"] for r in got.values()} == {"lovr"}
    # pooling: mean of L2-normalised frame embeddings of exactly those frames, re-normalised (a naive
    # restatement on frames read one clip at a time)
    emb = DummyEmbedder()
    clips = {r["clip_id"]: r for r in clip_rows(eval_source)}

    def pooled(parts: list[tuple[str, list[int]]]) -> np.ndarray:
        frames = np.concatenate([read_clip_frames(clips[c], idx) for c, idx in parts])
        v = emb.embed_frames(frames).mean(axis=0)
        return v / np.linalg.norm(v)

    np.testing.assert_allclose(got[("clip", "a-Scene-003")]["embedding"], pooled([("a-Scene-003", [0, 30])]),
                               atol=1e-6)
    expect_video = pooled([("a-Scene-001", [0, 30]), ("a-Scene-002", [15]), ("a-Scene-003", [25])])
    np.testing.assert_allclose(got[("video", "a")]["embedding"], expect_video, atol=1e-6)


def test_uniform_num_frames(eval_source: Path, tmp_path: Path, monkeypatch) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    seen = recording_reads(monkeypatch)
    embed(repo, EmbedConfig(model="dummy", num_frames=4), text=False)
    by_clip = {0: [0, 14, 29, 38, 44], 45: [0, 6, 12, 19], 65: [0, 11, 16, 32, 49]}  # clip ∪ video frames
    want_a = sorted(off + i for off, idx in by_clip.items() for i in idx)
    assert (str(eval_source), want_a) in seen
    got = rows_of(repo, "dummy")
    assert got[("video", "a")]["num_frames"] == 4
    assert got[("video", "a")]["interval"] is None and got[("video", "a")]["uniform_frames"] == 4
    assert got[("video", "a")]["frame_rule"] == "uniform:4"


def test_stored_as_float32_arrow_and_normalised(eval_source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    embed(repo, EmbedConfig(model="dummy", interval=30))
    config = schema.embeddings_config("dummy")
    files = repo.config_files()[config]
    assert all(f.endswith(".parquet") for f in files) and not list(repo.root.rglob("*.pt"))
    arrow_type = pq.read_schema(repo.root / files[0]).field("embedding").type
    assert str(arrow_type.value_type) == "float"  # float32
    ds = repo.load(config)  # plain datasets.load_dataset
    assert set(ds["kind"]) == {"clip_caption", "video_caption", "clip", "video"}
    vec = np.asarray(ds["embedding"], dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert set(ds["status"]) == {schema.OK}


def test_resume_after_kill(eval_source: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = EmbedConfig(model="dummy", interval=30)
    ref = make_repo(tmp_path / "ref", eval_source)
    embed(ref, cfg)
    expected = ref.read(schema.embeddings_config("dummy")).to_list()

    repo = make_repo(tmp_path / "lovr", eval_source)
    with killed_on_call(monkeypatch, VideoEmbedStage):
        embed(repo, cfg)
    run = embed(repo, cfg)
    video = run.results["embed-video"]
    assert (video.skipped_done, video.processed) == (1, 1)  # video a was committed before the kill
    assert run.results["embed-text-clip_caption"].processed == 0
    assert repo.read(schema.embeddings_config("dummy")).to_list() == expected
    assert embed(repo, cfg).results["embed-video"].processed == 0
    assert embed(repo, cfg, RunControl(rerun=True)).results["embed-video"].processed == 2
    assert repo.read(schema.embeddings_config("dummy")).to_list() == expected


def test_unreadable_clip_is_skipped_inside_its_video(eval_source: Path, tmp_path: Path) -> None:
    """#11: as the original, a clip that cannot be opened is left out of its video, which pools the readable
    clips (its stride laid out over them); the clip row says why, the video row which clips it left out."""
    repo = make_repo(tmp_path / "lovr", eval_source)
    rows = clip_rows(eval_source)
    rows[1]["path"] = str(tmp_path / "missing.mp4")
    repo.write(schema.CLIPS, rows)
    embed(repo, EmbedConfig(model="dummy", interval=30), text=False)
    got = rows_of(repo, "dummy")
    bad = got[("clip", "a-Scene-002")]
    assert bad["status"] == schema.ERROR and bad["embedding"] is None
    assert "cannot decode clip" in bad["error"] and "no such file" in bad["error"]
    video = got[("video", "a")]
    assert video["status"] == schema.OK and video["error"] == "left out 1 unreadable clip(s): a-Scene-002"
    # the stride of the readable clips (45 + 50 frames): 0, 30 | 15, 45 -- as if clip 2 did not exist
    emb = DummyEmbedder()
    clips = {r["clip_id"]: r for r in rows}
    frames = np.concatenate([read_clip_frames(clips["a-Scene-001"], [0, 30]),
                             read_clip_frames(clips["a-Scene-003"], [15, 45])])
    v = emb.embed_frames(frames).mean(axis=0)
    np.testing.assert_allclose(video["embedding"], v / np.linalg.norm(v), atol=1e-6)
    assert video["num_frames"] == 4
    assert got[("clip", "a-Scene-001")]["status"] == schema.OK and got[("video", "b")]["status"] == schema.OK
    assert got[("video", "b")]["error"] is None


def test_video_without_readable_clip_is_an_error(eval_source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    rows = clip_rows(eval_source)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    for r in rows:
        if r["video_id"] == "b":
            r["path"] = str(junk)
    repo.write(schema.CLIPS, rows)
    embed(repo, EmbedConfig(model="dummy", interval=30), text=False)
    got = rows_of(repo, "dummy")
    assert got[("video", "b")]["status"] == schema.ERROR and "no readable clip" in got[("video", "b")]["error"]
    assert all(got[("clip", f"b-Scene-00{i}")]["status"] == schema.ERROR for i in (1, 2))
    assert "not a readable video" in got[("clip", "b-Scene-001")]["error"]
    assert got[("video", "a")]["status"] == schema.OK


DECODE_THREADS = """
import sys
from lovr_hf import schema
from lovr_hf.evaluation.models import EmbedConfig
from lovr_hf.evaluation.embed import embed
from lovr_hf.repo import BenchmarkRepo
src, root = sys.argv[1], sys.argv[2]
rows = [{"video_id": "v", "clip_id": schema.clip_id_for("v", k + 1), "slice_num": k + 1, "start_time": 2.0 * k,
         "end_time": 2.0 * k + 2, "start_frame": 48 * k, "end_frame": 48 * k + 48, "num_frames": 48, "fps": 24.0,
         "path": src, "frame_offset": 48 * k, "clip_mode": "virtual", "status": "ok", "error": None} for k in range(3)]
repo = BenchmarkRepo(root)
repo.write(schema.CLIPS, rows)
embed(repo, EmbedConfig(model="dummy", interval=2, frames_per_read=1, decode_workers=4, prefetch_reads=8), text=False)
assert set(repo.read(schema.embeddings_config("dummy"))["status"]) == {"ok"}
"""


def test_threaded_decoding_of_one_file_is_safe(tmp_path: Path) -> None:
    """Four decode threads on 1-frame pieces of one source file: without the per-file lock the shared decord
    reader deadlocked or corrupted memory (abort) on every try; run in a subprocess so a hang cannot stall
    the suite."""
    src = tmp_path / "v.mp4"
    make_video(src, [SceneSpec(48), SceneSpec(48), SceneSpec(48)], 320, 180, 24, seed=1)
    proc = subprocess.run([sys.executable, "-c", DECODE_THREADS, str(src), str(tmp_path / "lovr")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_model_slug_is_folder_safe(tmp_path: Path) -> None:
    assert model_slug("openai/clip-vit-base-patch32") == "openai__clip-vit-base-patch32"
    assert model_slug("my_module:MyEmbedder") == "my_module__MyEmbedder"
    for bad in ("../../etc/passwd", "/abs/path/../x", "a b/ü:..", "-rf"):
        slug = model_slug(bad)
        assert slug and all(c.isalnum() or c in "_-" for c in slug) and not slug.startswith("-")
    folder = tmp_path / "clip"
    folder.mkdir()
    other = tmp_path / "x" / "clip"
    other.mkdir(parents=True)
    assert model_slug(str(folder)).startswith("clip-") and model_slug(str(folder)) != model_slug(str(other))
    with pytest.raises(ValueError):
        model_slug("  ")


@pytest.mark.parametrize("kind,interval,limit", [("clip", 10, 77), ("siglip", 30, 64)])
def test_tiny_models_text_modes_and_default_interval(eval_source: Path, tmp_path: Path, tiny: dict[str, str],
                                                     kind: str, interval: int, limit: int) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source, long_caption=True)
    cfg = EmbedConfig(model=tiny[kind], text_mode="chunk-mean", batch_size=8, device="cpu", dtype="float32")
    embed(repo, cfg)
    got = rows_of(repo, model_slug(tiny[kind]))
    assert got[("clip", "a-Scene-001")]["interval"] == interval  # original defaults: 10 for CLIP, 30 otherwise
    assert got[("video_caption", "a")]["num_frames"] > 1  # the long caption was averaged over chunks
    assert got[("video_caption", "b")]["num_frames"] == 1
    assert {r["text_mode"] for k, r in got.items() if k[0].endswith("caption")} == {"chunk-mean"}
    vecs = np.asarray([r["embedding"] for r in got.values()])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert {r["model"] for r in got.values()} == {model_label(tiny[kind])}  # a folder: its label, not its path
    # truncate differs from chunk-mean only for the long caption (a different computation, not a mix)
    embed(repo, EmbedConfig(model=tiny[kind], batch_size=8, device="cpu", dtype="float32"), video=False)
    trunc = rows_of(repo, model_slug(tiny[kind]))
    assert trunc[("video_caption", "a")]["text_mode"] == "truncate" and trunc[("video_caption", "a")]["num_frames"] == 1
    assert not np.allclose(trunc[("video_caption", "a")]["embedding"], got[("video_caption", "a")]["embedding"])
    np.testing.assert_allclose(trunc[("video_caption", "b")]["embedding"], got[("video_caption", "b")]["embedding"],
                               atol=1e-5)
    assert trunc[("clip", "a-Scene-001")]["embedding"] == got[("clip", "a-Scene-001")]["embedding"]


# ---- #12: each family's own frame rule ------------------------------------------------------------------


def _instance(cfg: EmbedConfig):
    from lovr_hf.evaluation.models import shared_embedder

    return shared_embedder(cfg)  # the very instance the stage used (one per process and configuration)


def test_native_tower_gets_its_own_uniform_frames(eval_source: Path, tmp_path: Path) -> None:
    """A video tower (video_frames = 3) gets 3 uniform frames per clip and 3 over the concatenated clips."""
    repo = make_repo(tmp_path / "lovr", eval_source)
    cfg = EmbedConfig(model="_embed_helpers:NativeTower", interval=30)
    embed(repo, cfg, text=False)
    tower = _instance(cfg)
    clips = {r["clip_id"]: r for r in clip_rows(eval_source)}
    expect = [read_clip_frames(clips[f"a-Scene-00{i}"], uniform_indices(n, 3)) for i, n in ((1, 45), (2, 20), (3, 50))]
    # video a: 3 uniform frames over 115 frames = 0, 57, 114 -> clip 2 frame 12, clip 3 frame 49
    expect_video = np.concatenate([read_clip_frames(clips["a-Scene-001"], [0]),
                                   read_clip_frames(clips["a-Scene-002"], [12]),
                                   read_clip_frames(clips["a-Scene-003"], [49])])
    got_arrays = [v for v in tower.videos if v.shape[0] == 3]
    for want in [*expect, expect_video]:
        assert any(np.array_equal(want, g) for g in got_arrays)
    got = rows_of(repo, model_slug(cfg.model))
    assert {r["frame_rule"] for r in got.values()} == {"native:3"}
    assert got[("clip", "a-Scene-001")]["uniform_frames"] == 3 and got[("clip", "a-Scene-001")]["interval"] is None
    v = tower.embed_video(expect_video)
    np.testing.assert_allclose(got[("video", "a")]["embedding"], v / np.linalg.norm(v), atol=1e-6)
    assert got[("video", "a")]["num_frames"] == 3


def test_native_tower_failure_is_failed_not_skipped(eval_source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    embed(repo, EmbedConfig(model="_embed_helpers:BrokenTower"), text=False)
    got = rows_of(repo, model_slug("_embed_helpers:BrokenTower"))
    assert {r["status"] for r in got.values()} == {schema.FAILED}
    assert "tower exploded" in got[("clip", "a-Scene-001")]["error"] and "tower exploded" in got[("video", "a")]["error"]


def test_files_model_gets_clip_files_cut_for_virtual_clips(eval_source: Path, tmp_path: Path) -> None:
    """video_input = "files": one group per clip (its file) and one per video (its clip files in order);
    virtual clips are first cut into temporary frame-exact files holding exactly the clip's frames."""
    repo = make_repo(tmp_path / "lovr", eval_source)
    cfg = EmbedConfig(model="_embed_helpers:FilesModel")
    embed(repo, cfg, text=False)
    model = _instance(cfg)
    clips = {r["clip_id"]: r for r in clip_rows(eval_source)}
    singles = [g for g in model.groups if len(g) == 1]
    videos = [g for g in model.groups if len(g) > 1]
    assert len(singles) == 5 and sorted(len(g) for g in videos) == [2, 3]
    for g in videos:  # the video group = its clips' files, in slice order
        assert [Path(p).name for p in g] == sorted(Path(p).name for p in g)
    for (path,) in singles:
        cid = Path(path).stem
        frames = model.file_frames[path]
        src = read_clip_frames(clips[cid], range(clips[cid]["num_frames"]))
        assert frames.shape == src.shape  # exactly the clip's frames
        assert np.abs(frames.astype(int) - src.astype(int)).mean() < 4  # re-encoded, visually the same
    assert not any(Path(p).exists() for g in model.groups for p in g)  # temporary files are gone
    got = rows_of(repo, model_slug(cfg.model))
    assert {r["frame_rule"] for r in got.values()} == {"files"}
    assert got[("video", "a")]["num_frames"] == 115 and got[("clip", "a-Scene-002")]["num_frames"] == 20
    assert {r["status"] for r in got.values()} == {schema.OK}


def test_files_model_reads_real_clip_files_as_they_are(eval_source: Path, tmp_path: Path) -> None:
    from lovr_hf.video.clipper import cut_clips

    repo = BenchmarkRepo(tmp_path / "lovr")
    cut = cut_clips(eval_source, [(0, 45), (45, 65)], repo.root / "clips", "a", mode="exact")
    repo.write(schema.CLIPS, [dict(c.to_row("a", float(FPS), repo.root), status="ok", error=None) for c in cut])
    cfg = EmbedConfig(model="_embed_helpers:FilesModel")
    embed(repo, cfg, text=False)
    model = _instance(cfg)
    files = [str(Path(c.path)) for c in cut]
    assert [files[0]] in model.groups and [files[1]] in model.groups and files in model.groups


def test_oracle_frame_under_protocol_original(eval_source: Path, tmp_path: Path) -> None:
    """MM-Embed's original: the clip (video) embedding is the frame embedding most similar to its gold
    caption embedding; only under --protocol original, and the rows say so."""
    repo = make_repo(tmp_path / "lovr", eval_source)
    cfg = EmbedConfig(model="_embed_helpers:OracleModel", interval=10, protocol="original")
    embed(repo, cfg)  # the text stage runs first: the gold caption embeddings exist when the clips are embedded
    slug = model_slug(cfg.model)
    got = rows_of(repo, slug)
    emb = _instance(cfg)  # the stage's own embedder (under the original protocol it may see BGR frames)
    clips = {r["clip_id"]: r for r in clip_rows(eval_source)}

    def oracle(frames: np.ndarray, gold: list[float]) -> np.ndarray:  # naive restatement
        f = emb.embed_frames(frames)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        return f[int(np.argmax(f @ np.asarray(gold, np.float32)))]

    c3 = clips["a-Scene-003"]
    want = oracle(read_clip_frames(c3, range(0, 50, 10)), got[("clip_caption", "a-Scene-003")]["embedding"])
    np.testing.assert_allclose(got[("clip", "a-Scene-003")]["embedding"], want, atol=1e-6)
    frames_a = np.concatenate([read_clip_frames(clips["a-Scene-001"], range(0, 45, 10)),
                               read_clip_frames(clips["a-Scene-002"], [5, 15]),
                               read_clip_frames(clips["a-Scene-003"], range(5, 50, 10))])
    want_v = oracle(frames_a, got[("video_caption", "a")]["embedding"])
    np.testing.assert_allclose(got[("video", "a")]["embedding"], want_v, atol=1e-6)
    visual = [r for k, r in got.items() if k[0] in ("clip", "video")]
    assert {r["frame_rule"] for r in visual} == {"oracle:interval:10"}
    assert {r["protocol"] for r in got.values() if r["kind"] in ("clip", "video")} == {"original"}
    # the default protocol pools as usual
    lovr = EmbedConfig(model="_embed_helpers:OracleModel", interval=10)
    embed(repo, lovr, video=True, text=False)
    got2 = rows_of(repo, slug)
    assert got2[("clip", "a-Scene-003")]["frame_rule"] == "interval:10"
    f = _instance(lovr).embed_frames(read_clip_frames(c3, range(0, 50, 10))).mean(axis=0)
    np.testing.assert_allclose(got2[("clip", "a-Scene-003")]["embedding"], f / np.linalg.norm(f), atol=1e-6)


def test_oracle_without_gold_caption_falls_back_to_pooling(eval_source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    cfg = EmbedConfig(model="_embed_helpers:OracleModel", interval=10, protocol="original")
    embed(repo, cfg, text=False)  # no caption embeddings at all
    got = rows_of(repo, model_slug(cfg.model))
    assert {r["frame_rule"] for r in got.values()} == {"interval:10"}
    assert {r["status"] for r in got.values()} == {schema.OK}


def test_declared_decode_size(eval_source: Path, tmp_path: Path) -> None:
    """An embedder's decode_size is what it gets: swscale resizes while converting (no full-size frame)."""
    repo = make_repo(tmp_path / "lovr", eval_source)
    cfg = EmbedConfig(model="_embed_helpers:SmallFrames", interval=30)
    embed(repo, cfg, text=False)
    assert _instance(cfg).shapes == {(24, 32, 3)}
    got = rows_of(repo, model_slug(cfg.model))
    clips = {r["clip_id"]: r for r in clip_rows(eval_source)}
    f = DummyEmbedder().embed_frames(read_clip_frames(clips["b-Scene-001"], [0, 30], size=(32, 24), backend="pyav")).mean(axis=0)
    np.testing.assert_allclose(got[("clip", "b-Scene-001")]["embedding"], f / np.linalg.norm(f), atol=1e-6)


def test_source_failing_mid_decode_leaves_out_the_clips_it_did_not_finish(eval_source: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """A file that breaks in the middle: clips completed before the break keep their rows, the rest are
    errors left out of the video (whose stride stays as planned); other videos are untouched."""
    repo = make_repo(tmp_path / "lovr", eval_source)
    real = decode_plan.iter_targets

    def breaking(path, targets, **kw):
        for item in real(path, targets, **kw):
            if 65 in targets and item[0] >= 65:  # video a: the decoder dies on clip 3's first frame
                raise VideoError(f"{path}: corrupt frame {item[0]} (simulated)")
            yield item

    monkeypatch.setattr(decode_plan, "iter_targets", breaking)
    embed(repo, EmbedConfig(model="dummy", interval=30, frames_per_read=1), text=False)
    got = rows_of(repo, "dummy")
    assert got[("clip", "a-Scene-001")]["status"] == schema.OK and got[("clip", "a-Scene-002")]["status"] == schema.OK
    assert got[("clip", "a-Scene-003")]["status"] == schema.ERROR
    assert "corrupt frame 65 (simulated)" in got[("clip", "a-Scene-003")]["error"]
    video = got[("video", "a")]
    assert video["status"] == schema.OK and video["error"] == "left out 1 unreadable clip(s): a-Scene-003"
    emb = DummyEmbedder()
    clips = {r["clip_id"]: r for r in clip_rows(eval_source)}
    frames = np.concatenate([read_clip_frames(clips["a-Scene-001"], [0, 30]),
                             read_clip_frames(clips["a-Scene-002"], [15])])
    v = emb.embed_frames(frames).mean(axis=0)
    np.testing.assert_allclose(video["embedding"], v / np.linalg.norm(v), atol=1e-6)
    assert got[("video", "b")]["status"] == schema.OK and got[("video", "b")]["error"] is None


def test_clip_without_frames_is_left_out(eval_source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    rows = clip_rows(eval_source)
    rows[0]["num_frames"] = 0
    repo.write(schema.CLIPS, rows)
    embed(repo, EmbedConfig(model="dummy", interval=30), text=False)
    got = rows_of(repo, "dummy")
    assert got[("clip", "a-Scene-001")]["status"] == schema.ERROR and "no frames" in got[("clip", "a-Scene-001")]["error"]
    assert got[("video", "a")]["status"] == schema.OK and "a-Scene-001" in got[("video", "a")]["error"]
