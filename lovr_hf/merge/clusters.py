"""Which clips a cluster holds: every caption row of a video, in numeric slice order, in runs of ``cluster_size``
(the original ``caption_merger.py``'s membership); a clip without a usable caption keeps its place, its text left
out and named."""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lovr_hf.schema import NEEDS_REVIEW, OK, clip_id_for, cluster_id_for

logger = logging.getLogger(__name__)

DEFAULT_CLUSTER_SIZE = 10
#: clip caption statuses whose text is merged (``needs_review`` captions are real text: kept, flagged)
MERGEABLE = (OK, NEEDS_REVIEW)

_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def slice_number(value: Any) -> int:
    """Numeric slice order of ``3``, ``"3"``, ``"Scene-009"`` or ``"vid-Scene-010"`` (never string order)."""
    if isinstance(value, bool):
        raise ValueError(f"not a slice number: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _LAST_INT.search(value)
        if m:
            return int(m.group(1))
    raise ValueError(f"not a slice number: {value!r}")


def _first(row: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    return default


@dataclass
class Cluster:
    """Consecutive clips of one video (by numeric slice order) merged into one caption."""

    video_id: str
    index: int
    rows: list[Mapping[str, Any]]

    @property
    def cluster_id(self) -> str:
        return cluster_id_for(self.video_id, self.index)

    @functools.cached_property
    def slice_nums(self) -> list[int]:
        return [slice_number(_first(r, "slice_num", "clip_id")) for r in self.rows]

    @property
    def start_slice_num(self) -> int:
        return self.slice_nums[0]

    @property
    def end_slice_num(self) -> int:
        return self.slice_nums[-1]

    @property
    def clip_count(self) -> int:
        return len(self.rows)

    @property
    def captions(self) -> list[str]:
        return [_first(r, "caption", "cap", default="") or "" for r in self.rows]

    @property
    def usable_captions(self) -> list[str]:
        """Captions with the text of rows whose ``status`` (when they have one) is not mergeable blanked:
        such a clip keeps its place in the run, as in the original, but contributes no text."""
        return [c if _usable(r) else "" for r, c in zip(self.rows, self.captions)]

    @property
    def left_out(self) -> list[str]:
        """Clip ids of the run whose text is not merged (no usable caption: unusable status or empty)."""
        return [cid for r, c, cid in zip(self.rows, self.captions, self.clip_ids) if not (_usable(r) and c.strip())]

    @functools.cached_property
    def clip_ids(self) -> list[str]:
        out = []
        for r, n in zip(self.rows, self.slice_nums):
            cid = _first(r, "clip_id")
            out.append(str(cid) if cid else (clip_id_for(self.video_id, n) if n >= 1 else f"{self.video_id}-{n}"))
        return out


def _usable(row: Mapping[str, Any]) -> bool:
    st = row.get("status")
    return st is None or st in MERGEABLE


def group_clips(rows: Iterable[Mapping[str, Any]], cluster_size: int = DEFAULT_CLUSTER_SIZE) -> list[Cluster]:
    """Per video (sorted ids), clips sorted numerically by ``slice_num``, in consecutive groups.

    Every row counts, whatever its caption or status (the original groups every row of the caption
    file): a skipped or failed clip keeps its place, so the clusters after it do not shift.

    Accepts both the dataset columns (``video_id``, ``slice_num``, ``caption``) and the original JSONL
    fields (``vid``, ``slice_num``, ``cap``). A repeated (video, slice) keeps its first row and logs a
    warning, so a caption file with a duplicated line never yields a duplicated clip.
    """
    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
    per_video: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        vid = _first(row, "video_id", "vid")
        if vid is None:
            raise ValueError(f"row without video_id/vid: {dict(row)!r}"[:300])
        num = slice_number(_first(row, "slice_num", "clip_id"))
        clips = per_video.setdefault(str(vid), {})
        if num in clips:
            logger.warning("duplicate clip %s slice %d: keeping the first row", vid, num)
            continue
        clips[num] = row
    clusters: list[Cluster] = []
    for vid in sorted(per_video):
        ordered = [per_video[vid][n] for n in sorted(per_video[vid])]
        for k, start in enumerate(range(0, len(ordered), cluster_size)):
            clusters.append(Cluster(vid, k, ordered[start:start + cluster_size]))
    return clusters


def clusters_per_video(num_clips: int, cluster_size: int = DEFAULT_CLUSTER_SIZE) -> int:
    """ceil(clips / size): how many clusters a complete video has (the original's resume check)."""
    return math.ceil(num_clips / cluster_size) if num_clips > 0 else 0


# ---- full-video integration ----------------------------------------------------------------------------
