"""``lovr export --format original``: a benchmark repo in the original LoVR file layout.

So that the original tools (and anything written against them) run on a lovr_hf benchmark, and lovr_hf's
embeddings can be checked with the original ``calc_pass``. Written under ``--out``::

    caption_data/all_clip.jsonl        {"path": "video_data/long_video_clip/<vid>/<clip>.mp4", "cap", "vid"}
                                       = the text->clip QUERY list (the original's CLIP_NUM = its line count)
    caption_data/all_video.jsonl       {"vid", "cap"}  = the video list
    caption_data/clip_cap_theme.jsonl  {"vid": <clip id, or video id for a video-level theme>, "cap"}
    video_data/long_video_clip/<vid>/<clip>.mp4   every ok clip file of those videos (links, or copies)
    exp/<run>/text.json                {"source": [...], "feat": [[...], ...]}  the original text.pt, as JSON
    exp/<run>/video.json               {"clip_src", "full_src", "image_feats"}  the original merged video.pt
    exp/<run>/pass_at_k.csv / .json    k, clip, full, v2t_clip, v2t_full: the four lines calc_pass prints
    export_manifest.json               what was written, and what was left out and why

``text.json`` rows are aligned with the two caption files (clip captions in ``all_clip.jsonl`` order, then
video captions), as the original's convention requires. Never a pickle: the original's ``.pt`` files are
``torch.save`` pickles; JSON holds the same fields (``torch.tensor(json.load(f)["feat"])`` restores them).

The query list: an imported release exports its released list (``lovr_release.json``); another repo the
``--clip-queries`` selection ``lovr eval`` draws (default 1000, ``--seed`` 0), or ``all``. Clip files:
``virtual`` clips (no file of their own) cannot be exported as files and are listed in the manifest;
``copy``-mode clips are exported, with a note that their files start with pre-roll frames the original
would decode too.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.ids import check_id, safe_join
from lovr_hf.repo import BenchmarkRepo, atomic_write_text

logger = logging.getLogger(__name__)

FORMATS = ("original",)
CLIP_DIR = "video_data/long_video_clip"
MANIFEST = "export_manifest.json"
#: results direction -> the name of the line the original calc_pass prints
ORIGINAL_NAMES = {"text_to_clip": "clip", "text_to_video": "full", "clip_to_text": "v2t_clip",
                  "video_to_text": "v2t_full"}
QUERY_STATUSES = (schema.OK, schema.NEEDS_REVIEW)  # captions a query set may hold (needs_review: flagged, kept)


def _rows(repo: BenchmarkRepo, config: str) -> list[dict[str, Any]]:
    return repo.read_table(config).to_pylist() if repo.has(config) else []


def query_clip_ids(repo: BenchmarkRepo, clip_queries: str | None = None, seed: int = 0) -> list[str]:
    """The text->clip query list to export: the released list of an imported release (unless
    ``clip_queries`` is given), else ``lovr eval``'s selection (``"1000"`` drawn with ``seed``, or ``"all"``)."""
    from lovr_hf.evaluation.release_marker import released_query_ids
    from lovr_hf.stats.directions import select_clip_queries

    caps = {r[schema.CLIP_ID]: r for r in _rows(repo, schema.CLIP_CAPTIONS) if r[schema.STATUS] in QUERY_STATUSES}
    released = released_query_ids(repo)
    if clip_queries is None and released is not None:
        return [c for c in released if c in caps]
    n: int | str = "all" if str(clip_queries or "1000").lower() == "all" else int(clip_queries or 1000)
    chosen = set(select_clip_queries(caps, n, seed))
    order = sorted(caps, key=lambda c: (caps[c][schema.VIDEO_ID], caps[c][schema.SLICE_NUM], c))
    return [c for c in order if c in chosen]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _inside(out: Path, rel: str) -> Path:
    """``out/rel`` without following links (the exported clip files ARE links): each part a safe id."""
    parts = rel.split("/")
    for part in parts:
        check_id(part)
    return out.joinpath(*parts)


