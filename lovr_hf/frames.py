"""Which frames to read: the original LoVR sampling rules as pure functions (no decoding here).

Two families:

* **Captioning** (original ``caption_generator.py``): a clip gets ``min(64, max(8, whole seconds))`` frames
  sampled uniformly; a clip with fewer than 8 frames gets 2 frames; a clip with fewer than 5 frames is
  skipped (with a reason the stage records on the row).
* **Evaluation** (original ``encode_video``): every ``interval`` frames of each clip, where the full video
  is the concatenation of its clips and its stride runs on across clip boundaries (the original's
  ``start_offset``); or ``n`` frames uniformly.

Uniform sampling is ``np.linspace(0, num_frames - 1, n)`` truncated to int, as in the original code;
``n`` is clamped to ``num_frames`` so that no frame is read twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: original captioner constants
CAPTION_MIN_FRAMES = 8
CAPTION_MAX_FRAMES = 64
CAPTION_SHORT_CLIP_FRAMES = 2
CAPTION_SKIP_BELOW = 5


@dataclass(frozen=True)
class FramePlan:
    """Frame indices to decode for one clip, or why the clip is skipped (``indices`` empty)."""

    indices: tuple[int, ...]
    skip_reason: str | None = None

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None


def uniform_indices(num_frames: int, n: int) -> list[int]:
    """``n`` frame indices spread uniformly over ``[0, num_frames - 1]`` (first and last included).

    ``n`` is clamped to ``num_frames``; ``n <= 0`` or an empty clip gives ``[]``.
    """
    if num_frames <= 0 or n <= 0:
        return []
    n = min(n, num_frames)
    return np.linspace(0, num_frames - 1, n, dtype=np.int64).tolist()


def caption_num_frames(
    num_frames: int,
    duration_s: float,
    *,
    min_frames: int = CAPTION_MIN_FRAMES,
    max_frames: int = CAPTION_MAX_FRAMES,
    short_clip_frames: int = CAPTION_SHORT_CLIP_FRAMES,
    skip_below: int = CAPTION_SKIP_BELOW,
) -> int:
    """How many frames the original captioner feeds the VLM for a clip; 0 means "skip".

    ``min(max_frames, max(min_frames, int(duration_s)))`` for clips of at least ``min_frames`` frames,
    ``short_clip_frames`` for shorter clips, 0 below ``skip_below`` frames. Never more than ``num_frames``
    (only matters for clips slower than 1 fps). ``max_frames`` lets a caller retry with fewer frames
    (e.g. after running out of GPU memory) or more (quality refinement) while keeping the rule.
    """
    if num_frames < skip_below:
        return 0
    if num_frames < min_frames:
        return min(short_clip_frames, num_frames)
    whole_seconds = int(max(0.0, duration_s))
    n = min(max_frames, max(min_frames, whole_seconds))
    return max(1, min(n, num_frames))


def caption_frame_plan(
    num_frames: int,
    duration_s: float,
    *,
    min_frames: int = CAPTION_MIN_FRAMES,
    max_frames: int = CAPTION_MAX_FRAMES,
    short_clip_frames: int = CAPTION_SHORT_CLIP_FRAMES,
    skip_below: int = CAPTION_SKIP_BELOW,
) -> FramePlan:
    """The original captioner's frame choice for one clip: uniform indices, or a skip reason."""
    n = caption_num_frames(
        num_frames,
        duration_s,
        min_frames=min_frames,
        max_frames=max_frames,
        short_clip_frames=short_clip_frames,
        skip_below=skip_below,
    )
    if n == 0:
        return FramePlan((), f"too few frames: {num_frames} < {skip_below}")
    return FramePlan(tuple(uniform_indices(num_frames, n)))


def interval_indices(num_frames: int, interval: int, start_offset: int = 0) -> list[int]:
    """Every ``interval``-th frame of a clip, starting at ``start_offset`` (original eval sampling)."""
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    if start_offset < 0:
        raise ValueError(f"start_offset must be >= 0, got {start_offset}")
    return list(range(start_offset, max(0, num_frames), interval))


def next_start_offset(num_frames: int, interval: int, start_offset: int = 0) -> int:
    """Offset into the next clip so that the stride continues across the clip boundary.

    The original's rule ``(interval - remaining) % interval`` with ``remaining = (num_frames - offset) %
    interval``, i.e. ``(start_offset - num_frames) mod interval``: the next clip's first sampled frame is
    exactly ``interval`` frames after this clip's last sampled one (or, if this clip was shorter than its
    offset, the offset just shrinks by its length).
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    return (start_offset - max(0, num_frames)) % interval


def clip_start_offsets(frame_counts: Iterable[int], interval: int, start_offset: int = 0) -> list[int]:
    """Start offset of each clip of a video (clips in order) for full-video interval sampling."""
    offsets = []
    offset = start_offset
    for n in frame_counts:
        offsets.append(offset)
        offset = next_start_offset(n, interval, offset)
    return offsets


def video_interval_indices(frame_counts: Sequence[int], interval: int) -> list[list[int]]:
    """Per-clip frame indices for the full video: sampling the concatenation every ``interval`` frames.

    ``result[c]`` are indices local to clip ``c``; concatenated with each clip's start they are exactly
    ``range(0, sum(frame_counts), interval)``.
    """
    offsets = clip_start_offsets(frame_counts, interval)
    return [interval_indices(n, interval, o) for n, o in zip(frame_counts, offsets, strict=True)]
