"""One video reader for all of lovr_hf: probe, frame-exact reads by index, clip rows.

Why this module exists: decord (what the original LoVR evaluation reads clips with) trusts its own frame
count, ``len(vr)``, which over-reports on stream-copied files -- their hidden pre-roll packets count as
frames -- so any sampling by index lands on the wrong frames there. (The original's own clips were
re-encoded by ``split_video_ffmpeg``, libx264 CRF 22, and do not have that problem; ``copy``-mode clips and
``ffmpeg -c copy`` cuts do.) Here a frame's *index* is its position in presentation order among the frames
a full decode yields, and every reader (PyAV, decord, seeks or not) must return exactly those frames.

The index of a file is built once by demuxing its video packets (no decoding): the sorted presentation
timestamps of the non-discarded packets are the frames, so ``index -> pts`` is exact for variable frame
rate too, and a decoded frame's pts tells which frame it is after any seek. Files whose timestamps cannot
be trusted (missing or duplicate pts) are read by decoding from the start and counting.

Frames are returned as RGB ``uint8 [n, H, W, 3]`` in display orientation (the display-matrix rotation is
applied), so ``VideoInfo.width/height`` are display sizes as well.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from lovr_hf.ids import safe_join

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "decord")
# Seek only when the keyframe before the next wanted frame is this many frames past the decoder's
# position: decoding a few frames forward is cheaper than flushing the decoder.
SEEK_GAP = 16


class VideoError(Exception):
    """A file that cannot be read as a video (empty, not a video, audio-only, truncated, undecodable)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a stage needs to know about a video. ``width``/``height`` are display sizes (after rotation)."""

    duration_s: float
    fps: float  # average frame rate (frames / duration for variable-rate files)
    num_frames: int  # exact: frames a full decode yields
    width: int
    height: int
    rotation: int  # display rotation, degrees counter-clockwise in {0, 90, 180, 270}
    codec: str
    coded_width: int = 0
    coded_height: int = 0


@dataclass(frozen=True)
class FrameIndex:
    """Packet-level index of a file's video stream, built by one demux pass (no decoding).

    ``pts`` are the presentation timestamps of the frames in presentation order; the ``dec_*`` arrays
    describe every video packet in decode (file) order, which stream copy needs.
    """

    pts: np.ndarray  # int64 [num_frames], sorted
    keyframes: np.ndarray  # int64, presentation indices of key frames (sorted)
    time_base: Fraction
    last_duration: int  # duration of the last frame in time_base units
    reliable: bool  # False: pts missing or duplicated -> read by decoding and counting
    dec_pts: np.ndarray  # int64 [num_packets] (decode order; -1 where unknown)
    dec_dts: np.ndarray  # int64 [num_packets]
    dec_key: np.ndarray  # bool [num_packets]
    dec_discard: np.ndarray  # bool [num_packets]
    container_frames: int  # the container's own frame count (0 when it has none)
    open_gop: bool  # some key frame has leading frames (decoded after it, shown before it)

    @property
    def num_frames(self) -> int:
        return int(len(self.pts))

    def lookup(self, pts: int | None) -> int:
        """Frame index of a decoded frame's pts, or -1 when it is not a frame of this index."""
        if pts is None or not self.reliable:
            return -1
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and int(self.pts[i]) == pts else -1

    def keyframe_at_or_before(self, i: int) -> int:
        """Presentation index of the last key frame at or before frame ``i`` (0 when none)."""
        k = bisect.bisect_right(self.keyframes, i) - 1  # type: ignore[arg-type]
        return int(self.keyframes[k]) if k >= 0 else 0

    def times(self) -> np.ndarray:
        """Seconds of each frame from the first frame (exact for variable frame rate)."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)

    def duration_s(self) -> float:
        if not len(self.pts):
            return 0.0
        return float((int(self.pts[-1]) - int(self.pts[0]) + self.last_duration) * self.time_base)


# ---------------------------------------------------------------------------------------------------------
# probing


def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    p = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file") from None
    except OSError as e:
        raise VideoError(f"{path}: cannot stat: {e}") from None
    if not os.path.isfile(p):
        raise VideoError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    return p, st.st_size, st.st_mtime_ns


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"{path}: not a readable video container (truncated or not a video?): {e}") from None


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(f"{path}: no video stream (streams: {', '.join(kinds)}; audio-only file?)")
    return container.streams.video[0]


def build_index(path: str | os.PathLike[str]) -> FrameIndex:
    """Demux the video packets of ``path`` once and index them (cached by path, size and mtime)."""
    return _build_index_cached(*_file_key(path))


def clear_cache() -> None:
    """Forget cached indexes and probes (benchmarks, or files rewritten within one mtime tick)."""
    _build_index_cached.cache_clear()
    _probe_cached.cache_clear()
    _decord_reader.cache_clear()


@functools.lru_cache(maxsize=256)
def _build_index_cached(path: str, size: int, mtime_ns: int) -> FrameIndex:
    del size, mtime_ns  # cache key only
    with _open(path) as c:
        vs = _video_stream(c, path)
        tb = vs.time_base or Fraction(1, 90000)
        pts_l: list[int] = []
        dts_l: list[int] = []
        key_l: list[bool] = []
        disc_l: list[bool] = []
        durs: dict[int, int] = {}
        missing_pts = 0
        # Matroska/WebM have no frame count to check truncation against: compare how far the packets of
        # all streams reach with the duration in the header instead.
        fmt_name = c.format.name or ""
        check_end = "matroska" in fmt_name and bool(c.duration)
        streams = tuple(c.streams) if check_end else (vs,)
        reach = 0.0
        try:
            for pkt in c.demux(streams):
                if pkt.size == 0 and pkt.pts is None and pkt.dts is None:
                    continue  # the flush packet at the end of demuxing
                if check_end and pkt.time_base is not None:
                    ts = pkt.pts if pkt.pts is not None else pkt.dts
                    if ts is not None:
                        reach = max(reach, float((ts + (pkt.duration or 0)) * pkt.time_base))
                if pkt.stream_index != vs.index:
                    continue
                pts = pkt.pts
                if pts is None:
                    missing_pts += 1
                    pts = pkt.dts
                pts_l.append(-1 if pts is None else int(pts))
                dts_l.append(-1 if pkt.dts is None else int(pkt.dts))
                key_l.append(bool(pkt.is_keyframe))
                disc_l.append(bool(pkt.is_discard))
                if pts is not None and pkt.duration:
                    durs[int(pts)] = int(pkt.duration)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: corrupt or truncated after {len(pts_l)} video packets: {e}") from None
        container_frames = int(vs.frames or 0)
        rate = vs.average_rate or vs.guessed_rate
        if check_end and pts_l:
            start = (c.start_time or 0) / 1e6
            expected = c.duration / 1e6
            got = reach - start
            if got < expected - max(1.0, 0.02 * expected):
                raise VideoError(
                    f"{path}: truncated: the header says {expected:.2f}s but the packets end at {got:.2f}s"
                )
    if not pts_l:
        raise VideoError(f"{path}: the video stream has no frames")
    # AVI counts its null (empty, "drop") frames, which the demuxer skips, in the frame count; its
    # timestamps are frame counters, so the slots the packets span include them
    known = [p for p in pts_l if p >= 0] if "avi" in fmt_name else []
    span = max(known) - min(known) + 1 if known else 0
    if container_frames and len(pts_l) < container_frames and span < container_frames:
        raise VideoError(
            f"{path}: truncated: the container lists {container_frames} frames but only "
            f"{len(pts_l)} could be read"
        )
    dec_pts = np.asarray(pts_l, dtype=np.int64)
    dec_key = np.asarray(key_l, dtype=bool)
    dec_disc = np.asarray(disc_l, dtype=bool)
    keep = ~dec_disc
    order = np.argsort(dec_pts[keep], kind="stable")
    pts = dec_pts[keep][order]
    reliable = bool(
        (dec_pts[keep] >= 0).all() and (len(pts) < 2 or (np.diff(pts) > 0).all()) and missing_pts == 0
    )
    if reliable and not _decoded_pts_match(path, pts):
        reliable = False
    if not reliable:
        logger.debug("%s: packet timestamps do not index the frames; counting decoded frames", path)
    keyframes = np.flatnonzero(dec_key[keep][order]).astype(np.int64)
    # open GOP: a packet after a key frame (decode order) that is shown before it; decord mis-seeks there
    seg = np.cumsum(dec_key) - 1
    has_kf = seg >= 0
    kf_pts = dec_pts[np.flatnonzero(dec_key)]
    open_gop = bool(has_kf.any() and (dec_pts[has_kf] < kf_pts[seg[has_kf]]).any())
    if len(pts):
        last = durs.get(int(pts[-1]), 0)
        if last <= 0:
            if len(pts) > 1:
                last = int(np.median(np.diff(pts)))
            elif rate:
                last = max(1, round(1 / (float(rate) * float(tb))))
            else:
                last = 1
    else:
        last = 0
    return FrameIndex(
        pts=pts,
        keyframes=keyframes,
        time_base=Fraction(tb),
        last_duration=int(last),
        reliable=reliable,
        dec_pts=dec_pts,
        dec_dts=np.asarray(dts_l, dtype=np.int64),
        dec_key=dec_key,
        dec_discard=dec_disc,
        container_frames=container_frames,
        open_gop=open_gop,
    )


def _decoded_pts_match(path: str, pts: np.ndarray, check: int = 48) -> bool:
    """Do the first decoded frames carry the packet timestamps, in order? (No for e.g. H.264 B-frames
    in AVI, whose demuxer invents timestamps in decode order.)"""
    want = pts[: min(check, len(pts))]
    got: list[int | None] = []
    try:
        with _open(path) as c:
            vs = _video_stream(c, path)
            vs.thread_type = "AUTO"
            for frame in c.decode(vs):
                got.append(frame.pts)
                if len(got) == len(want):
                    break
    except av.error.FFmpegError:
        return False
    return len(got) == len(want) and all(
        g is not None and int(g) == int(w) for g, w in zip(got, want, strict=True)
    )


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Exact facts about a video; raises :class:`VideoError` with a clear message for unusable files."""
    return _probe_cached(*_file_key(path))


