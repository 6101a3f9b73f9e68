"""One video reader for all of lovr_hf: probe, frame-exact reads by index, clip rows.

Why this module exists: decord (what the original LoVR evaluation reads clips with) trusts its own frame
count, ``len(vr)``, which over-reports on stream-copied files -- their hidden pre-roll packets count as
frames -- so any sampling by index lands on the wrong frames there. (The original's own clips were
re-encoded by ``split_video_ffmpeg``, libx264 CRF 22, and do not have that problem; ``copy``-mode clips and
``ffmpeg -c copy`` cuts do.) Here a frame's *index* is its position in presentation order among the frames
a full decode yields (:mod:`lovr_hf.video.frame_index`), and every reader (PyAV, decord through
:mod:`lovr_hf.video.decord_read`, seeks or not) must return exactly those frames.

Frames are returned as RGB ``uint8 [n, H, W, 3]`` in display orientation (the display-matrix rotation is
applied), so ``VideoInfo.width/height`` are display sizes as well.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from lovr_hf.ids import safe_join
from lovr_hf.video.decord_read import clear_decord_readers, read_with_decord
from lovr_hf.video.frame_index import (
    FrameIndex,
    VideoError,
    VideoInfo,
    _open,
    build_index,
    build_index_for_key,
    clear_index_cache,
    file_key,
    first_video_stream,
)

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "decord")
# Seek only when the keyframe before the next wanted frame is this many frames past the decoder's
# position: decoding a few frames forward is cheaper than flushing the decoder.
SEEK_GAP = 16


def clear_cache() -> None:
    """Forget cached indexes, probes and open decord readers (benchmarks, or files rewritten within one
    mtime tick)."""
    clear_index_cache()
    _probe_cached.cache_clear()
    clear_decord_readers()


# ---------------------------------------------------------------------------------------------------------
# probing


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Exact facts about a video; raises :class:`VideoError` with a clear message for unusable files."""
    return _probe_cached(*file_key(path))


@functools.lru_cache(maxsize=256)
def _probe_cached(path: str, size: int, mtime_ns: int) -> VideoInfo:
    index = build_index_for_key(path, size, mtime_ns)
    with _open(path) as c:
        vs = first_video_stream(c, path)
        vs.thread_type = "AUTO"
        codec = vs.codec_context.name
        first = None
        decoded = 0
        try:
            for frame in c.decode(vs):
                if first is None:
                    first = frame
                    if index.reliable:
                        break
                decoded += 1  # unreliable timestamps: count by decoding
        except av.error.FFmpegError as e:
            if first is None:
                raise VideoError(f"{path}: undecodable video stream ({codec}): {e}") from None
            if not index.reliable:
                raise VideoError(f"{path}: decoding failed after {decoded} frames: {e}") from None
        if first is None:
            raise VideoError(f"{path}: no decodable frame in the video stream ({codec})")
        rotation = _rotation_of(first, vs)
        coded_w, coded_h = first.width, first.height
        avg = vs.average_rate
        guessed = vs.guessed_rate
        container_s = (c.duration or 0) / 1e6
    n = index.num_frames if index.reliable else decoded
    duration = index.duration_s() if index.reliable else 0.0
    if avg and float(avg) > 0:
        fps = float(avg)  # the container's average rate (frames / duration, also for VFR)
    elif duration > 0:
        fps = n / duration
    elif guessed and float(guessed) > 0:
        fps = float(guessed)
    elif container_s > 0:
        fps = n / container_s
    else:
        fps = 0.0
    if duration <= 0:  # no usable timestamps
        duration = n / fps if fps > 0 else container_s
    w, h = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    return VideoInfo(
        duration_s=float(duration),
        fps=fps,
        num_frames=int(n),
        width=int(w),
        height=int(h),
        rotation=rotation,
        codec=str(codec),
        coded_width=int(coded_w),
        coded_height=int(coded_h),
    )


def _rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Display rotation (degrees counter-clockwise, multiple of 90) from the frame's display matrix."""
    rot = 0
    try:
        rot = int(round(frame.rotation or 0))
    except (AttributeError, TypeError, ValueError):
        rot = 0
    if not rot:
        tag = stream.metadata.get("rotate")  # old muxers: clockwise degrees in a tag
        if tag:
            try:
                rot = -int(float(tag))
            except ValueError:
                rot = 0
    return int(round(rot / 90.0)) * 90 % 360


