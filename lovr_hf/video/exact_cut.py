"""``exact`` clips: frame-accurate, re-encoded H.264 files (the original's ``split_video_ffmpeg`` settings).

One decoding pass over the source (in a thread, overlapping the encoder) and one H.264 encoder with an IDR
frame forced at each clip start; the packet stream is split into the clip files at those frames (what
ffmpeg's forced key frames + segment muxer do, in one process). Rotated sources (and encoders other than
libx264, which alone guarantees forced IDR frames) get one encoder per clip: PyAV writes a display matrix
only for streams that own an encoder. Audio, when asked for, is cut per clip by
:mod:`lovr_hf.video.clip_audio`. Called by :func:`lovr_hf.video.clipper.cut_clips`; the one-pass
:mod:`lovr_hf.segment.detect_and_cut` reuses its encoder, muxer and decoding thread.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from lovr_hf.video.clip_audio import AudioPlan
from lovr_hf.video.clip_files import _commit, tmp_path_for
from lovr_hf.video.frame_index import FrameIndex, VideoError, VideoInfo

logger = logging.getLogger(__name__)


class _ExactWriter:
    """Encoder of one clip file; frames keep their source timestamps (shifted to start at 0)."""

    def __init__(
        self,
        tmp: Path,
        time_base: Fraction,
        rate: Fraction | None,
        rotation: int,
        *,
        codec: str,
        options: dict[str, str],
        width: int,
        height: int,
        audio: AudioPlan | None = None,
        clip: int = 0,
    ) -> None:
        self.tmp = tmp
        self.out = av.open(str(tmp), "w", format="mp4")
        self.stream = self.out.add_stream(codec, rate=rate or 24, options=options)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        # PyAV opens encoders with slice threading, which makes libx264 use (slower) sliced threads;
        # FRAME|SLICE gives x264's frame threads, as the ffmpeg command line does.
        self.stream.codec_context.thread_type = "AUTO"
        self.tb = time_base
        self.stream.codec_context.time_base = self.tb
        self.stream.time_base = self.tb
        self.tick = max(1, round(1 / (float(rate or 24) * float(self.tb))))
        if rotation:
            self.stream.set_display_rotation(rotation)
        self.first_pts: int | None = None
        self.last_pts = -1
        self.count = 0
        self.audio = audio.for_clip(self.out, clip) if audio else None

    def write(self, frame: av.VideoFrame) -> None:
        if (
            frame.format.name != "yuv420p"
            or frame.width != self.stream.width
            or frame.height != self.stream.height
        ):
            frame = frame.reformat(width=self.stream.width, height=self.stream.height, format="yuv420p")
        pts = frame.pts
        if pts is None:
            pts = self.last_pts + self.tick if self.first_pts is not None else 0
        if self.first_pts is None:
            self.first_pts = pts
        rel = pts - self.first_pts
        if rel <= self.last_pts:  # unreliable source timestamps: keep them strictly increasing
            rel = self.last_pts + 1
        self.last_pts = rel
        frame.pts = rel
        frame.time_base = self.tb
        frame.pict_type = 0  # AV_PICTURE_TYPE_NONE: let the encoder choose, don't copy source key frames
        self.out.mux(self.stream.encode(frame))
        self.count += 1
        if self.audio is not None:
            self.audio.pump(float(rel * self.tb))

    def close(self) -> None:
        self.out.mux(self.stream.encode(None))
        if self.audio is not None:
            self.audio.finish()
        self.out.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.out.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def in_thread(make: Callable[[], Iterator[Any]], maxsize: int = 2, batch: int = 8) -> Iterator[Any]:
    """Run the generator ``make()`` in a worker thread, yielding its items here.

    PyAV releases the GIL while decoding, so decoding the source in a thread overlaps with encoding in
    this one, like the separate decode and encode threads of the ffmpeg command line. Items travel in
    batches so the two threads hand over (and wake each other) rarely.
    """
    q: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            chunk: list[Any] = []
            for item in make():
                chunk.append(item)
                if len(chunk) >= batch:
                    if not put((False, chunk)):
                        return
                    chunk = []
            if chunk and not put((False, chunk)):
                return
            put((True, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((True, e))

    t = threading.Thread(target=work, name="lovr-decode", daemon=True)
    t.start()
    try:
        while True:
            done, item = q.get()
            if done:
                if item is not None:
                    raise item
                return
            yield from item
    finally:
        stop.set()
        t.join()


def _decode_wanted(
    src_path: str, ranges: list[tuple[int, int]], progress: Callable[[int], None] | None, threads: int = 0
) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(i, frame)`` for the decoded frames inside ``ranges``; ``i`` counts frames as a full decode does."""
    last_end = ranges[-1][1]
    k = 0
    with av.open(src_path) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        if threads:
            vs.codec_context.thread_count = threads
        for i, frame in enumerate(c.decode(vs)):
            if progress is not None and i % 256 == 0:
                progress(i)
            if i >= last_end:
                return
            while i >= ranges[k][1]:
                k += 1
            if i >= ranges[k][0]:
                yield i, frame


