"""``lovr info``: where a benchmark stands (the original ``check_left.py``), or a summary of any parquet
file (the original ``read_pt.py``, without unpickling anything)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lovr_hf import schema
from lovr_hf.engine.workdir import completed_keys
from lovr_hf.evaluation.models import model_slug
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


def _status_counts(repo: BenchmarkRepo, config: str) -> dict[str, int]:
    if not repo.has(config):
        return {}
    st = repo.read_table(config).column(schema.STATUS).to_pylist()
    return {k: st.count(k) for k in sorted(set(st))}


def _committed_not_gathered(repo: BenchmarkRepo, stage: str, gathered: set[str], current: set[str]) -> int:
    """Units already committed by a running/killed ``stage`` (any settings) but not in the config yet.

    Only units the next run would gather count: keys of ``current`` units (a rerun with another
    ``--min_clip_duration`` leaves committed captions of clips that no longer exist; those are not pending).
    """
    root = repo.work_dir(stage)
    if not root.exists():
        return 0
    return max((len((completed_keys(p) & current) - gathered) for p in root.iterdir() if p.is_dir()), default=0)


def _embedding_failures(repo: BenchmarkRepo, configs: list[str]) -> dict[str, str]:
    """Models whose every embedding row failed (nothing to score): ``{model slug: "n of n rows failed"}``."""
    out: dict[str, str] = {}
    for cfg in configs:
        st = repo.read_table(cfg).column(schema.STATUS).to_pylist()
        bad = sum(s != schema.OK for s in st)
        if st and bad == len(st):
            out[cfg[len(schema.EMBEDDINGS_PREFIX) + 1:]] = f"{bad} of {len(st)} rows failed"
    return out


def repo_status(repo: BenchmarkRepo, model: str | None = None) -> dict[str, Any]:
    """Rows per config, what each stage has left, failure counts and the run configuration."""
    out: dict[str, Any] = {"repo": str(repo.root), "configs": {}}
    problems = repo.verify()  # row counts of a tampered shard would be read as fine from its metadata
    for cfg, files in repo.config_files().items():
        if cfg in problems:
            continue
        out["configs"][cfg] = sum(pq.ParquetFile(repo.root / f).metadata.num_rows for f in files)
    if problems:  # nothing below can be trusted until repaired: say so, and how
        out["integrity_problems"] = problems
        out["repair"] = f"lovr doctor --repo {repo.root} --fix, then the stage rerun it names"
        return out
    left: dict[str, Any] = {}
    run = repo.run_config()
    imported = isinstance(run.get("import_release"), dict)  # the release's captions, no clusters by design
    folder = run.get("input_folder")
    if folder and Path(folder).is_dir():
        from lovr_hf.segment.stage import scan_videos

        files = scan_videos(folder)
        done = set(repo.read(schema.VIDEOS)[schema.VIDEO_ID]) if repo.has(schema.VIDEOS) else set()
        left["videos_to_segment"] = sum(v not in done for v in files[schema.VIDEO_ID])
    if imported:
        out["imported_release"] = "captions as published; nothing to segment, caption or merge"
    if repo.has(schema.CLIPS) and not imported:
        t = repo.read_table(schema.CLIPS)
        ok_clips = [c for c, st in zip(t[schema.CLIP_ID].to_pylist(), t[schema.STATUS].to_pylist()) if st == schema.OK]
        captioned = set(repo.read(schema.CLIP_CAPTIONS)[schema.CLIP_ID]) if repo.has(schema.CLIP_CAPTIONS) else set()
        left["clips_to_caption"] = sum(c not in captioned for c in ok_clips)
        left["clips_captioned_not_gathered"] = _committed_not_gathered(repo, "caption", captioned, set(ok_clips))
    if repo.has(schema.CLIP_CAPTIONS) and not imported:
        from lovr_hf.merge.clusters import clusters_per_video

        caps = repo.read(schema.CLIP_CAPTIONS)
        per_video: dict[str, int] = {}
        for vid in caps[schema.VIDEO_ID]:  # every caption row takes its place in a cluster (the original's rule)
            per_video[vid] = per_video.get(vid, 0) + 1
        size = int((run.get("merge") or {}).get("cluster_size", 10))
        expected = sum(clusters_per_video(n, size) for n in per_video.values())
        have = out["configs"].get(schema.CLUSTERS, 0)
        left["clusters_to_merge"] = max(0, expected - have)
        vdone = set(repo.read(schema.VIDEO_CAPTIONS)[schema.VIDEO_ID]) if repo.has(schema.VIDEO_CAPTIONS) else set()
        left["videos_to_integrate"] = sum(v not in vdone for v in per_video)
    emb = {c: n for c, n in out["configs"].items() if c.startswith(schema.EMBEDDINGS_PREFIX)}
    if repo.has(schema.VIDEOS):
        ok_videos = {r[schema.VIDEO_ID] for r in repo.read(schema.VIDEOS) if r[schema.STATUS] == schema.OK}
        for cfg in emb:
            if model and model_slug(model) not in cfg:  # config names carry the slug, never a path
                continue
            t = repo.read_table(cfg)
            embedded = {i for i, k in zip(t.column("item_id").to_pylist(), t.column("kind").to_pylist()) if k == "video"}
            left[f"videos_to_embed[{cfg[len(schema.EMBEDDINGS_PREFIX) + 1:]}]"] = len(ok_videos - embedded)
    out["left"] = left
    failed = _embedding_failures(repo, [c for c in emb if not model or model_slug(model) in c])
    if failed:
        out["embeddings_all_failed"] = failed  # such a model has no score; `lovr eval` retries failed rows
    if repo.has(schema.RESULTS):
        from lovr_hf.evaluation.results import stale_results

        out["results_out_of_date"] = stale_results(repo)  # scored on an earlier version of the data
    out["status"] = {c: _status_counts(repo, c) for c in (schema.VIDEOS, schema.CLIPS, schema.CLIP_CAPTIONS,
                                                         schema.CLUSTERS, schema.VIDEO_CAPTIONS) if repo.has(c)}
    out["run_config"] = run
    return out


def file_summary(path: str | Path, rows: int = 3) -> dict[str, Any]:
    """Schema, row count and the first rows of a parquet file (embedding vectors shown by shape)."""
    pf = pq.ParquetFile(path)
    table = pf.read_row_group(0) if pf.num_row_groups else pf.schema_arrow.empty_table()
    head = table.slice(0, rows).to_pylist()
    for r in head:
        for k, v in list(r.items()):
            if isinstance(v, list) and len(v) > 8:
                r[k] = f"<{len(v)} values: {v[:3]}...>"
            elif isinstance(v, str) and len(v) > 200:
                r[k] = v[:200] + "..."
    return {"file": str(path), "rows": pf.metadata.num_rows, "schema": str(pf.schema_arrow), "head": head}
