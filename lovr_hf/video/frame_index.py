"""What a video file is, read from its packets: :class:`VideoInfo`, the packet-level :class:`FrameIndex`
(one demux pass, no decoding) and :class:`VideoError` for files that cannot be read as a video.

Why apart from the reader: the index is what every reader and cutter trusts for "which frame is this" --
a frame's *index* is its position in presentation order among the frames a full decode yields. The sorted
presentation timestamps of the non-discarded packets are the frames, so ``index -> pts`` is exact for
variable frame rate too, and a decoded frame's pts tells which frame it is after any seek. Files whose
timestamps cannot be trusted (missing or duplicate pts) are marked unreliable: readers decode from the
start and count. Stream copy (:mod:`lovr_hf.video.copy_cut`) plans its packets from the ``dec_*`` arrays.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

logger = logging.getLogger(__name__)

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


def file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """``(real path, size, mtime)``: the cache key of a file (a rewritten file is indexed again); raises
    :class:`VideoError` for a file that is missing, not a regular file or empty."""
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


def first_video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The stream every reader decodes; :class:`VideoError` naming the streams there are when none is video."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(f"{path}: no video stream (streams: {', '.join(kinds)}; audio-only file?)")
    return container.streams.video[0]


def build_index(path: str | os.PathLike[str]) -> FrameIndex:
    """Demux the video packets of ``path`` once and index them (cached by path, size and mtime)."""
    return build_index_for_key(*file_key(path))



def clear_index_cache() -> None:
    """Forget cached indexes (see :func:`lovr_hf.video.reader.clear_cache`, which clears every cache)."""
    build_index_for_key.cache_clear()


@functools.lru_cache(maxsize=256)
def build_index_for_key(path: str, size: int, mtime_ns: int) -> FrameIndex:
    """:func:`build_index` for a :func:`file_key` (the reader's probe reuses the cached index by key)."""
    del size, mtime_ns  # cache key only
    with _open(path) as c:
        vs = first_video_stream(c, path)
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
            vs = first_video_stream(c, path)
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
