"""The rows each merge step maps over, built from the repo's tables: clusters from the current clip captions,
videos whose clusters are all in, video captions that can get a theme.

Each builder reads only the columns it needs and returns a ``Dataset`` with the step's input features, so
the stages' fingerprints and units follow the current captions (a changed caption redoes its cluster).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence as Seq
from typing import Any

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features, Sequence, Value

from lovr_hf import schema
from lovr_hf.merge.clusters import group_clips
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)

#: video caption statuses whose text feeds a theme: ``failed`` = some joins kept the original text
THEMEABLE = (schema.OK, schema.NEEDS_REVIEW, schema.FAILED)

CLUSTER_INPUT = Features({
    schema.CLUSTER_ID: Value("string"), schema.VIDEO_ID: Value("string"),
    "slice_nums": Sequence(Value("int32")), "captions": Sequence(Value("string")),
    "clip_ids": Sequence(Value("string")), "statuses": Sequence(Value("string")),
})


VIDEO_INPUT = Features({
    schema.VIDEO_ID: Value("string"), "cluster_ids": Sequence(Value("string")),
    "captions": Sequence(Value("string")), "clip_ids": Sequence(Value("string")),
    # how the cluster captions were made: the video row reports its joins with its own integrations
    "join_calls": Value("int32"), "join_failed_calls": Value("int32"), "join_rejected": Value("int32"),
    "join_errors": Value("string"),
})


THEME_INPUT = Features({schema.VIDEO_ID: Value("string"), schema.CAPTION: Value("string")})


def _rows(data: Dataset | pa.Table | list[dict[str, Any]], columns: Seq[str] | None = None) -> list[dict[str, Any]]:
    if isinstance(data, Dataset):
        data = data.with_format("arrow")[:]
    if isinstance(data, pa.Table):
        if columns is not None:
            data = data.select([c for c in columns if c in data.column_names])
        return data.to_pylist()
    return list(data)


def read_columns(repo: BenchmarkRepo, config: str, columns: Seq[str]) -> pa.Table:
    """Only ``columns`` of a config (the merge never needs the captions' settings or scores), verified against
    the shards' recorded hashes like every read (a tampered caption shard must not be merged silently)."""
    feats = schema.features_for(config)
    sch = pa.schema([feats.arrow_schema.field(c) for c in columns])
    return repo.read_columns(config, columns).cast(sch)


def _dataset(rows: dict[str, list[Any]], features: Features) -> Dataset:
    # an explicit fingerprint: datasets would otherwise hash (pickle) the whole table, for a cache never used
    return Dataset(pa.table(rows, schema=features.arrow_schema), info=DatasetInfo(features=features),
                   fingerprint=uuid.uuid4().hex)


#: what the video stage reads of a cluster row: its caption and how its joins went
CLUSTER_MADE = (schema.CLUSTER_ID, schema.CAPTION, "llm_calls", "failed_calls", "rejected_replies", schema.ERROR_COL)
CAPTION_COLUMNS = (schema.CLIP_ID, schema.VIDEO_ID, schema.SLICE_NUM, schema.CAPTION, schema.STATUS)


def current_captions(captions: Dataset | pa.Table, clips: Dataset | pa.Table | None) -> list[dict[str, Any]]:
    """The caption rows to merge: one per current ``ok`` clip (when the repo has ``clips``).

    Captions of clips that no longer exist are dropped; a video with a clip not captioned yet is left out
    (its captions are merged once the caption stage has every clip). Both are logged.
    """
    rows = _rows(captions, CAPTION_COLUMNS)
    if clips is None:
        return rows
    current: dict[str, set[str]] = {}
    for r in _rows(clips, (schema.CLIP_ID, schema.VIDEO_ID, schema.STATUS)):
        if r[schema.STATUS] == schema.OK:
            current.setdefault(r[schema.VIDEO_ID], set()).add(r[schema.CLIP_ID])
    have: dict[str, set[str]] = {}
    kept, orphans = [], 0
    for r in rows:
        if r[schema.CLIP_ID] in current.get(r[schema.VIDEO_ID], ()):
            kept.append(r)
            have.setdefault(r[schema.VIDEO_ID], set()).add(r[schema.CLIP_ID])
        else:
            orphans += 1
    if orphans:
        logger.warning("merge: %d clip captions of clips no longer in `clips` are left out (re-run lovr caption)",
                       orphans)
    waiting = {v for v, ids in current.items() if have.get(v, set()) != ids and v in have}
    if waiting:
        logger.warning("merge: %d video(s) have clips without a caption row yet, left out until captioned: %s",
                       len(waiting), ", ".join(sorted(waiting)[:5]))
    return [r for r in kept if r[schema.VIDEO_ID] not in waiting]


def cluster_inputs(captions: Dataset | pa.Table | list[dict[str, Any]], cluster_size: int,
                   clips: Dataset | pa.Table | None = None) -> Dataset:
    """Clip caption rows -> one row per cluster: EVERY caption row of a video, in slice order, in runs of
    ``cluster_size`` (the original's membership); unusable captions (status not in MERGEABLE) keep their
    place with their text left out."""
    rows = current_captions(captions, clips) if not isinstance(captions, list) else captions
    cols: dict[str, list[Any]] = {k: [] for k in CLUSTER_INPUT}
    for c in group_clips(rows, cluster_size):
        cols[schema.CLUSTER_ID].append(c.cluster_id)
        cols[schema.VIDEO_ID].append(c.video_id)
        cols["slice_nums"].append(c.slice_nums)
        cols["captions"].append(c.usable_captions)
        cols["clip_ids"].append(c.clip_ids)
        cols["statuses"].append([str(r.get(schema.STATUS) or schema.OK) for r in c.rows])
    return _dataset(cols, CLUSTER_INPUT)


def video_inputs(clusters: Dataset | pa.Table, cluster_in: Dataset, videos: set[str] | None = None) -> Dataset:
    """Videos whose clusters are ALL present -> one row with the cluster captions in order and every clip
    of the video (``videos``: only these)."""
    expected: dict[str, list[str]] = {}
    clip_ids: dict[str, list[str]] = {}
    t = cluster_in.with_format("arrow")[:] if len(cluster_in) else None
    if t is not None:
        for vid, cid, clips in zip(t.column(schema.VIDEO_ID).to_pylist(), t.column(schema.CLUSTER_ID).to_pylist(),
                                   t.column("clip_ids").to_pylist()):
            expected.setdefault(vid, []).append(cid)
            clip_ids.setdefault(vid, []).extend(clips)
    made = {r[schema.CLUSTER_ID]: r for r in _rows(clusters, CLUSTER_MADE)}
    cols: dict[str, list[Any]] = {k: [] for k in VIDEO_INPUT}
    for vid, ids in sorted(expected.items()):
        if (videos is None or vid in videos) and all(i in made for i in ids):
            rows = [made[i] for i in ids]
            cols[schema.VIDEO_ID].append(vid)
            cols["cluster_ids"].append(ids)
            cols["captions"].append([r.get(schema.CAPTION) or "" for r in rows])
            cols["clip_ids"].append(clip_ids[vid])
            cols["join_calls"].append(sum(int(r.get("llm_calls") or 0) for r in rows))
            cols["join_failed_calls"].append(sum(int(r.get("failed_calls") or 0) for r in rows))
            cols["join_rejected"].append(sum(int(r.get("rejected_replies") or 0) for r in rows))
            cols["join_errors"].append("; ".join(f"cluster {i}: {r.get(schema.ERROR_COL)}" for i, r in zip(ids, rows)
                                                 if r.get("failed_calls") and r.get(schema.ERROR_COL)) or None)
    return _dataset(cols, VIDEO_INPUT)


def theme_inputs(video_captions: Dataset | pa.Table) -> Dataset:
    """Video captions with text to summarise (status in :data:`THEMEABLE`, non-empty)."""
    rows = [r for r in _rows(video_captions, (schema.VIDEO_ID, schema.CAPTION, schema.STATUS))
            if r[schema.STATUS] in THEMEABLE and (r[schema.CAPTION] or "").strip()]
    return _dataset({schema.VIDEO_ID: [r[schema.VIDEO_ID] for r in rows],
                     schema.CAPTION: [r[schema.CAPTION] for r in rows]}, THEME_INPUT)
