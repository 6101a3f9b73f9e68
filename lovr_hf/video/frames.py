"""Which frames to read: the original LoVR sampling rules as pure functions (no decoding here).

Two families:

* **Captioning** (original ``caption_generator.py``): a clip asks for ``min(64, max(8, whole seconds))``
  frames (``int(frame_count / fps)`` seconds); a clip with fewer than 8 frames asks for 2; a clip with fewer
  than 5 frames is skipped (with a reason the stage records on the row). The original hands that count to
  ``qwen_vl_utils`` (``{"nframes": n}``), which decides what the model really gets: ``smart_nframes``
  rounds the count to a multiple of ``FRAME_FACTOR = 2`` with Python's ``round`` (half to even, so 9 -> 8,
  11 -> 12, 13 -> 12, 15 -> 16) and the readers take ``torch.linspace(0, total - 1, n).round()``, i.e.
  *rounded* uniform indices. :func:`caption_frame_plan` gives exactly those counts and indices (checked
  against qwen_vl_utils 0.0.8, 0.0.10, 0.0.11 and 0.0.14, which agree on both).
* **Evaluation** (original ``encode_video``): every ``interval`` frames of each clip, where the full video
  is the concatenation of its clips and its stride runs on across clip boundaries (the original's
  ``start_offset``); or ``n`` frames uniformly.

:func:`uniform_indices` truncates ``np.linspace(0, num_frames - 1, n)`` by default (lovr_hf's uniform
evaluation sampling, ``--num-frames N``; the released evaluation scripts only sample every ``interval``
frames) and rounds with ``rounding="round"`` (the captioning rule above). ``n`` is clamped to
``num_frames`` so that no frame is read twice.
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
#: qwen_vl_utils.vision_process.FRAME_FACTOR: the frame count the VLM gets is a multiple of this
CAPTION_FRAME_FACTOR = 2
ROUNDINGS = ("truncate", "round")


@dataclass(frozen=True)
class FramePlan:
    """Frame indices to decode for one clip, or why the clip is skipped (``indices`` empty)."""

    indices: tuple[int, ...]
    skip_reason: str | None = None

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None


def uniform_indices(num_frames: int, n: int, *, rounding: str = "truncate") -> list[int]:
    """``n`` frame indices spread uniformly over ``[0, num_frames - 1]`` (first and last included).

    ``rounding``: ``truncate`` (``int()`` of each position, the default) or ``round`` (to the nearest
    frame, half to even, as ``torch.linspace(...).round()`` in qwen_vl_utils). ``n`` is clamped to
    ``num_frames``; ``n <= 0`` or an empty clip gives ``[]``.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if num_frames <= 0 or n <= 0:
        return []
    n = min(n, num_frames)
    pos = np.linspace(0, num_frames - 1, n, dtype=np.float64)
    if rounding == "round":
        pos = np.round(pos)
    return pos.astype(np.int64).tolist()


def round_to_factor(n: int, factor: int = CAPTION_FRAME_FACTOR) -> int:
    """``qwen_vl_utils``' ``round_by_factor``: the multiple of ``factor`` nearest to ``n`` (Python's
    ``round``, so an exact half goes to the even multiple: 9 -> 8, 11 -> 12 for factor 2)."""
    if factor <= 1:
        return int(n)
    return int(round(n / factor)) * factor


def caption_num_frames(
    num_frames: int,
    duration_s: float,
    *,
    min_frames: int = CAPTION_MIN_FRAMES,
    max_frames: int = CAPTION_MAX_FRAMES,
    short_clip_frames: int = CAPTION_SHORT_CLIP_FRAMES,
    skip_below: int = CAPTION_SKIP_BELOW,
    frame_factor: int = CAPTION_FRAME_FACTOR,
) -> int:
    """How many frames the original captioner's VLM gets for a clip; 0 means "skip".

    The count asked for: ``min(max_frames, max(min_frames, int(duration_s)))`` for clips of at least
    ``min_frames`` frames, ``short_clip_frames`` for shorter clips, 0 below ``skip_below`` frames. Then
    qwen_vl_utils' rounding to a multiple of ``frame_factor`` (:func:`round_to_factor`; pass
    ``frame_factor=1`` for the count as asked). To match the original exactly, ``duration_s`` should be
    ``num_frames / fps`` (it computed ``int(frame_count / fps)`` from OpenCV's counts).

    Never more than ``num_frames`` (rounded down to the factor): the original raised there (qwen_vl_utils:
    "nframes should in interval [2, total_frames]", only reachable for clips slower than 1 fps) and lost
    the clip; here the clip keeps every frame it has. ``max_frames`` lets a caller retry with fewer frames
    (e.g. after running out of GPU memory) or more (quality refinement) while keeping the rule.
    """
    if num_frames < skip_below:
        return 0
    if num_frames < min_frames:
        n = short_clip_frames
    else:
        whole_seconds = int(max(0.0, duration_s))
        n = min(max_frames, max(min_frames, whole_seconds))
    f = max(1, int(frame_factor))
    n = round_to_factor(n, f)
    cap = num_frames - num_frames % f
    return max(min(f, num_frames), min(n, cap))


def caption_frame_plan(
    num_frames: int,
    duration_s: float,
    *,
    min_frames: int = CAPTION_MIN_FRAMES,
    max_frames: int = CAPTION_MAX_FRAMES,
    short_clip_frames: int = CAPTION_SHORT_CLIP_FRAMES,
    skip_below: int = CAPTION_SKIP_BELOW,
    frame_factor: int = CAPTION_FRAME_FACTOR,
) -> FramePlan:
    """The original captioner's frame choice for one clip, as qwen_vl_utils makes it: the count of
    :func:`caption_num_frames` at rounded uniform indices (``torch.linspace(0, n - 1, k).round()``), or a
    skip reason."""
    n = caption_num_frames(
        num_frames,
        duration_s,
        min_frames=min_frames,
        max_frames=max_frames,
        short_clip_frames=short_clip_frames,
        skip_below=skip_below,
        frame_factor=frame_factor,
    )
    if n == 0:
        return FramePlan((), f"too few frames: {num_frames} < {skip_below}")
    return FramePlan(tuple(uniform_indices(num_frames, n, rounding="round")))


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
