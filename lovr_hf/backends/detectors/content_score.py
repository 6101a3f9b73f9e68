"""ContentDetector's per-frame score (PySceneDetect's ``content_val``) at decode speed: :func:`content_scores`.

Why a re-implementation: PySceneDetect converts every full frame to BGR (swscale), then resizes and
converts to HSV, which costs about as much as decoding. Here every frame is still scored, but only the
pixels that survive the downscale are touched: the decoded YUV 4:2:0 planes are shrunk in place (for an
integer factor by sampling the pixels ``cv2.resize(..., INTER_LINEAR)`` centres on, for a fractional
factor by ``cv2.resize(..., INTER_LINEAR)`` of each plane to PySceneDetect's output size), a batch of
those small images is converted YUV -> BGR -> HSV at once, and the per-channel mean absolute differences
of consecutive frames give ContentDetector's ``content_val``. The cut decision is the detectors' own
(:mod:`lovr_hf.backends.detectors.fast`).

Colour: BT.601, limited range unless the stream says full range (``yuvj*`` / JPEG range), which is what
swscale does by default for the BGR frames PySceneDetect sees. Sampling the planes instead of
bilinear resizing moves scores by a fraction of a unit, so cut frames agree with PySceneDetect except
on frames whose score sits right at the threshold.

Speed, measured by ``scripts/bench_segment.py`` on 2 heavily shared cores (load average 8-14): a bare
PyAV decode of the same file costs 0.6-0.8x the CPU time per frame of this backend (PySceneDetect's
OpenCV path: 0.4-0.55x), i.e. 1.3-1.6x less CPU than PySceneDetect's fastest stock run. The colour
conversion runs on a worker thread (OpenCV releases the GIL), so on an idle machine wall-clock speed
is closer to decode speed than the CPU ratio suggests.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lovr_hf.backends.detectors.detector_base import (
    DEFAULT_DOWNSCALE,
    VideoReadError,
    effective_downscale,
    iter_frames,
    open_video,
    stream_fps,
)


def _sample_slice(src: int, dst: int, factor: int, offset: int) -> slice:
    """``dst`` samples ``offset, offset + factor, ...`` of a ``src``-long axis (clipped to the axis)."""
    last = min(offset + factor * (dst - 1), src - 1)
    n = (last - offset) // factor + 1
    return slice(offset, offset + factor * (n - 1) + 1, factor)


class PlaneSampler:
    """Gathers a small I420 image from a decoded 4:2:0 frame, touching only the rows it needs.

    Integer factor ``f``: luma output pixel ``i`` takes source pixel ``(f - 1) // 2 + f * i`` - the pixel
    that ``cv2.resize(INTER_LINEAR)`` centres on. Chroma: one sample per 2x2 output block (as in any 4:2:0
    image), taken under the block's top-left luma sample. Output sizes are PySceneDetect's
    ``round(size / f)`` rounded down to even (I420 needs even sizes), i.e. at most one row/column fewer
    than PySceneDetect scores.

    Fractional factor (``"auto"`` downscale, e.g. 7.5 at 1080p): each plane is resized with
    ``cv2.resize(INTER_LINEAR)`` to PySceneDetect's output size ``(round(w / f), round(h / f))`` (chroma
    to half of it, rounded up), then cropped to even sizes: the same bilinear sampling positions as
    PySceneDetect's resize of the BGR frame.

    Speed: a strided 2-D numpy gather straight from a cold frame buffer is ~2.5x slower than copying the
    needed rows contiguously and then de-interleaving every ``f``-th byte with ``cv2.extractChannel``
    on the (cache-hot) row buffer, so that is what :meth:`sample` does for integer factors.
    """

    def __init__(self, width: int, height: int, downscale: float) -> None:
        factor = float(downscale)
        if factor < 1:
            raise ValueError(f"downscale factor must be >= 1, got {downscale}")
        self.fractional = not factor.is_integer()
        if self.fractional:
            self._init_resize(width, height, factor)
            return
        f = self.f = int(factor)
        ow = max(2, round(width / f)) // 2 * 2
        oh = max(2, round(height / f)) // 2 * 2
        off = (f - 1) // 2
        ys, xs = _sample_slice(height, oh, f, off), _sample_slice(width, ow, f, off)
        yc, xc = _sample_slice((height + 1) // 2, oh // 2, f, off // 2), _sample_slice((width + 1) // 2, ow // 2, f, off // 2)
        # very small frames: fewer source pixels than output pixels -> shrink the output
        oh = min(oh, len(range(height)[ys]) // 2 * 2, 2 * len(range((height + 1) // 2)[yc]))
        ow = min(ow, len(range(width)[xs]) // 2 * 2, 2 * len(range((width + 1) // 2)[xc]))
        if oh < 2 or ow < 2:
            raise VideoReadError(f"frame too small to score: {width}x{height}")
        self.out_w, self.out_h = ow, oh
        # per plane: rows to copy, columns [first group start, f * n_cols), channel, output shape
        self.specs = [
            (slice(ys.start, ys.start + f * (oh - 1) + 1, f), xs.start, oh, ow),
            (slice(yc.start, yc.start + f * (oh // 2 - 1) + 1, f), xc.start, oh // 2, ow // 2),
            (slice(yc.start, yc.start + f * (oh // 2 - 1) + 1, f), xc.start, oh // 2, ow // 2),
        ]
        self.row_bufs = [np.empty((nr, f * nc), np.uint8) for _, _, nr, nc in self.specs]

    def _init_resize(self, width: int, height: int, factor: float) -> None:
        self.f = factor
        fw, fh = max(1, round(width / factor)), max(1, round(height / factor))  # PySceneDetect's size
        ow, oh = fw // 2 * 2, fh // 2 * 2
        if oh < 2 or ow < 2:
            raise VideoReadError(f"frame too small to score: {width}x{height}")
        self.out_w, self.out_h = ow, oh
        cw, ch = (width + 1) // 2, (height + 1) // 2
        # per plane: source (w, h), resize target (w, h), output (w, h)
        self.rspecs = [((width, height), (fw, fh), (ow, oh)),
                       ((cw, ch), ((fw + 1) // 2, (fh + 1) // 2), (ow // 2, oh // 2)),
                       ((cw, ch), ((fw + 1) // 2, (fh + 1) // 2), (ow // 2, oh // 2))]
        self.rbufs = [None if t == o else np.empty((t[1], t[0]), np.uint8) for _, t, o in self.rspecs]

    def sample(self, frame: Any, y_out: np.ndarray, u_out: np.ndarray, v_out: np.ndarray) -> None:
        if self.fractional:
            for plane, out, ((sw, sh), (tw, th), (ow, oh)), rb in zip(
                frame.planes[:3], (y_out, u_out, v_out), self.rspecs, self.rbufs, strict=True
            ):
                arr = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:sh, :sw]
                if rb is None:
                    cv2.resize(arr, (tw, th), dst=out, interpolation=cv2.INTER_LINEAR)
                else:
                    cv2.resize(arr, (tw, th), dst=rb, interpolation=cv2.INTER_LINEAR)
                    out[...] = rb[:oh, :ow]
            return
        f = self.f
        for plane, out, (rows, col0, nr, nc), rb in zip(
            frame.planes[:3], (y_out, u_out, v_out), self.specs, self.row_bufs, strict=True
        ):
            ls = plane.line_size
            arr = np.frombuffer(plane, np.uint8).reshape(-1, ls)
            if f == 1:
                out[...] = arr[:nr, :nc]
            elif f * nc <= ls and col0 < f:
                rb[...] = arr[rows, : f * nc]
                cv2.extractChannel(rb.reshape(nr, nc, f), col0, dst=out)
            else:  # rows too short to group (unpadded odd sizes): plain strided gather
                out[...] = arr[rows, col0 : col0 + f * (nc - 1) + 1 : f]


def _full_to_limited_luts() -> tuple[np.ndarray, np.ndarray]:
    """Full-range (JPEG) samples -> limited range, so OpenCV's limited-range I420 conversion applies."""
    v = np.arange(256, dtype=np.float64)
    y = np.clip(np.round(16 + v * 219.0 / 255.0), 0, 255).astype(np.uint8)
    c = np.clip(np.round(128 + (v - 128) * 224.0 / 255.0), 0, 255).astype(np.uint8)
    return y, c


