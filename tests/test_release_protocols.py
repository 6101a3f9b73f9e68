"""Scoring a model on the official LoVR release, under both protocols, against the original calc_pass.

A miniature release in the original layout (tests/_release_helpers.py: leading-'-' ids, 6 released query
lines for 8 clip files, an undecodable file, a listed clip without a file) is imported and evaluated end to
end; pass@k in all four directions must equal a restatement of the original ``calc_pass`` on the stored
embeddings, ``--protocol original`` must feed the embedder R/B-swapped frames and the default must not, and
``lovr export --format original`` must give files on which the original calc_pass reproduces the scores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _release_helpers import (
    BROKEN,
    DIRECTION_OF,
    QUERIES,
    VIDEOS,
    RecordingEmbedder,
    build_release,
    clip_files,
    frame_hash,
    original_calc_pass,
)

from lovr_hf import schema
from lovr_hf.evaluation.models import EmbedConfig, make_embedder
from lovr_hf.evaluation.run import evaluate_model
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.hub.export import export_original
from lovr_hf.hub.release import import_release
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video.reader import probe, read_frames

KS = tuple(range(1, 21))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_release(tmp_path_factory.mktemp("rel") / "LoVR")


def _embeddings(repo: BenchmarkRepo, config: EvalConfig) -> dict[str, dict[str, np.ndarray]]:
    t = repo.read(schema.embeddings_config(config.slug()))
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in t:
        if r["status"] == schema.OK:
            out.setdefault(r["kind"], {})[r["item_id"]] = np.asarray(r["embedding"], np.float32)
    return out


def _restate_from_embeddings(emb: dict[str, dict[str, np.ndarray]], queries: list[str],
                             ) -> dict[int, dict[str, float]]:
    """The original calc_pass on the stored embeddings: text.pt = the query clip captions in file order,
    then the video captions; video.pt = every embedded clip and full video."""
    vids = list(VIDEOS)
    text_src = queries + vids
    text_feat = np.stack([emb["clip_caption"][c] for c in queries] + [emb["video_caption"][v] for v in vids])
    clip_ids, video_ids = sorted(emb["clip"]), sorted(emb["video"])
    feats = np.stack([emb["clip"][c] for c in clip_ids] + [emb["video"][v] for v in video_ids])
    clip_src = clip_ids + [None] * len(video_ids)
    full_src = [None] * len(clip_ids) + video_ids
    return original_calc_pass(text_src, text_feat, len(queries), clip_src, full_src, feats, KS)


def _overall(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """pass@k rows of the whole query set (slice rows share direction and k)."""
    return {(r["direction"], r["k"]): r for r in rows if r["metric"] == "pass@k" and r["slice"] == "all"}


def _assert_equal_to_original(rows: list[dict], restated: dict[int, dict[str, float]]) -> None:
    """Every (direction, k) the original defines (k <= its candidates) equal; all four directions compared."""
    got = {key: r["value"] for key, r in _overall(rows).items()}
    compared = set()
    for k in KS:
        for name, value in restated[k].items():
            assert got[(DIRECTION_OF[name], k)] == pytest.approx(value, abs=1e-12), (DIRECTION_OF[name], k)
            compared.add(DIRECTION_OF[name])
    assert compared == set(DIRECTION_OF.values())


def _pooled(embedder, path: Path, interval: int, swap: bool) -> np.ndarray:
    n = probe(path).num_frames
    frames = read_frames(path, range(0, n, interval), backend="pyav")
    f = np.asarray(embedder.embed_frames(np.ascontiguousarray(frames[..., ::-1]) if swap else frames), np.float32)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    m = f.mean(axis=0)
    return m / np.linalg.norm(m)


def test_tiny_clip_on_the_release_both_protocols_equal_the_original_calc_pass(
        release: Path, tmp_path: Path, tiny: dict[str, str]) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    on_disk = clip_files(release)
    decodable = sorted(set(on_disk) - {BROKEN[1]})
    clip_vectors = {}
    for protocol in ("lovr", "original"):
        # the default clip_queries="auto": the released list of the marker import-release wrote
        cfg = EvalConfig(model=tiny["clip"], protocol=protocol, dtype="float32", device="cpu",
                         batch_size=8, decode_backend="pyav", model_name=f"tiny-clip-{protocol}")
        rows = evaluate_model(repo, cfg)
        assert rows and {r["protocol"] for r in rows} == {protocol}
        by = _overall(rows)
        emb = _embeddings(repo, cfg)
        # the released lines are the queries; a query whose clip did not decode (the broken file, the listed
        # clip without file) is a miss under `original`, as the original counted it, and left out and
        # counted under `lovr` (scores only what is available, says so on the row)
        available = [q for q in QUERIES if q in emb["clip"]]
        assert len(available) == len(QUERIES) - 2
        queries = QUERIES if protocol == "original" else available
        for d in ("text_to_clip", "clip_to_text"):
            assert by[(d, 1)]["num_queries"] == len(queries), d
            assert (by[(d, 1)]["left_out"] not in (None, "{}", "")) == (protocol == "lovr"), d
        assert by[("text_to_clip", 1)]["num_candidates"] == len(decodable)  # every clip FILE that decodes
        assert by[("text_to_video", 1)]["num_candidates"] == len(VIDEOS)
        assert {r["interval"] for r in rows} == {10}  # the clip family's interval, from the family table
        # ids unchanged in the embeddings: the release's own
        assert sorted(emb["clip"]) == decodable and sorted(emb["video"]) == sorted(VIDEOS)
        assert sorted(emb["clip_caption"]) == sorted(QUERIES)
        restated = _restate_from_embeddings(emb, QUERIES)
        if protocol == "lovr":  # the same hits over the available queries only (candidates unchanged)
            scale = len(QUERIES) / len(available)
            restated = {k: {n: v * scale if n in ("clip", "v2t_clip") else v for n, v in d.items()}
                        for k, d in restated.items()}
        _assert_equal_to_original(rows, restated)
        clip_vectors[protocol] = emb["clip"]
        # the exported original layout reproduces the same numbers with the original calc_pass
        out = tmp_path / f"export-{protocol}"
        if protocol == "lovr":  # once through the command line, once through the library
            proc = subprocess.run([sys.executable, "-m", "lovr_hf", "export", "--format", "original", "--repo",
                                   str(repo.root), "--out", str(out)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
        else:
            export_original(repo, out)
        _check_export(out, cfg.slug(), decodable, len(QUERIES) / len(queries))
    # --protocol original: the frames reached the model R/B-swapped; the default fed them as decoded. Each
    # protocol's own embedder is the reference (under original the clip family also resizes frames as
    # OpenAI's clip package does: tests/test_oracle_clip.py), unwrapped so that the swap is the test's own
    inner = make_embedder(EmbedConfig(model=tiny["clip"], dtype="float32", device="cpu"))
    wrapped = make_embedder(EmbedConfig(model=tiny["clip"], dtype="float32", device="cpu", protocol="original"))
    for cid in ("-7wwfGJXEZg-Scene-001", "Ab_9-xYz-Scene-002"):
        rgb = _pooled(inner, on_disk[cid], 10, False)
        bgr, unswapped = (_pooled(wrapped.inner, on_disk[cid], 10, swap) for swap in (True, False))
        np.testing.assert_allclose(clip_vectors["lovr"][cid], rgb, atol=2e-5)
        np.testing.assert_allclose(clip_vectors["original"][cid], bgr, atol=2e-5)
        assert not np.allclose(unswapped, bgr, atol=1e-3)


def _check_export(out: Path, run: str, decodable: list[str], clip_scale: float = 1.0) -> None:
    """The exported original layout; its pass_at_k.csv = the original calc_pass on the exported features
    (under `lovr`, the clip directions over the available queries only: ``clip_scale`` = all / available)."""
    lines = [json.loads(x) for x in (out / "caption_data/all_clip.jsonl").read_text().splitlines()]
    assert [x["path"].split("/")[-1][:-4] for x in lines] == QUERIES  # the original's id rule, file order
    assert all(set(x) == {"path", "cap", "vid"} for x in lines)
    assert [x["vid"] for x in lines] == [q.rsplit("-Scene-", 1)[0] for q in QUERIES]
    videos = [json.loads(x) for x in (out / "caption_data/all_video.jsonl").read_text().splitlines()]
    assert [v["vid"] for v in videos] == sorted(VIDEOS)
    files = sorted(p.stem for p in (out / "video_data/long_video_clip").glob("*/*.mp4"))
    assert files == decodable  # every ok clip file, under its own video's folder
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert run in manifest["runs"] and not manifest["errors"]
    text = json.loads((out / "exp" / run / "text.json").read_text())
    video = json.loads((out / "exp" / run / "video.json").read_text())
    assert text["source"] == QUERIES + [v["vid"] for v in videos]
    restated = original_calc_pass(text["source"], np.asarray(text["feat"]), len(lines), video["clip_src"],
                                  video["full_src"], np.asarray(video["image_feats"]), KS)
    csv_rows = (out / "exp" / run / "pass_at_k.csv").read_text().splitlines()
    # one line per k that has a value in some direction (k <= its candidates, as the original's topk allows)
    assert csv_rows[0] == "k,clip,full,v2t_clip,v2t_full"
    assert [int(x.split(",")[0]) for x in csv_rows[1:]] == [k for k in KS if restated[k]]
    for line in csv_rows[1:]:
        k, *values = line.split(",")
        for name, v in zip(("clip", "full", "v2t_clip", "v2t_full"), values):
            if name in restated[int(k)]:
                want = restated[int(k)][name] * (clip_scale if name in ("clip", "v2t_clip") else 1.0)
                assert float(v) == pytest.approx(want, abs=1e-12), (k, name)


def test_original_protocol_feeds_channel_swapped_frames_and_the_default_does_not(
        release: Path, tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    plain: set[str] = set()
    swapped: set[str] = set()
    for cid, path in clip_files(release).items():
        if cid == BROKEN[1]:
            continue
        frames = read_frames(path, range(probe(path).num_frames), backend="pyav")
        plain |= {frame_hash(f) for f in frames}
        swapped |= {frame_hash(f[..., ::-1]) for f in frames}
    assert not plain & swapped
    seen = {}
    for protocol in ("lovr", "original"):
        RecordingEmbedder.SEEN.clear()
        cfg = EvalConfig(model="_release_helpers:RecordingEmbedder", clip_queries="all", protocol=protocol,
                         decode_backend="pyav", model_name=f"recorder-{protocol}")
        evaluate_model(repo, cfg)
        seen[protocol] = {frame_hash(f) for f in RecordingEmbedder.SEEN}
        assert len(RecordingEmbedder.SEEN) >= len(clip_files(release)) - 1  # at least one frame per clip
    assert seen["lovr"] <= plain and not seen["lovr"] & swapped
    assert seen["original"] <= swapped and not seen["original"] & plain


def test_a_query_without_its_gold_embedding_is_a_miss_or_left_out(release: Path, tmp_path: Path) -> None:
    """BROKEN and MISSING have no clip embedding: under `original` they are misses at every k (at most 4 of
    the 6 released queries can ever be found, whatever k); under `lovr` they are left out and counted."""
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    for protocol in ("original", "lovr"):
        rows = evaluate_model(repo, EvalConfig(model="dummy", protocol=protocol, decode_backend="pyav",
                                               model_name=f"dummy-{protocol}"))
        by = _overall(rows)
        for d in ("clip_to_text", "text_to_clip"):
            if protocol == "original":
                values = [r["value"] for (dd, _), r in by.items() if dd == d]
                assert by[(d, 1)]["num_queries"] == 6 and len(values) > 1 and max(values) <= 4 / 6, d
            else:
                assert by[(d, 1)]["num_queries"] == 4 and json.loads(by[(d, 1)]["left_out"]), d


def test_a_clip_that_fails_while_decoding_is_skipped_inside_its_video(release: Path, tmp_path: Path) -> None:
    """The original skips a clip it cannot read and still embeds the video from the others. (A file that
    cannot be read at import is already an ``error`` clips row and no input; this one breaks afterwards.)"""
    import shutil

    copy = tmp_path / "rel"
    shutil.copytree(release, copy, symlinks=True)
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(copy, repo.root)
    target = copy / "video_data/long_video_clip/-_q3Q/-_q3Q-Scene-002.mp4"
    clip_row = next(r for r in repo.read(schema.CLIPS) if r["clip_id"] == target.stem)
    assert clip_row["status"] == schema.OK
    target.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"broken after the import" * 20)
    cfg = EvalConfig(model="dummy", clip_queries="all", decode_backend="pyav")
    evaluate_model(repo, cfg)
    rows = {(r["kind"], r["item_id"]): r for r in repo.read(schema.embeddings_config(cfg.slug()))}
    assert rows[("clip", target.stem)]["status"] == schema.ERROR
    assert rows[("clip", "-_q3Q-Scene-001")]["status"] == schema.OK
    assert rows[("video", "-_q3Q")]["status"] == schema.OK  # pooled from the clip that decodes