def _cut_exact_per_clip(
    src_path: str,
    ranges: list[tuple[int, int]],
    finals: list[Path],
    info: VideoInfo,
    index: FrameIndex,
    *,
    codec: str,
    preset: str,
    crf: int,
    progress: Callable[[int], None] | None,
    audio: AudioPlan | None = None,
    threads: int = 0,
) -> None:
    """Decode the source once and route frame ``i`` to a fresh encoder for the clip whose range holds it.

    Used for rotated sources: PyAV writes a display matrix only for streams that own an encoder.
    """
    options = {"preset": preset, "crf": str(crf), **x264_threads(threads)}
    with av.open(src_path) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate
        time_base = vs.time_base or Fraction(1, 90000)
    w, h = info.coded_width - info.coded_width % 2, info.coded_height - info.coded_height % 2
    writer: _ExactWriter | None = None
    k = 0
    warned = False

    def finish() -> None:
        nonlocal writer
        assert writer is not None
        want = ranges[k][1] - ranges[k][0]
        if writer.count != want:
            raise VideoError(f"{src_path}: clip {k + 1} got {writer.count} of its {want} frames")
        writer.close()
        _commit(writer.tmp, finals[k])
        writer = None

    frames = in_thread(lambda: _decode_wanted(src_path, ranges, progress, threads))
    try:
        for i, frame in frames:
            while i >= ranges[k][1]:
                if writer is None:
                    raise VideoError(f"{src_path}: no frame decoded for clip {k + 1}")
                finish()
                k += 1
            if not warned and index.reliable and frame.pts is not None and index.lookup(frame.pts) != i:
                warned = True
                logger.warning(
                    "%s: decoded frame %d has pts %s (index %d); clips follow decode order",
                    src_path,
                    i,
                    frame.pts,
                    index.lookup(frame.pts),
                )
            if writer is None:
                writer = _ExactWriter(
                    tmp_path_for(finals[k]),
                    time_base,
                    rate,
                    info.rotation,
                    codec=codec,
                    options=options,
                    width=w,
                    height=h,
                    audio=audio,
                    clip=k,
                )
            writer.write(frame)
        if writer is None or k != len(ranges) - 1:
            raise VideoError(f"{src_path}: the video ended before clip {k + 1} of {len(ranges)}")
        finish()
    except av.error.FFmpegError as e:
        raise VideoError(f"{src_path}: decoding or encoding failed: {e}") from None
    finally:
        frames.close()  # stops the decoding thread now, also on errors
        if writer is not None:
            writer.abort()