def _estimated_kernel_size(frame_width: int, frame_height: int) -> int:
    """PySceneDetect's edge dilation kernel size for a (downscaled) frame size."""
    size = 4 + round(np.sqrt(frame_width * frame_height) / 192)
    return size + 1 if size % 2 == 0 else size


def _edges(lum: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    median = np.median(lum)
    low = int(max(0, (1.0 - 1.0 / 3.0) * median))
    high = int(min(255, (1.0 + 1.0 / 3.0) * median))
    return cv2.dilate(cv2.Canny(lum, low, high), kernel)


@dataclass
class FrameScores:
    """Per-frame content scores of one video plus what the flash guard needs."""

    scores: np.ndarray  # content_val of frame i vs frame i-1; scores[0] == 0
    components: np.ndarray  # [n, 4] delta_hue, delta_sat, delta_lum, delta_edges
    return_dist: np.ndarray  # see lovr_hf.video.scenes.suppress_flashes
    return_len: np.ndarray
    fps: float
    width: int
    height: int
    frame_times: np.ndarray  # presentation time of every frame in seconds (NaN where unknown): VFR-safe times
    downscale: float = 1.0  # the factor frames were shrunk by ("auto" resolved)

    @property
    def num_frames(self) -> int:
        return len(self.scores)


class Scorer:
    """Batches sampled frames, converts each batch I420 -> BGR -> HSV in two OpenCV calls, and keeps
    the per-frame component distances (plus the flash look-ahead distances)."""

    def __init__(
        self,
        sampler: PlaneSampler,
        weights: np.ndarray,
        batch_size: int,
        full_range: bool,
        flash_lookahead: int,
        flash_floor: float,
        threaded: bool = True,
    ) -> None:
        self.sampler = sampler
        h, w, b = sampler.out_h, sampler.out_w, batch_size
        self.h, self.w, self.b = h, w, b
        # two batches: the decode loop fills one while a worker thread converts the other (OpenCV
        # releases the GIL, so the conversion overlaps with decoding on a spare core)
        self.bufs = []
        for _ in range(2):
            buf = np.zeros((b * h * 3 // 2, w), np.uint8)  # one tall I420 image: all Y, then all U, all V
            q = b * h // 4
            self.bufs.append(
                (buf, buf[: b * h].reshape(b, h, w), buf[b * h : b * h + q].reshape(b, h // 2, w // 2),
                 buf[b * h + q :].reshape(b, h // 2, w // 2))
            )
        self.cur = 0
        self.futures: list[Future | None] = [None, None]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lovr-scenescore") if threaded else None
        self.luts = _full_to_limited_luts() if full_range else None
        self.weights = weights
        self.hsv_w = weights[:3] / (np.abs(weights[:3]).sum() or 1.0)
        self.use_edges = weights[3] != 0
        k = _estimated_kernel_size(w, h)
        self.kernel = np.ones((k, k), np.uint8)
        self.lookahead = flash_lookahead
        self.floor = flash_floor
        self.fill = 0
        self.n_done = 0
        self.prev: np.ndarray | None = None
        self.prev_edges: np.ndarray | None = None
        self.comps: list[np.ndarray] = []
        self.hist: list[np.ndarray] = []
        self.hist_base = 0
        self.pending: list[int] = []
        self.ret: dict[int, tuple[float, int]] = {}

    def add(self, frame: Any) -> None:
        _, Y, U, V = self.bufs[self.cur]
        i = self.fill
        if i == 0 and self.futures[self.cur] is not None:
            self.futures[self.cur].result()  # the worker is done with this buffer
            self.futures[self.cur] = None
        self.sampler.sample(frame, Y[i], U[i], V[i])
        self.fill += 1
        if self.fill == self.b:
            self._submit()

    def _submit(self) -> None:
        if self.fill == 0:
            return
        if self.pool is None:
            self._convert(self.cur, self.fill)
        else:
            self.futures[self.cur] = self.pool.submit(self._convert, self.cur, self.fill)
        self.cur = 1 - self.cur
        self.fill = 0

    def _dist(self, a: np.ndarray, b: np.ndarray) -> float:
        d = np.asarray(cv2.sumElems(cv2.absdiff(a, b))[:3]) / float(self.h * self.w)
        return float(d @ self.hsv_w)

    def _convert(self, which: int, count: int) -> None:
        """Runs on the worker thread, one batch at a time, in order."""
        buf = self.bufs[which][0]
        h, w = self.h, self.w
        if self.luts is not None:
            nY = self.b * h
            buf[:nY] = cv2.LUT(buf[:nY], self.luts[0])
            buf[nY:] = cv2.LUT(buf[nY:], self.luts[1])
        bgr = cv2.cvtColor(buf, cv2.COLOR_YUV2BGR_I420)
        hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).reshape(self.b, h, w, 3)[:count]
        c = np.zeros((count, 4))
        npx = float(h * w)
        prev = self.prev
        for i in range(count):
            cur = hsv[i]
            if prev is not None:
                c[i, :3] = cv2.sumElems(cv2.absdiff(cur, prev))[:3]
            prev = cur
        c[:, :3] /= npx
        if self.use_edges:
            for i in range(count):
                e = _edges(np.ascontiguousarray(hsv[i, :, :, 2]), self.kernel)
                if self.prev_edges is not None:
                    c[i, 3] = cv2.norm(e, self.prev_edges, cv2.NORM_L1) / npx
                self.prev_edges = e
        self.comps.append(c)
        base = self.n_done
        if self.lookahead > 0:
            scores = c @ self.weights / np.abs(self.weights).sum()
            self.pending.extend(base + int(i) for i in np.flatnonzero(scores >= self.floor) if base + i > 0)
            self.hist.extend(hsv[i] for i in range(count))  # views: each batch's HSV array is fresh
            self._resolve(final=False, total=base + count)
        self.prev = hsv[count - 1].copy()
        self.n_done += count

    def _resolve(self, final: bool, total: int) -> None:
        still = []
        for g in self.pending:
            if not final and g - 1 + self.lookahead >= total:
                still.append(g)
                continue
            ref = self.hist[g - 1 - self.hist_base]
            best, best_k = np.inf, 0
            for k in range(1, self.lookahead + 1):
                j = g - 1 + k - self.hist_base
                if j >= len(self.hist):
                    break
                dk = self._dist(ref, self.hist[j])
                if dk < best:
                    best, best_k = dk, k
            self.ret[g] = (best, best_k)
        self.pending = still
        keep = self.lookahead + 2
        drop = max(0, len(self.hist) - keep)
        if drop:
            del self.hist[:drop]
            self.hist_base += drop

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._submit()
        for fut in self.futures:
            if fut is not None:
                fut.result()
        self.close()
        if self.lookahead > 0:
            self._resolve(final=True, total=self.n_done)
        components = np.concatenate(self.comps) if self.comps else np.zeros((0, 4))
        rd = np.full(len(components), np.inf)
        rl = np.zeros(len(components), np.int64)
        for g, (d, k) in self.ret.items():
            rd[g], rl[g] = d, k
        return components, rd, rl


def content_scores(
    path: str | os.PathLike,
    downscale: int | str = DEFAULT_DOWNSCALE,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0),
    batch_size: int = 32,
    thread_type: str = "AUTO",
    flash_lookahead: int = 3,
    flash_floor: float = 8.0,
    threaded: bool = True,
    threads: int = 0,
) -> FrameScores:
    """ContentDetector's per-frame score for every frame of ``path``, decoding once with PyAV.

    ``flash_lookahead``: for frames scoring >= ``flash_floor`` the distance between the previous frame
    and each of the next ``flash_lookahead`` frames is also measured (cheap: only such frames), so that
    the opt-in flash guard can be applied at any threshold afterwards. ``threads``: decoder threads
    (0: FFmpeg's automatic count; the segment stage sizes it when several videos run in parallel).
    """
    path = os.fspath(path)
    w8 = np.asarray(weights, dtype=np.float64)
    if w8.shape != (4,) or not np.any(w8):
        raise ValueError("weights must be 4 numbers (hue, sat, lum, edges), not all zero")
    container, stream = open_video(path)
    scorer: Scorer | None = None
    width = height = 0
    factor = 1.0
    times: list[float] = []
    target = "yuv420p"
    try:
        if thread_type:
            stream.thread_type = thread_type
        if threads:
            stream.codec_context.thread_count = int(threads)
        fps = stream_fps(stream)
        for frame in iter_frames(container, stream, path):
            if scorer is None:
                width, height = frame.width, frame.height
                full = frame.format.name == "yuvj420p" or int(getattr(frame, "color_range", 0) or 0) == 2
                target = "yuvj420p" if frame.format.name == "yuvj420p" else "yuv420p"
                factor = effective_downscale(downscale, width, height)
                scorer = Scorer(PlaneSampler(width, height, factor), w8, batch_size, full,
                                 flash_lookahead, flash_floor, threaded)
            if frame.format.name != target or frame.width != width or frame.height != height:
                # other pixel formats (10-bit, 4:2:2, RGB...) and mid-stream size changes: convert once
                frame = frame.reformat(width=width, height=height, format=target)
            times.append(frame.time if frame.pts is not None else math.nan)
            scorer.add(frame)
        if scorer is None:
            raise VideoReadError(f"{path}: no decodable video frame")
        components, rd, rl = scorer.finish()
    finally:
        container.close()
        if scorer is not None:
            scorer.close()
    scores = components @ w8 / np.abs(w8).sum()
    return FrameScores(scores, components, rd, rl, fps, width, height, np.asarray(times, dtype=np.float64),
                       factor)
