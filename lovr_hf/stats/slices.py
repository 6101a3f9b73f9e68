"""Slices of a direction's queries: by clip (or video) duration, by caption length, by source video.

Why: an overall pass@k hides where a model fails; LoVR's point is *long* content, so the first questions are
"does it get worse for long clips?" and "does it get worse for long captions (past the text limit)?". Every
slice is a set of the scored queries; the slices of one kind partition them, so their pass@k and mean rank
weighted by their query counts add up exactly to the overall value (tested).

Bins (half-open ``[low, high)``, the last one open-ended; a query without the attribute goes to ``unknown``):

- ``duration:<bin>`` -- clip directions (text->clip, clip->text): the clip's duration, bins
  0-5s, 5-10s, 10-20s, 20-40s, 40-80s, 80s+ (LoVR's scene detector makes clips of >= 5 s, except a video's
  last scene). Video directions: the full video's duration, bins 0-1min, 1-5min, 5-15min, 15-30min,
  30-60min, 60min+.
- ``caption_words:<bin>`` -- the caption of the query/gold pair (text->X: the query caption; X->text: the gold
  caption), whitespace-separated words: 0-25, 25-50, 50-100, 100-200, 200-400, 400-800, 800-1600,
  1600-3200, 3200+. (CLIP's 77-token limit is about 55 words.)
- ``video:<video_id>`` -- clip directions only: the source video of the clip.

Theme directions are not sliced. Empty bins produce no rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLIP_DURATION_EDGES_S = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
VIDEO_DURATION_EDGES_MIN = (0.0, 1.0, 5.0, 15.0, 30.0, 60.0)
CAPTION_WORD_EDGES = (0, 25, 50, 100, 200, 400, 800, 1600, 3200)
CLIP_DIRECTIONS = ("text_to_clip", "clip_to_text")
VIDEO_DIRECTIONS = ("text_to_video", "video_to_text")
UNKNOWN = "unknown"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _labels(edges: Sequence[float], unit: str) -> list[str]:
    out = [f"{_fmt(a)}-{_fmt(b)}{unit}" for a, b in zip(edges[:-1], edges[1:])]
    return out + [f"{_fmt(edges[-1])}{unit}+"]


def bin_labels(values: Sequence[float | None], edges: Sequence[float], unit: str = "") -> list[str]:
    """The bin label of each value (``unknown`` for None/NaN/negative)."""
    names = _labels(edges, unit)
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), arr, side="right") - 1
    return [UNKNOWN if not np.isfinite(v) or i < 0 else names[i] for v, i in zip(arr, idx)]


def bin_order(slicing: str, direction: str) -> list[str]:
    """Slice labels of one slicing in display order (for tables and plots)."""
    if slicing == "duration":
        if direction in VIDEO_DIRECTIONS:
            labels = _labels(VIDEO_DURATION_EDGES_MIN, "min")
        else:
            labels = _labels(CLIP_DURATION_EDGES_S, "s")
    elif slicing == "caption_words":
        labels = _labels(CAPTION_WORD_EDGES, "")
    else:
        raise ValueError(f"no fixed bins for {slicing!r}")
    return [f"{slicing}:{x}" for x in labels + [UNKNOWN]]


def slices_for(direction: str, video_ids: Sequence[str | None], durations_s: Sequence[float | None],
               caption_words: Sequence[int | None]) -> dict[str, np.ndarray]:
    """``{slice label: query indices}`` for one direction's scored queries (see the module doc)."""
    out: dict[str, np.ndarray] = {}
    if direction not in CLIP_DIRECTIONS + VIDEO_DIRECTIONS:
        return out

    def add(slicing: str, labels: list[str]) -> None:
        arr = np.asarray(labels, dtype=object)
        for name in bin_order(slicing, direction):
            idx = np.flatnonzero(arr == name.split(":", 1)[1])
            if idx.size:
                out[name] = idx

    if direction in VIDEO_DIRECTIONS:
        minutes = [None if d is None else d / 60.0 for d in durations_s]
        add("duration", bin_labels(minutes, VIDEO_DURATION_EDGES_MIN, "min"))
    else:
        add("duration", bin_labels(durations_s, CLIP_DURATION_EDGES_S, "s"))
    add("caption_words", bin_labels(caption_words, CAPTION_WORD_EDGES))
    if direction in CLIP_DIRECTIONS:
        vids = [v if v else UNKNOWN for v in video_ids]
        for v in sorted(set(vids)):
            out[f"video:{v}"] = np.flatnonzero(np.asarray(vids, dtype=object) == v)
    return out


def slicing_of(label: str) -> str:
    """``duration:5-10s`` -> ``duration``; ``all`` -> ``all``."""
    return label.split(":", 1)[0]