class _ClipMuxer:
    """Mux pre-encoded packets of one clip into its temporary file (timestamps shifted to start at 0)."""

    def __init__(
        self,
        tmp: Path,
        codec: str,
        rate: Fraction | None,
        tb: Fraction,
        w: int,
        h: int,
        shift: int,
        audio: AudioPlan | None = None,
        clip: int = 0,
    ):
        self.tmp = tmp
        self.out = av.open(str(tmp), "w", format="mp4")
        self.stream = self.out.add_mux_stream(codec, rate=rate, width=w, height=h, time_base=tb)
        self.tb = tb
        self.shift = shift
        self.count = 0
        self.audio = audio.for_clip(self.out, clip) if audio else None

    def mux(self, pkt: av.Packet) -> None:
        pts, dts = pkt.pts, pkt.dts
        pkt.stream = self.stream
        pkt.time_base = self.tb
        pkt.pts = None if pts is None else pts - self.shift
        pkt.dts = None if dts is None else dts - self.shift
        # the clip time of this packet, read BEFORE muxing: mux() rescales the packet's timestamps in place to
        # the output stream's time base (mp4 picks its own, e.g. 1/16000 for a 1/1000 matroska source)
        t = pkt.dts if pkt.dts is not None else pkt.pts
        self.out.mux(pkt)
        self.count += 1
        if self.audio is not None and t is not None:
            self.audio.pump(float(t * self.tb))

    def close(self, end_s: float | None = None) -> None:
        if self.audio is not None:
            self.audio.finish(end_s)
        self.out.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.out.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _cut_exact_one_encoder(
    src_path: str,
    ranges: list[tuple[int, int]],
    finals: list[Path],
    info: VideoInfo,
    index: FrameIndex,
    *,
    codec: str,
    preset: str,
    crf: int,
    progress: Callable[[int], None] | None,
    audio: AudioPlan | None = None,
    threads: int = 0,
) -> None:
    """One decoder and ONE encoder for the whole video, an IDR frame forced at each clip start.

    An IDR frame closes the GOP (no frame after it references one before it, none before it is shown after
    it), so the packet stream splits into independent clip files at those frames. This keeps x264's
    frame-thread pipeline full across clips, instead of draining and refilling a new encoder per clip.
    """
    enc, (w, h), rate, tb, tick = one_encoder(src_path, info, codec=codec, preset=preset, crf=crf, threads=threads)
    starts: list[int] = []  # encoder pts of each clip's first frame
    muxers: dict[int, _ClipMuxer] = {}

    def commit_below(j: int) -> None:
        for jj in sorted(m for m in muxers if m < j):
            m = muxers.pop(jj)
            want = ranges[jj][1] - ranges[jj][0]
            if m.count != want:
                m.abort()
                raise VideoError(f"{src_path}: clip {jj + 1} got {m.count} of its {want} frames")
            m.close()
            _commit(m.tmp, finals[jj])

    def route(packets: list[av.Packet]) -> None:
        for pkt in packets:
            j = bisect.bisect_right(starts, pkt.pts) - 1
            if j < 0:
                raise VideoError(f"{src_path}: encoder returned a packet before the first clip")
            if j not in muxers:
                commit_below(j)  # closed GOPs: the previous clip has all its packets
                muxers[j] = _ClipMuxer(tmp_path_for(finals[j]), codec, rate, tb, w, h, starts[j], audio, j)
            muxers[j].mux(pkt)

    frames = in_thread(lambda: _decode_wanted(src_path, ranges, progress, threads))
    k = 0
    last = -1
    try:
        for i, frame in frames:
            while i >= ranges[k][1]:
                k += 1
            if frame.format.name != "yuv420p" or frame.width != w or frame.height != h:
                frame = frame.reformat(width=w, height=h, format="yuv420p")
            pts = frame.pts
            if pts is None or pts <= last:  # missing or non-increasing source timestamps
                pts = last + tick if last >= 0 else 0
            last = pts
            frame.pts, frame.time_base = pts, tb
            if i == ranges[k][0]:
                starts.append(pts)
                frame.pict_type = 1  # AV_PICTURE_TYPE_I: with forced-idr, an IDR frame
            else:
                frame.pict_type = 0  # let the encoder decide
            route(enc.encode(frame))
        if len(starts) != len(ranges):
            raise VideoError(f"{src_path}: the video ended before clip {len(starts) + 1} of {len(ranges)}")
        route(enc.encode(None))
        commit_below(len(ranges))
    except av.error.FFmpegError as e:
        raise VideoError(f"{src_path}: decoding or encoding failed: {e}") from None
    finally:
        frames.close()
        for m in muxers.values():
            m.abort()


def one_encoder(
    src_path: str, info: VideoInfo, *, codec: str, preset: str, crf: int, threads: int = 0
) -> tuple[Any, tuple[int, int], Fraction | None, Fraction, int]:
    """The single H.264 encoder of a whole source (IDR frames on request: ``pict_type`` I + forced-idr):
    ``(encoder, (width, height), frame rate, time base, pts step of one frame)``."""
    with av.open(src_path) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate
        tb = vs.time_base or Fraction(1, 90000)
    w, h = info.coded_width - info.coded_width % 2, info.coded_height - info.coded_height % 2
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = tb
    if rate:
        enc.framerate = rate
    enc.thread_type = "AUTO"  # x264 frame threads, as the ffmpeg command line uses
    options = {"preset": preset, "crf": str(crf), **x264_threads(threads)}
    if codec == "libx264":
        options["forced-idr"] = "1"
    enc.options = options
    return enc, (w, h), rate, tb, max(1, round(1 / (float(rate or 24) * float(tb))))


def x264_threads(threads: int) -> dict[str, str]:
    """libx264 options for a process given ``threads`` CPUs (x264's own rule: 1.5 threads per CPU);
    nothing for 0, which leaves x264's automatic count (the ffmpeg command line's)."""
    return {"threads": str(max(1, round(1.5 * threads)))} if threads else {}


def cut_exact(
    src_path: str,
    ranges: list[tuple[int, int]],
    finals: list[Path],
    info: VideoInfo,
    index: FrameIndex,
    **kwargs: Any,
) -> None:
    """Cut ``exact`` clips into ``finals``: one encoder for the whole source where forced IDR frames split it
    (libx264, no rotation), else one encoder per clip."""
    if info.rotation or kwargs.get("codec") != "libx264":  # forced IDR frames are libx264's guarantee
        _cut_exact_per_clip(src_path, ranges, finals, info, index, **kwargs)
    else:
        _cut_exact_one_encoder(src_path, ranges, finals, info, index, **kwargs)
