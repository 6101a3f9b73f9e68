"""``lovr import-release``: the official LoVR release -> a benchmark repo, with the original's data model.

Every clip FILE becomes a ``clips`` row (the retrieval gallery and the frames of each full video), the
released ``all_clip.jsonl`` becomes ``clip_captions`` (the query list, whatever its length) and
``all_video.jsonl`` ``video_captions``; themes and splits when present (see :mod:`builders.lovr_release`).

The import also writes :data:`MARKER` (``lovr_release.json``) at the repo root: the contract with the
scoring side. It records that this repo is an imported release, which generation it is, and the released
query list (clip ids in file order), so that ``lovr eval`` scores text->clip on exactly those queries, as
the original did (``CLIP_NUM`` = the number of lines of ``all_clip.jsonl``), instead of drawing
``--clip-queries`` from the captions. Read it with
:func:`lovr_hf.evaluation.release_marker.read_release_marker`.

Marker fields (``"schema": "lovr_release/1"``):

- ``release_dir``, ``generation`` (``query-list``: the current release, 1,000 queries, a subset of the
  clips; ``per-clip``: the first release, one caption per clip, all of them queries);
- ``query_set``: ``source`` (the file), ``count``, ``ids`` (file order, duplicates dropped),
  ``duplicate_lines``, ``sha256`` (of the ids joined by newlines);
- ``clips``: ``files`` (clip files on disk), ``ok`` / ``error`` (probe results; null with ``--no-clips``),
  ``listed_without_file`` (query ids with no clip file), ``files_without_query``;
- ``videos``: ``source`` (``all_video.jsonl`` or the clip folders), ``count``, ``unlisted_dirs`` (clip
  folders of videos not in ``all_video.jsonl``: the original never embeds them, neither does the import);
- ``configs``: rows written per config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

from lovr_hf import schema
from lovr_hf.evaluation.release_marker import MARKER, MARKER_SCHEMA
from lovr_hf.repo import BenchmarkRepo, atomic_write_text

logger = logging.getLogger(__name__)

#: configs an import owns: a re-import replaces them and removes those the release no longer has
RELEASE_CONFIGS = (schema.CLIPS, schema.CLIP_CAPTIONS, schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS, schema.SPLITS)
#: configs only the build pipeline writes: a repo holding them is a built benchmark, not a release import
_PIPELINE_CONFIGS = (schema.VIDEOS, schema.CLUSTERS)


def import_release(release_dir: str | Path, repo_dir: str | Path, *, clips: bool = True) -> dict[str, int]:
    """Build every config the release holds and write it into ``repo_dir``; returns rows per config.

    ``clips=False`` skips probing the clip files (40,804 files in the full release), keeping captions only.
    A re-import replaces the release's configs and removes those the release no longer provides.
    """
    from builders.lovr_release import (
        CLIP_JSONL,
        SPLIT_FILES,
        THEME_JSONL,
        VIDEO_JSONL,
        LoVRRelease,
        scan_release,
    )

    root = Path(release_dir).expanduser().resolve()
    repo = BenchmarkRepo(repo_dir)
    built = [c for c in _PIPELINE_CONFIGS if repo.has(c)]
    if built:
        raise ValueError(f"{repo.root} holds a benchmark built by the pipeline ({', '.join(built)}): import the "
                         "release into a new folder")
    scan = scan_release(root)
    wanted = [schema.CLIP_CAPTIONS]
    if clips:
        wanted.append(schema.CLIPS)
    if (root / VIDEO_JSONL).exists():
        wanted.append(schema.VIDEO_CAPTIONS)
    if (root / THEME_JSONL).exists():
        wanted.append(schema.THEME_CAPTIONS)
    if any((root / f).exists() for f in SPLIT_FILES.values()):
        wanted.append(schema.SPLITS)
    counts: dict[str, int] = {}
    clip_status: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="lovr-release-") as cache:
        # every config is built (and every line checked) before the repo is touched: a release that
        # fails leaves the repo as it was
        tables = {}
        for config in wanted:
            builder = LoVRRelease(config_name=config, data_dir=str(root), cache_dir=cache)
            builder.download_and_prepare()
            tables[config] = builder.as_dataset(split="train").with_format("arrow")[:]
        for config, table in tables.items():
            repo.write(config, table)
            counts[config] = table.num_rows
            if config == schema.CLIPS:
                for s in table.column(schema.STATUS).to_pylist():
                    clip_status[s] = clip_status.get(s, 0) + 1
            logger.info("imported %s: %d rows", config, table.num_rows)
    for stale in RELEASE_CONFIGS:
        if stale not in wanted and repo.has(stale):
            logger.info("removing %s: the release no longer provides it", stale)
            repo.remove(stale)
    on_disk = [c for c in scan.clip_files if c.path is not None]
    queries = set(scan.query_ids)
    marker = {
        "schema": MARKER_SCHEMA,
        "release_dir": str(root),
        "generation": scan.generation,
        "query_set": {
            "source": CLIP_JSONL,
            "count": len(scan.query_ids),
            "ids": list(scan.query_ids),
            "duplicate_lines": len(scan.duplicate_queries),
            "sha256": hashlib.sha256("\n".join(scan.query_ids).encode("utf-8")).hexdigest(),
        },
        "clips": {
            "files": len(on_disk),
            "ok": clip_status.get(schema.OK) if clips else None,
            "error": sum(n for s, n in clip_status.items() if s != schema.OK) if clips else None,
            "listed_without_file": [c.clip_id for c in scan.clip_files if c.path is None],
            "files_without_query": sum(1 for c in on_disk if c.clip_id not in queries),
            "ignored_files": len(scan.ignored_files),
        },
        "videos": {
            "source": VIDEO_JSONL if scan.videos_listed else "video_data/long_video_clip/*/",
            "count": len(scan.video_ids),
            "unlisted_dirs": list(scan.unlisted_dirs),
        },
        "configs": counts,
        "duplicate_lines_dropped": dict(scan.duplicates),
    }
    atomic_write_text(repo.root / MARKER, json.dumps(marker, indent=1, ensure_ascii=False) + "\n")
    repo.write_run_config({"import_release": {"release_dir": str(root), "configs": counts,
                                              "generation": scan.generation, "queries": len(scan.query_ids)}})
    from lovr_hf.report.card import write_card

    write_card(repo)  # an entry function above the report layer: a library caller gets the card too
    logger.info("release %s (%s): %d query captions, %d clip files, %d videos", root, scan.generation,
                len(scan.query_ids), len(on_disk), len(scan.video_ids))
    return counts