def frame_times(path: str | os.PathLike[str]) -> np.ndarray:
    """Seconds of each frame from the first one (exact presentation times, also for VFR files)."""
    index = build_index(path)
    if index.reliable:
        return index.times()
    info = probe(path)
    return np.arange(info.num_frames, dtype=np.float64) / (info.fps or 1.0)


# ---------------------------------------------------------------------------------------------------------
# reading


#: swscale threads per conversion of a frame below ``SWS_THREADED_PIXELS`` output pixels: 1. The decoder
#: already runs FFmpeg's frame threads (and the stages run several decoders at once), so slice-threading a
#: small conversion only adds hand-offs (0.22-0.35 ms of CPU per 640x360 frame with 1 thread against
#: 0.38-0.47 ms with the automatic count). Larger frames (1080p: ~8 ms each) keep swscale's automatic
#: count, or the decoder would stall behind a single-threaded conversion (docs/benchmarks.md, "Decoding").
SWS_THREADS = 1
SWS_THREADED_PIXELS = 1_000_000
_sws_threads_ok = True  # PyAV < 13 has no ``threads`` option on reformat


def _to_rgb(
    frame: av.VideoFrame, rotation: int, size: tuple[int, int] | None, interpolation: str | None = None
) -> np.ndarray:
    """RGB array in display orientation, resized to ``size=(w, h)`` (display sizes) when given.

    The resize and the YUV->RGB conversion are one swscale call (``to_ndarray`` with a size), which runs
    without the GIL: a frame is never converted at full size and then shrunk.
    """
    global _sws_threads_ok
    kw: dict[str, Any] = {}
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if rotation in (90, 270):
            w, h = h, w
        kw.update(width=w, height=h)
        if interpolation:
            kw["interpolation"] = interpolation
    else:
        w, h = frame.width, frame.height
    if _sws_threads_ok and w * h < SWS_THREADED_PIXELS:
        kw["threads"] = SWS_THREADS
    try:
        arr = frame.to_ndarray(format="rgb24", **kw)
    except TypeError:
        if "threads" not in kw:
            raise
        _sws_threads_ok = False
        kw.pop("threads")
        arr = frame.to_ndarray(format="rgb24", **kw)
    if rotation:
        arr = np.ascontiguousarray(np.rot90(arr, rotation // 90))
    return arr


class _Mismatch(Exception):
    """A decoded frame did not line up with the index: fall back to decoding from the start."""


def _seek_to(
    c: av.container.InputContainer, vs: av.video.stream.VideoStream, index: FrameIndex, kf: int, t: int
) -> tuple[Iterator[av.VideoFrame], av.VideoFrame, int]:
    """Seek to key frame ``kf`` and return the decoder with its first frame at or before frame ``t``.

    Containers seek by their own timestamps (dts for MP4), so a seek may land on a later key frame; then
    retry from earlier key frames rather than trust it.
    """
    seek_kf = kf
    while True:
        c.seek(int(index.pts[seek_kf]), stream=vs, backward=True, any_frame=False)
        frames = iter(c.decode(vs))
        first = next(frames, None)
        if first is None:
            raise _Mismatch("nothing decoded after a seek")
        i = index.lookup(first.pts)
        if i < 0:
            raise _Mismatch(f"decoded pts {first.pts} is not in the index")
        if i <= t:
            return frames, first, i
        if seek_kf == 0:
            raise _Mismatch(f"seeking never landed at or before frame {t}")
        seek_kf = index.keyframe_at_or_before(seek_kf - 1)


def _pyav_seek_frames(
    path: str, targets: Iterable[int], index: FrameIndex
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode the (sorted, unique) file frame ``targets`` using the pts index and keyframe seeks."""
    with _open(path) as c:
        vs = first_video_stream(c, path)
        vs.thread_type = "AUTO"
        pos = -1  # index of the last frame the decoder produced
        frames: Iterator[av.VideoFrame] | None = None
        for t in targets:
            kf = index.keyframe_at_or_before(t)
            if kf > pos + SEEK_GAP:
                frames, first, pos = _seek_to(c, vs, index, kf, t)
                if pos == t:
                    yield t, first
                    continue
            elif frames is None:
                frames = iter(c.decode(vs))
            for frame in frames:
                i = index.lookup(frame.pts)
                if i < 0:
                    raise _Mismatch(f"decoded pts {frame.pts} is not in the index")
                if i <= pos:
                    raise _Mismatch(f"decoded frames out of pts order ({i} after {pos})")
                pos = i
                if i < t:
                    continue
                if i > t:
                    raise _Mismatch(f"frame {t} was not produced by the decoder (got {i})")
                yield t, frame
                break
            else:
                raise _Mismatch(f"stream ended before frame {t}")


def _pyav_count_frames(path: str, targets: Iterable[int]) -> Iterator[tuple[int, av.VideoFrame]]:
    """Ground truth: decode from the start and count frames (no timestamps trusted)."""
    if not targets:
        return
    with _open(path) as c:
        vs = first_video_stream(c, path)
        vs.thread_type = "AUTO"
        it = iter(targets)
        t = next(it)
        try:
            for i, frame in enumerate(c.decode(vs)):
                if i == t:
                    yield i, frame
                    t = next(it, -1)
                    if t < 0:
                        return
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed before frame {t}: {e}") from None
    raise VideoError(f"{path}: frame {t} is past the end of the video")


def _pyav_frames(path: str, targets: Sequence[int]) -> Iterator[tuple[int, av.VideoFrame]]:
    """Frames at sorted unique file indices: fast seeking path, falling back to counting on any doubt."""
    index = build_index(path)
    done = -1
    if index.reliable:
        try:
            for i, frame in _pyav_seek_frames(path, targets, index):
                done = i
                yield i, frame
            return
        except _Mismatch as e:
            logger.warning("%s: index/seek mismatch (%s); decoding from the start", path, e)
        except av.error.FFmpegError as e:
            logger.warning("%s: decode error while seeking (%s); decoding from the start", path, e)
    rest = [t for t in targets if t > done]
    yield from _pyav_count_frames(path, rest)




def read_frames(
    path: str | os.PathLike[str],
    indices: Iterable[int],
    *,
    backend: str = "auto",
    frame_offset: int = 0,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Frames ``frame_offset + i`` (presentation order) of ``path`` for each ``i`` in ``indices``.

    Returns RGB ``uint8 [len(indices), H, W, 3]`` in display orientation, in the order of ``indices``
    (repeats allowed). ``num_frames`` bounds ``i`` (a clip's length); ``size=(w, h)`` resizes.
    ``backend``: ``pyav`` (ground truth), ``decord``, or ``auto`` (decord, then PyAV if decord fails or
    its frame numbering disagrees with the index).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = os.fspath(path)
    info = probe(path)
    idx = [int(i) for i in indices]
    limit = info.num_frames - frame_offset if num_frames is None else num_frames
    if frame_offset < 0 or limit < 0 or frame_offset + limit > info.num_frames:
        raise ValueError(
            f"{path}: range [{frame_offset}, {frame_offset + limit}) outside the file's {info.num_frames} frames"
        )
    bad = [i for i in idx if not 0 <= i < limit]
    if bad:
        raise IndexError(f"{path}: frame indices {bad[:5]} outside [0, {limit})")
    h, w = (size[1], size[0]) if size is not None else (info.height, info.width)
    if not idx:
        return np.zeros((0, h, w, 3), dtype=np.uint8)
    targets = sorted({frame_offset + i for i in idx})
    pos = {t: k for k, t in enumerate(targets)}
    gather = [pos[frame_offset + i] for i in idx]
    if backend in ("decord", "auto"):
        try:
            arr = read_with_decord(path, targets, build_index(path), info, size)
            return arr[gather] if gather != list(range(len(targets))) else arr
        except Exception as e:  # decord raises its own error types; any failure means "use PyAV"
            if backend == "decord":
                raise VideoError(f"{path}: decord cannot read these frames exactly: {e}") from e
            logger.debug("%s: decord failed (%s); using PyAV", path, e)
    out = np.empty((len(targets), h, w, 3), dtype=np.uint8)
    for k, (_, frame) in enumerate(_pyav_frames(path, targets)):
        out[k] = _to_rgb(frame, info.rotation, size)
    return out[gather] if gather != list(range(len(targets))) else out


def iter_frames(
    path: str | os.PathLike[str],
    *,
    interval: int = 1,
    start: int = 0,
    frame_offset: int = 0,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(i, rgb)`` for ``i = start, start + interval, ...`` below ``num_frames`` (PyAV, streaming).

    ``i`` is relative to ``frame_offset`` like in :func:`read_frames`; one decoding pass, constant memory.
    """
    if interval < 1:
        raise ValueError("interval must be >= 1")
    path = os.fspath(path)
    info = probe(path)
    limit = info.num_frames - frame_offset if num_frames is None else num_frames
    if frame_offset < 0 or frame_offset + limit > info.num_frames:
        raise ValueError(f"{path}: range outside the file's {info.num_frames} frames")
    targets = range(frame_offset + max(0, start), frame_offset + limit, interval)
    for t, frame in _pyav_frames(path, targets):
        yield t - frame_offset, _to_rgb(frame, info.rotation, size)


def iter_targets(
    path: str | os.PathLike[str],
    targets: Sequence[int],
    *,
    size: tuple[int, int] | None = None,
    interpolation: str | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(t, rgb)`` for the sorted, unique FILE frame indices ``targets``, in one sequential pass.

    The decoder runs forward through the file and converts only the frames asked for (at ``size``); it
    seeks only when the key frame before the next target lies more than ``SEEK_GAP`` frames past its
    position, i.e. when seeking skips decoding (sparse targets in a long file). Files whose timestamps do
    not index their frames are decoded from the start and counted. Raises :class:`VideoError` for
    unreadable files and ``IndexError`` for targets outside the file.
    """
    path = os.fspath(path)
    info = probe(path)
    ts = [int(t) for t in targets]
    if any(b <= a for a, b in zip(ts, ts[1:])):
        raise ValueError("targets must be sorted and unique")
    if ts and (ts[0] < 0 or ts[-1] >= info.num_frames):
        raise IndexError(f"{path}: frame {ts[0] if ts[0] < 0 else ts[-1]} outside [0, {info.num_frames})")
    for t, frame in _pyav_frames(path, ts):
        yield t, _to_rgb(frame, info.rotation, size, interpolation)


# ---------------------------------------------------------------------------------------------------------
# clip rows


@dataclass(frozen=True)
class ClipRef:
    """The reader contract of a ``clips`` row: frames ``[frame_offset, frame_offset + num_frames)`` of ``path``."""

    path: str
    frame_offset: int
    num_frames: int

    @classmethod
    def from_row(cls, row: Mapping[str, Any], root: str | os.PathLike[str] | None = None) -> ClipRef:
        """Resolve a row's path: relative paths live under ``root`` (the repo) and may not escape it."""
        p = str(row["path"])
        if not os.path.isabs(p):
            if root is None:
                raise ValueError(f"clip path {p!r} is relative but no repo root was given")
            p = str(safe_join(root, p))
        return cls(path=p, frame_offset=int(row.get("frame_offset") or 0), num_frames=int(row["num_frames"]))

    def read(
        self, indices: Iterable[int], *, backend: str = "auto", size: tuple[int, int] | None = None
    ) -> np.ndarray:
        return read_frames(
            self.path,
            indices,
            backend=backend,
            frame_offset=self.frame_offset,
            num_frames=self.num_frames,
            size=size,
        )

    def iter(
        self, *, interval: int = 1, start: int = 0, size: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        return iter_frames(
            self.path,
            interval=interval,
            start=start,
            frame_offset=self.frame_offset,
            num_frames=self.num_frames,
            size=size,
        )


def read_clip_frames(
    row: Mapping[str, Any],
    indices: Iterable[int],
    root: str | os.PathLike[str] | None = None,
    *,
    backend: str = "auto",
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Frames ``indices`` (0-based within the clip) of a ``clips`` row, honouring ``frame_offset``."""
    return ClipRef.from_row(row, root).read(indices, backend=backend, size=size)


def evenly_spaced(num_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread over ``[0, num_frames)`` (centres of equal segments), for samplers."""
    if num_frames <= 0 or k <= 0:
        return []
    k = min(k, num_frames)
    return [int((j + 0.5) * num_frames / k) for j in range(k)]


__all__ = [
    "BACKENDS",
    "ClipRef",
    "clear_cache",
    "evenly_spaced",
    "frame_times",
    "iter_frames",
    "iter_targets",
    "probe",
    "read_clip_frames",
    "read_frames",
]
