"""Cut lists -> scene (clip) ranges, and the pure cut-decision rules shared by the detectors.

Everything here works on plain frame indices and per-frame scores, with no video I/O, so that the
rules are unit-testable and the fast backend can re-threshold cached scores (e.g. in the adaptive
threshold loop) without decoding again.

Conventions: frames are 0-based in presentation order; a *cut* is the index of the first frame of a
new scene (always > 0); scene ranges are half-open ``(start_frame, end_frame)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MERGE = "merge"
SUPPRESS = "suppress"


def seconds_to_frames(seconds: float, fps: float) -> int:
    """Minimum lengths given in seconds become whole frames by truncation, as the original LoVR did:
    ``ContentDetector(min_scene_len=int(min_clip_duration * fps))`` (5 s at 29.97 fps -> 149 frames,
    where rounding would give 150). The product is computed in the same float arithmetic."""
    if seconds <= 0 or fps <= 0:
        return 0
    return int(seconds * fps)


# ----------------------------------------------------------------------------------------------------
# scene ranges
# ----------------------------------------------------------------------------------------------------


def scenes_from_cuts(
    cuts: Sequence[int],
    num_frames: int,
    fps: float,
    min_clip_s: float = 5.0,
    *,
    merge_short_tail: bool = False,
) -> list[tuple[int, int]]:
    """Half-open ``(start_frame, end_frame)`` clip ranges covering ``[0, num_frames)`` exactly.

    Rule (stated once, applied to every detector's output):

    1. Cuts are sorted and de-duplicated; cuts ``<= 0`` or ``>= num_frames`` are dropped.
    2. A video with no cut is one clip; a video shorter than the minimum (``min_clip_s`` converted with
       :func:`seconds_to_frames`) is one clip, whatever the cuts say. (The original gets *no* scene from
       PySceneDetect for a video without a cut and silently drops the video; losing a video is a bug, so
       it is not copied.)
    3. The last scene is kept as it is, even when shorter than the minimum: PySceneDetect's scene list ends
       with the part after the last cut whatever its length, and the original cut that part into its own
       clip. ``merge_short_tail=True`` (lovr_hf's option) joins a short last part to the previous clip.
    4. Scanning left to right, any other clip shorter than the minimum is merged into a neighbour: a
       short first clip joins the next one, a later one joins the previous one.

    The content detectors keep cuts at least ``min_scene_len`` apart and after the first frame
    (PySceneDetect's flash filter), so for them rule 4 never fires and the ranges are exactly
    PySceneDetect's scene list; other detectors (TransNetV2) may produce short interior scenes.
    """
    if num_frames <= 0:
        return []
    min_len = seconds_to_frames(min_clip_s, fps)
    bounds = sorted({int(c) for c in cuts if 0 < int(c) < num_frames})
    if num_frames < min_len or not bounds:
        return [(0, num_frames)]
    starts = [0, *bounds]
    ends = [*bounds, num_frames]
    ranges = [[s, e] for s, e in zip(starts, ends, strict=True)]
    tail = None if merge_short_tail else ranges.pop()
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and (merged[-1][1] - merged[-1][0] < min_len or end - start < min_len):
            merged[-1][1] = end  # short first clip absorbs the next; short later clip joins the previous
        else:
            merged.append([start, end])
    if tail is not None:
        if merged and merged[-1][1] - merged[-1][0] < min_len:
            merged[-1][1] = tail[1]  # a short first clip still joins its neighbour, here the tail
        else:
            merged.append(tail)
    return [(s, e) for s, e in merged]


# ----------------------------------------------------------------------------------------------------
# PySceneDetect 0.7 decision rules, on arrays
# ----------------------------------------------------------------------------------------------------


def flash_filter(above: np.ndarray, min_len: int, mode: str = MERGE) -> list[int]:
    """Cut frames from a per-frame "score >= threshold" mask, with PySceneDetect 0.7's ``FlashFilter``
    semantics (``scenedetect.detector.FlashFilter``, lengths in frames, first frame = 0).

    ``merge`` (ContentDetector's default): a cut is emitted when an above-threshold frame comes at
    least ``min_len`` frames after the previous above-threshold frame; after the first cut, a burst of
    closer above-threshold frames is merged and reported at its last frame once ``min_len`` quiet frames
    follow and the burst spans at least ``min_len`` frames (otherwise it keeps merging into the next
    burst). ``suppress``: a cut is emitted when at least ``min_len`` frames passed since the last cut.
    """
    idx = np.flatnonzero(np.asarray(above, dtype=bool))
    n = len(above)
    if min_len <= 0:
        return [int(i) for i in idx if i > 0]
    cuts: list[int] = []
    if mode == SUPPRESS:
        last = 0
        for a in idx:
            if a - last >= min_len:
                cuts.append(int(a))
                last = int(a)
        return [c for c in cuts if c > 0]
    if mode != MERGE:
        raise ValueError(f"unknown flash filter mode {mode!r}")
    last_above = 0
    merge_enabled = False
    triggered = False
    merge_start = 0
    for a in idx.tolist():
        if triggered:
            # a quiet frame at last_above + min_len (before this above frame) releases the merge
            release_at = last_above + min_len
            if release_at < a and last_above - merge_start >= min_len:
                cuts.append(last_above)
                triggered = False
        if not triggered:
            if a - last_above >= min_len:
                merge_enabled = True
                cuts.append(a)
            elif merge_enabled:
                triggered = True
                merge_start = a
        last_above = a
    if triggered and last_above + min_len < n and last_above - merge_start >= min_len:
        cuts.append(last_above)
    return [c for c in cuts if c > 0]


class OnlineFlashFilter:
    """:func:`flash_filter` one frame at a time, for a single pass that cuts while it detects.

    :meth:`push` takes frame ``i``'s "score >= threshold" flag (frames in order from 0) and returns the
    cuts that became known at that frame; :attr:`horizon` is the first frame whose scene is not final
    yet: no cut before it can appear any more (while a merge is pending, the merged cut will be at or
    after the last above-threshold frame; otherwise cuts are only ever emitted at the frame pushed).
    The same decisions as :func:`flash_filter` on the whole mask (tested against each other).
    """

    def __init__(self, min_len: int, mode: str = MERGE) -> None:
        if mode not in (MERGE, SUPPRESS):
            raise ValueError(f"unknown flash filter mode {mode!r}")
        self.min_len, self.mode = int(min_len), mode
        self.next = 0  # next frame to push
        self.last_above = 0
        self.last_cut = 0
        self.merge_enabled = False
        self.triggered = False
        self.merge_start = 0
        self.cuts: list[int] = []

    @property
    def horizon(self) -> int:
        return self.last_above if self.mode == MERGE and self.triggered else self.next

    def push(self, above: bool) -> list[int]:
        i, self.next = self.next, self.next + 1
        out: list[int] = []
        if self.min_len <= 0:
            out = [i] if above else []
        elif self.mode == SUPPRESS:
            if above and i - self.last_cut >= self.min_len:
                self.last_cut = i
                out = [i]
        elif above:
            if not self.triggered:
                if i - self.last_above >= self.min_len:
                    self.merge_enabled = True
                    out = [i]
                elif self.merge_enabled:
                    self.triggered, self.merge_start = True, i
            self.last_above = i
        elif self.triggered and i - self.last_above >= self.min_len and self.last_above - self.merge_start >= self.min_len:
            self.triggered = False
            out = [self.last_above]
        out = [c for c in out if c > 0]
        self.cuts.extend(out)
        return out


def adaptive_cuts(
    scores: np.ndarray,
    min_len: int,
    adaptive_threshold: float = 3.0,
    window_width: int = 2,
    min_content_val: float = 15.0,
) -> list[int]:
    """PySceneDetect 0.7 ``AdaptiveDetector`` on a per-frame content score array (``scores[0] == 0``):
    a frame is a cut when its score is ``adaptive_threshold`` times the mean score of the
    ``window_width`` frames on each side and at least ``min_content_val``, and ``min_len`` frames passed
    since the previous cut (the first frame counts as the previous cut)."""
    s = np.asarray(scores, dtype=np.float64)
    n, w = len(s), int(window_width)
    if w < 1:
        raise ValueError("window_width must be at least 1")
    if n < 2 * w + 1:
        return []
    csum = np.concatenate([[0.0], np.cumsum(s)])
    t = np.arange(w, n - w)
    window = csum[t + w + 1] - csum[t - w]
    avg = (window - s[t]) / (2.0 * w)
    # sums of floats in a different order than PySceneDetect's: recompute exactly where it matters
    ratio = np.zeros(len(t))
    nz = np.abs(avg) >= 0.00001
    ratio[nz] = np.minimum(s[t][nz] / avg[nz], 255.0)
    ratio[~nz & (s[t] >= min_content_val)] = 255.0
    cand = t[(ratio >= adaptive_threshold * 0.999) & (s[t] >= min_content_val)]
    cuts: list[int] = []
    last = 0
    for c in cand:
        c = int(c)
        buf = s[c - w : c + w + 1]
        a = sum(float(x) for i, x in enumerate(buf) if i != w) / (2.0 * w)
        if abs(a) < 0.00001:
            r = 255.0 if s[c] >= min_content_val else 0.0
        else:
            r = min(float(s[c]) / a, 255.0)
        if r >= adaptive_threshold and c - last >= min_len:
            cuts.append(c)
            last = c
    return [c for c in cuts if c > 0]


def suppress_flashes(
    scores: np.ndarray, return_dist: np.ndarray, return_len: np.ndarray, threshold: float
) -> np.ndarray:
    """Above-threshold mask with flashes removed (the fast backend's opt-in ``flash_guard``).

    ``return_dist[i]``/``return_len[i]``: the smallest content distance between frame ``i-1`` and one of
    the next few frames ``i-1+k`` and that ``k`` (``inf``/0 where not computed). When frame ``i`` jumps
    above the threshold but the picture comes back within ``k`` frames (distance below the threshold),
    frames ``i .. i-1+k`` are a flash (or a single-frame glitch), not a cut.
    """
    above = np.asarray(scores) >= threshold
    for i in np.flatnonzero(above & (np.asarray(return_dist) < threshold)):
        k = int(return_len[i])
        above[i : i + k] = False
    return above


# ----------------------------------------------------------------------------------------------------
# threshold search and evaluation
# ----------------------------------------------------------------------------------------------------


@dataclass
class ThresholdSearch:
    threshold: float
    cuts: list[int]
    iterations: int
    history: list[tuple[float, int]]  # (threshold tried, clips found)
    converged: bool


def adaptive_threshold_search(
    detect_fn: Callable[[float], Sequence[int]],
    start: float = 34.0,
    min_clips: int = 64,
    max_clips: int = 100,
    max_iter: int = 10,
    count_fn: Callable[[Sequence[int]], int] | None = None,
) -> ThresholdSearch:
    """The original LoVR loop (disabled there, opt-in here): lower the threshold x0.9 while fewer than
    ``min_clips`` clips come out, raise it x1.1 while more than ``max_clips``; stop when inside the
    range, after ``max_iter`` detections, or when the search starts oscillating (a threshold repeats).

    ``count_fn`` turns cuts into a clip count (default ``len(cuts) + 1``; pass one built on
    :func:`scenes_from_cuts` to count after the minimum-length merge). Returns the threshold it settled
    on (the last one tried, or on oscillation the one whose count was closest to the range).
    """
    if min_clips > max_clips:
        raise ValueError("min_clips must be <= max_clips")
    count = count_fn or (lambda c: len(c) + 1)
    thr = float(start)
    history: list[tuple[float, int]] = []
    tried: dict[float, list[int]] = {}
    best: tuple[float, float, list[int]] | None = None  # (distance to range, threshold, cuts)
    for it in range(1, max(1, max_iter) + 1):
        cuts = list(detect_fn(thr))
        n = count(cuts)
        history.append((thr, n))
        tried[round(thr, 9)] = cuts
        dist = 0 if min_clips <= n <= max_clips else min(abs(n - min_clips), abs(n - max_clips))
        if best is None or dist < best[0]:
            best = (dist, thr, cuts)
        if dist == 0:
            return ThresholdSearch(thr, cuts, it, history, True)
        nxt = thr * 0.9 if n < min_clips else thr * 1.1
        if round(nxt, 9) in tried or nxt <= 0 or math.isclose(nxt, thr):
            logger.info("threshold search oscillates at %.3f; keeping the closest count", thr)
            break
        thr = nxt
    assert best is not None
    return ThresholdSearch(best[1], best[2], len(history), history, False)


def match_cuts(pred: Sequence[int], truth: Sequence[int], tolerance: int = 1) -> tuple[int, int, int]:
    """Greedy one-to-one matching of predicted and true cut frames within ``tolerance`` frames.
    Returns (true positives, false positives, false negatives)."""
    p = sorted(int(x) for x in pred)
    t = sorted(int(x) for x in truth)
    used = [False] * len(t)
    tp = 0
    j0 = 0
    for x in p:
        while j0 < len(t) and t[j0] < x - tolerance:
            j0 += 1
        j = j0
        while j < len(t) and t[j] <= x + tolerance:
            if not used[j]:
                used[j] = True
                tp += 1
                break
            j += 1
    return tp, len(p) - tp, len(t) - tp


def cut_prf(pred: Sequence[int], truth: Sequence[int], tolerance: int = 1) -> tuple[float, float, float]:
    """Precision, recall, F1 of predicted cuts against true cuts (+/- ``tolerance`` frames).
    Empty prediction and empty truth count as perfect."""
    tp, fp, fn = match_cuts(pred, truth, tolerance)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