def _place(src: Path, dst: Path, mode: str) -> None:
    """``dst`` -> ``src`` as a symlink (``link``) or a copy (``copy``), replacing what was there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link" and dst.is_symlink() and os.readlink(dst) == str(src):
        return
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if mode == "link":
        os.symlink(src, dst)
    else:
        shutil.copy2(src, dst)


def export_captions(repo: BenchmarkRepo, out: Path, query_ids: list[str], clips_mode: str) -> dict[str, Any]:
    """The caption files and the clip folders; returns the manifest part."""
    caps = {r[schema.CLIP_ID]: r for r in _rows(repo, schema.CLIP_CAPTIONS)}
    clip_lines = [{"path": f"{CLIP_DIR}/{caps[c][schema.VIDEO_ID]}/{c}.mp4", "cap": caps[c][schema.CAPTION] or "",
                   "vid": caps[c][schema.VIDEO_ID]} for c in query_ids]
    videos = [r for r in _rows(repo, schema.VIDEO_CAPTIONS) if r[schema.STATUS] == schema.OK]
    videos.sort(key=lambda r: r[schema.VIDEO_ID])
    _write_jsonl(out / "caption_data/all_clip.jsonl", clip_lines)
    _write_jsonl(out / "caption_data/all_video.jsonl",
                 [{"vid": r[schema.VIDEO_ID], "cap": r[schema.CAPTION]} for r in videos])
    themes = [r for r in _rows(repo, schema.THEME_CAPTIONS) if r[schema.STATUS] == schema.OK]
    theme_file = out / "caption_data/clip_cap_theme.jsonl"
    if themes:
        _write_jsonl(theme_file, [{"vid": r[schema.CLIP_ID] or r[schema.VIDEO_ID], "cap": r[schema.CAPTION]}
                                  for r in themes])
    elif theme_file.exists():
        theme_file.unlink()
    listed = {r[schema.VIDEO_ID] for r in videos}
    placed: list[str] = []
    left_out: dict[str, str] = {}
    notes: dict[str, str] = {}
    if clips_mode != "none":
        for c in _rows(repo, schema.CLIPS):
            cid, vid = c[schema.CLIP_ID], c[schema.VIDEO_ID]
            if vid not in listed or c[schema.STATUS] != schema.OK:
                continue
            if c["clip_mode"] == "virtual" or not c["path"]:
                left_out[cid] = "virtual clip: no clip file of its own (segment with --clip-mode exact)"
                continue
            src = repo.resolve(c["path"])
            if not src.is_file():
                left_out[cid] = f"clip file missing: {src}"
                continue
            if c["frame_offset"]:
                notes[cid] = f"copy-mode file: starts with {c['frame_offset']} pre-roll frames the original decodes"
            dst = _inside(out, f"{CLIP_DIR}/{vid}/{cid}.mp4")
            _place(src.resolve(), dst, clips_mode)
            placed.append(dst.relative_to(out).as_posix())
    if left_out:
        logger.warning("export: %d clips not exported as files (see %s): %s", len(left_out), MANIFEST,
                       list(left_out)[:3])
    return {"queries": len(query_ids), "videos": len(videos), "themes": len(themes), "clip_files": placed,
            "clips_left_out": left_out, "clip_notes": notes}


def _embedding_sets(repo: BenchmarkRepo, config: str) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    """ok embeddings per kind (item id -> vector), and each clip's video."""
    t = repo.read_table(config)
    t = t.filter(pc.equal(t[schema.STATUS], schema.OK))
    out: dict[str, dict[str, list[float]]] = {}
    clip_video: dict[str, str] = {}
    for kind, item, vid, emb in zip(t["kind"].to_pylist(), t["item_id"].to_pylist(),
                                    t[schema.VIDEO_ID].to_pylist(), t["embedding"].to_pylist()):
        out.setdefault(kind, {})[item] = emb
        if kind == "clip":
            clip_video[item] = vid
    return out, clip_video