@functools.lru_cache(maxsize=256)
def _probe_cached(path: str, size: int, mtime_ns: int) -> VideoInfo:
    index = _build_index_cached(path, size, mtime_ns)
    with _open(path) as c:
        vs = _video_stream(c, path)
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
        vs = _video_stream(c, path)
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
        vs = _video_stream(c, path)
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


@functools.lru_cache(maxsize=4)
def _decord_reader(
    path: str, size_b: int, mtime_ns: int, size: tuple[int, int] | None
) -> tuple[Any, threading.Lock]:
    """Kept open between calls (opening demuxes the whole file: costly for a long source read clip by
    clip), with a lock: a decord reader is not thread-safe and callers decode in thread pools."""
    import decord  # optional: not on every platform

    kwargs: dict[str, Any] = {"ctx": decord.cpu(0), "num_threads": 0}
    if size is not None:
        kwargs.update(width=int(size[0]), height=int(size[1]))
    return decord.VideoReader(path, **kwargs), threading.Lock()


if hasattr(os, "register_at_fork"):  # worker processes (datasets num_proc) must not inherit decoder threads
    os.register_at_fork(before=_decord_reader.cache_clear)


def _decord_read(
    path: str, targets: Sequence[int], index: FrameIndex, info: VideoInfo, size: tuple[int, int] | None
) -> np.ndarray:
    """Read with decord, refusing (raising) whenever its frame numbering differs from ours."""
    if info.rotation:
        # decord 0.6 applies the display matrix itself but mis-sizes rotated frames when resizing
        raise VideoError(f"{path}: rotated video (decord is not used for rotated files)")
    if not index.reliable:
        raise VideoError(f"{path}: timestamps do not index the frames (decord would guess)")
    if index.open_gop:
        raise VideoError(f"{path}: open-GOP stream (decord returns wrong frames after seeks there)")
    vr, lock = _decord_reader(*_file_key(path), size)
    with lock:
        if len(vr) != info.num_frames:
            raise VideoError(f"{path}: decord counts {len(vr)} frames, the index {info.num_frames}")
        if len(targets):
            probe_idx = sorted({0, *targets})
            ts = np.asarray(vr.get_frame_timestamp(probe_idx))[:, 0]
            want = (index.pts[probe_idx] - index.pts[0]).astype(np.float64) * float(index.time_base)
            if np.abs((ts - ts[0]) - want).max() > 0.5 / max(info.fps, 1.0):
                raise VideoError(f"{path}: decord frame timestamps disagree with the index")
        return vr.get_batch(list(targets)).asnumpy()


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
            arr = _decord_read(path, targets, build_index(path), info, size)
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
    "FrameIndex",
    "VideoError",
    "VideoInfo",
    "build_index",
    "clear_cache",
    "evenly_spaced",
    "frame_times",
    "iter_frames",
    "iter_targets",
    "probe",
    "read_clip_frames",
    "read_frames",
]