def export_model(repo: BenchmarkRepo, out: Path, run: str, config: str, query_ids: list[str],
                 video_ids: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    """``exp/<run>/`` for one embeddings config: text.json, video.json and (with results) pass_at_k."""
    sets, clip_video = _embedding_sets(repo, config)
    clip_caps, video_caps = sets.get("clip_caption", {}), sets.get("video_caption", {})
    missing = [c for c in query_ids if c not in clip_caps] + [v for v in video_ids if v not in video_caps]
    if missing:
        raise ValueError(f"{config}: {len(missing)} exported captions have no ok embedding (e.g. {missing[:3]}): "
                         "the original's text.pt must align with the caption files; embed them first "
                         "(lovr eval --encode_text, --retry-failed)")
    folder = safe_join(out, "exp", run)
    text = {"source": list(query_ids) + list(video_ids),
            "feat": [clip_caps[c] for c in query_ids] + [video_caps[v] for v in video_ids]}
    clips_by_video: dict[str, list[str]] = {}
    for cid, vid in clip_video.items():
        clips_by_video.setdefault(vid, []).append(cid)
    clip_src: list[str | None] = []
    full_src: list[str | None] = []
    feats: list[list[float]] = []
    clip_vecs, video_vecs = sets.get("clip", {}), sets.get("video", {})
    for vid in video_ids:
        for cid in sorted(clips_by_video.get(vid, [])):
            clip_src.append(cid)
            full_src.append(None)
            feats.append(clip_vecs[cid])
        if vid in video_vecs:
            clip_src.append(None)
            full_src.append(vid)
            feats.append(video_vecs[vid])
    atomic_write_text(folder / "text.json", json.dumps(text))
    atomic_write_text(folder / "video.json", json.dumps({"clip_src": clip_src, "full_src": full_src,
                                                         "image_feats": feats}))
    part: dict[str, Any] = {"config": config, "texts": len(text["source"]), "visual_rows": len(feats)}
    table = _pass_at_k(results)
    for name in ("pass_at_k.csv", "pass_at_k.json"):
        if not table and (folder / name).exists():
            (folder / name).unlink()
    if table:
        cols = ["k", *ORIGINAL_NAMES.values()]
        with open(folder / ".pass_at_k.csv.tmp", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(table)
        os.replace(folder / ".pass_at_k.csv.tmp", folder / "pass_at_k.csv")
        meta = {r["direction"]: {"num_queries": r["num_queries"], "num_candidates": r["num_candidates"]}
                for r in results if r["direction"] in ORIGINAL_NAMES}
        first = results[0]
        atomic_write_text(folder / "pass_at_k.json", json.dumps(
            {"model": first["model"], "protocol": first.get("protocol"), "pass_at_k": table, "directions": meta},
            indent=1))
        part["pass_at_k_rows"] = len(table)
    return part


def _pass_at_k(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_k: dict[int, dict[str, Any]] = {}
    for r in results:
        if r["metric"] == "pass@k" and r["direction"] in ORIGINAL_NAMES and r.get("slice", "all") == "all":
            by_k.setdefault(int(r["k"]), {"k": int(r["k"])})[ORIGINAL_NAMES[r["direction"]]] = r["value"]
    return [by_k[k] for k in sorted(by_k)]


def _config_protocol(repo: BenchmarkRepo, config: str) -> str | None:
    """The protocol an embeddings config's rows record (None when unrecorded or mixed)."""
    t = repo.read_table(config)
    values = {v for v in t.column("protocol").to_pylist() if v} if "protocol" in t.column_names else set()
    return values.pop() if len(values) == 1 else None


def _models(repo: BenchmarkRepo, wanted: Sequence[str] | None) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(run name, embeddings config, results rows) per exported model and protocol."""
    from lovr_hf.evaluation.scoring import EvalConfig

    results = _rows(repo, schema.RESULTS)
    pairs = sorted({(r["model"], r.get("protocol") or "lovr") for r in results})
    by_config: dict[str, list[tuple[str, str]]] = {}
    for label, proto in pairs:
        if wanted and label not in wanted:
            continue
        config = schema.embeddings_config(EvalConfig(model=label, protocol=proto).slug())
        if repo.has(config):
            by_config.setdefault(config, []).append((label, proto))
    out: list[tuple[str, str, list[dict[str, Any]]]] = []
    seen: set[str] = set()
    for config, owners in sorted(by_config.items()):
        stored = _config_protocol(repo, config)
        if stored is not None:
            owners = [o for o in owners if o[1] == stored]
        if len(owners) != 1:  # results of several protocols, embeddings of one: never pair them by guess
            logger.warning("export: %s holds the embeddings of one of %s; exporting them without pass@k",
                           config, owners)
        rows = [r for r in results if len(owners) == 1 and (r["model"], r.get("protocol") or "lovr") == owners[0]]
        seen.add(config)
        out.append((config[len(schema.EMBEDDINGS_PREFIX) + 1:], config, rows))
    for label in wanted or []:
        config = schema.embeddings_config(EvalConfig(model=label).slug())
        if config not in seen:
            if not repo.has(config):
                raise ValueError(f"{repo.root} has no embeddings of {label!r} ({config}): run lovr eval first")
            seen.add(config)
            out.append((config[len(schema.EMBEDDINGS_PREFIX) + 1:], config, []))
    if not wanted:
        for config in repo.configs():
            if config.startswith(schema.EMBEDDINGS_PREFIX + "-") and config not in seen:
                out.append((config[len(schema.EMBEDDINGS_PREFIX) + 1:], config, []))
    return out


def export_original(repo: BenchmarkRepo | str, out: str | os.PathLike[str], *, clip_queries: str | None = None,
                    seed: int = 0, clips: str = "link", models: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``repo`` in the original layout under ``out``; returns the manifest (also written there)."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    if clips not in ("link", "copy", "none"):
        raise ValueError(f"clips must be link, copy or none, got {clips!r}")
    out_dir = Path(out).expanduser().resolve()
    if out_dir == repo.root or repo.root in out_dir.parents:
        raise ValueError(f"--out {out_dir} is inside the repo {repo.root}: export next to it")
    previous = json.loads((out_dir / MANIFEST).read_text()) if (out_dir / MANIFEST).is_file() else {}
    queries = query_clip_ids(repo, clip_queries, seed)
    manifest: dict[str, Any] = {"repo": str(repo.root), "format": "original", "clip_queries": clip_queries,
                                "seed": seed, **export_captions(repo, out_dir, queries, clips)}
    for stale in set(previous.get("clip_files", [])) - set(manifest["clip_files"]):
        p = _inside(out_dir, stale)
        if p.is_symlink() or p.is_file():
            p.unlink()  # a clip that no longer exists in the repo (nothing stale survives)
    video_ids = [json.loads(line)["vid"] for line in (out_dir / "caption_data/all_video.jsonl").read_text().splitlines()]
    manifest["runs"] = {}
    errors: dict[str, str] = {}
    for run, config, rows in _models(repo, models):
        try:
            manifest["runs"][run] = export_model(repo, out_dir, run, config, queries, video_ids, rows)
        except ValueError as exc:
            errors[run] = str(exc)
            logger.error("export: %s", exc)
    manifest["errors"] = errors
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    logger.info("exported %s to %s: %d queries, %d videos, %d clip files, %d model runs", repo.root, out_dir,
                len(queries), manifest["videos"], len(manifest["clip_files"]), len(manifest["runs"]))
    return manifest
