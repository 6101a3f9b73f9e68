"""Cut a video into clip files from scene ranges: frame-exact re-encode, stream copy, or virtual clips.

Why: the original LoVR cut clips with PySceneDetect's ``split_video_ffmpeg``: one ffmpeg re-encode per
scene (``-ss START -i SRC -t DURATION``, libx264 veryfast CRF 22, audio re-encoded to AAC), i.e. frame-
accurate files that start with a key frame. ``exact`` (the default) writes those files - the same
encoder and settings, audio included - from one decoding pass instead of one ffmpeg run per scene, and
guarantees what ffmpeg's timestamp-based cuts only approximate: the frames of all clips add up to the
frames of the ranges, none duplicated or missing at a boundary. Every mode returns the reader contract
of the ``clips`` table (``path``, ``frame_offset``, ``num_frames``; see ``lovr_hf.schema.CLIPS_FEATURES``)
so that all three modes decode the same frames.

- ``exact``: one decoding pass over the source and one H.264 encoder with an IDR frame forced at each clip
  start; the packet stream is split into the clip files at those frames (what ffmpeg's forced key frames +
  segment muxer do, in one process). Rotated sources get one encoder per clip (PyAV writes a display
  matrix only for streams that own an encoder). Audio (``audio=True``, the default, as the original):
  every audio stream of the source, cut at the clip's time range and encoded to AAC
  (:mod:`lovr_hf.video.clip_audio`); ``audio=False`` (``--no-audio``) writes video only. ``crf`` defaults to
  the original's 22 (``--crf`` changes it; lovr_hf used 18 before).
- ``copy``: packets are remuxed without re-encoding, from the key frame at or before the clip start; the
  file keeps that pre-roll (and any trailing frames B-frames need), and the row records where the clip
  really starts in it (``frame_offset``) and how long it is (``num_frames``). Video only.
- ``virtual``: no file; the row points at the source with ``frame_offset = start_frame``.

Every file is written under a temporary name in its final folder and renamed when complete, so a kill
never leaves a truncated clip under the final name.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from lovr_hf import schema
from lovr_hf.ids import check_id, safe_join
from lovr_hf.video.clip_audio import AudioPlan
from lovr_hf.video.clip_store import file_digest
from lovr_hf.video.reader import FrameIndex, VideoError, VideoInfo, build_index, clear_cache, probe

logger = logging.getLogger(__name__)

CLIP_MODES = ("exact", "copy", "virtual")
TMP_PREFIX = "."
TMP_SUFFIX = ".tmp.mp4"
DEFAULT_CRF = 22  # split_video_ffmpeg's "-crf 22"
DEFAULT_PRESET = "veryfast"  # split_video_ffmpeg's "-preset veryfast"


@dataclass(frozen=True)
class ClipFile:
    """One cut clip and its reader contract (``path``, ``frame_offset``, ``num_frames``)."""

    slice_num: int
    clip_id: str
    path: str  # the clip file (exact/copy) or the source video (virtual), absolute
    frame_offset: int  # frames of ``path`` before the clip's first frame
    num_frames: int
    start_frame: int  # source range, half-open
    end_frame: int
    start_time: float  # seconds in the source (presentation times, exact for VFR)
    end_time: float
    mode: str
    file_frames: int  # frames in ``path`` (copy: > num_frames, pre-roll and trailing frames included)
    file_size: int | None = None  # bytes of the clip file (None for virtual clips)
    file_sha256: str | None = None  # SHA-256 of the clip file (None for virtual clips)

    def to_row(self, video_id: str, fps: float, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """A ``clips`` row (CLIPS_FEATURES columns). With ``root``, a path inside it is stored relative."""
        path = self.path
        if root is not None and self.mode != "virtual":
            rel = os.path.relpath(path, Path(root).resolve())
            if not rel.startswith(".."):
                path = rel.replace(os.sep, "/")
        return {
            schema.VIDEO_ID: video_id,
            schema.CLIP_ID: self.clip_id,
            schema.SLICE_NUM: self.slice_num,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "num_frames": self.num_frames,
            "fps": float(fps),
            "path": path,
            "frame_offset": self.frame_offset,
            "clip_mode": self.mode,
            "file_size": self.file_size,
            "file_sha256": self.file_sha256,
            schema.STATUS: schema.OK,
            schema.ERROR_COL: None,
            schema.VIDEO: None,  # derived from ``path`` when the table is written (lovr_hf.clip_video)
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------
# helpers


def _check_ranges(ranges: Sequence[tuple[int, int]], num_frames: int) -> list[tuple[int, int]]:
    out = [(int(s), int(e)) for s, e in ranges]
    if not out:
        raise ValueError("no ranges to cut")
    prev = 0
    for s, e in out:
        if not 0 <= s < e <= num_frames:
            raise ValueError(f"range [{s}, {e}) is empty or outside the video's {num_frames} frames")
        if s < prev:
            raise ValueError(f"ranges must be sorted and must not overlap (range [{s}, {e}))")
        prev = e
    return out


def _clip_times(index: FrameIndex, info: VideoInfo, s: int, e: int) -> tuple[float, float]:
    """Presentation times of the first frame and of the end (next frame, or the end of the video)."""
    if index.reliable and index.num_frames == info.num_frames:
        t = index.times()
        start = float(t[s])
        end = float(t[e]) if e < len(t) else info.duration_s
    else:
        fps = info.fps or 1.0
        start, end = s / fps, (e / fps if e < info.num_frames else max(info.duration_s, e / fps))
    return start, end


def clip_dir(out_dir: str | os.PathLike[str], video_id: str) -> Path:
    """``<out_dir>/<video_id>``, refusing unsafe ids and anything that would escape ``out_dir``."""
    return safe_join(out_dir, check_id(video_id))


def clip_path(out_dir: str | os.PathLike[str], video_id: str, slice_num: int) -> Path:
    """``<out_dir>/<video_id>/<video_id>-Scene-NNN.mp4`` (the LoVR release layout)."""
    return safe_join(out_dir, check_id(video_id), schema.clip_id_for(video_id, slice_num) + ".mp4")


def _tmp_path(final: Path) -> Path:
    return final.with_name(f"{TMP_PREFIX}{final.stem}.{os.getpid()}{TMP_SUFFIX}")


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> int:
    """Delete temporary clip files a killed run left in ``folder``; returns how many."""
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(TMP_PREFIX) and p.name.endswith(TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def _commit(tmp: Path, final: Path) -> None:
    """fsync then rename: the final name only ever holds a complete file."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


# ---------------------------------------------------------------------------------------------------------
# exact: one decode pass (in a thread), one encoder (or one per clip for rotated sources)


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


def _in_thread(make: Callable[[], Iterator[Any]], maxsize: int = 2, batch: int = 8) -> Iterator[Any]:
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

    frames = _in_thread(lambda: _decode_wanted(src_path, ranges, progress, threads))
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
                    _tmp_path(finals[k]),
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
                muxers[j] = _ClipMuxer(_tmp_path(finals[j]), codec, rate, tb, w, h, starts[j], audio, j)
            muxers[j].mux(pkt)

    frames = _in_thread(lambda: _decode_wanted(src_path, ranges, progress, threads))
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


def _cut_exact(
    src_path: str,
    ranges: list[tuple[int, int]],
    finals: list[Path],
    info: VideoInfo,
    index: FrameIndex,
    **kwargs: Any,
) -> None:
    if info.rotation or kwargs.get("codec") != "libx264":  # forced IDR frames are libx264's guarantee
        _cut_exact_per_clip(src_path, ranges, finals, info, index, **kwargs)
    else:
        _cut_exact_one_encoder(src_path, ranges, finals, info, index, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# copy: remux packets from the key frame at or before each start


@dataclass
class _CopyPlan:
    first: int  # decode position of the key frame the file starts at
    last: int  # decode position of the last packet needed
    min_pts: int  # packets shown before the key frame (open-GOP leading frames) are dropped
    offset: int  # frames in the file before the clip's first frame
    total: int  # frames in the file


def _plan_copy(index: FrameIndex, s: int, e: int) -> _CopyPlan:
    """Which packets (decode order) a stream-copied clip of frames ``[s, e)`` needs."""
    pts_s = int(index.pts[s])
    pts_e = int(index.pts[e]) if e < index.num_frames else None
    dec_pts, live = index.dec_pts, ~index.dec_discard
    d_s = int(np.flatnonzero(live & (dec_pts == pts_s))[0])
    keys = np.flatnonzero(index.dec_key[: d_s + 1] & (dec_pts[: d_s + 1] <= pts_s))
    good = keys[live[keys]]
    first = int(good[-1]) if len(good) else (int(keys[-1]) if len(keys) else 0)
    wanted = live & (dec_pts >= pts_s) & ((dec_pts < pts_e) if pts_e is not None else True)
    last = int(np.flatnonzero(wanted)[-1])
    min_pts = int(dec_pts[first])
    seg = slice(first, last + 1)
    kept = dec_pts[seg] >= min_pts  # discarded pre-roll packets of the source become visible frames
    offset = int((kept & (dec_pts[seg] < pts_s)).sum())
    return _CopyPlan(first=first, last=last, min_pts=min_pts, offset=offset, total=int(kept.sum()))


def _cut_copy(
    src_path: str, ranges: list[tuple[int, int]], finals: list[Path], index: FrameIndex
) -> list[_CopyPlan]:
    """One demux pass; a packet goes to every open clip whose planned packet span holds it."""
    plans = [_plan_copy(index, s, e) for s, e in ranges]
    outs: dict[int, tuple[Any, Any, Path]] = {}
    nxt = 0  # next clip to open
    done = 0
    pos = -1
    try:
        with av.open(src_path) as c:
            vs = c.streams.video[0]
            tb = vs.time_base
            for pkt in c.demux(vs):
                if pkt.size == 0 and pkt.pts is None and pkt.dts is None:
                    continue
                pos += 1
                while nxt < len(plans) and plans[nxt].first == pos:
                    tmp = _tmp_path(finals[nxt])
                    out = av.open(str(tmp), "w", format="mp4")
                    ost = out.add_stream_from_template(vs)
                    outs[nxt] = (out, ost, tmp)
                    nxt += 1
                if not outs:
                    if done == len(plans):
                        break
                    continue
                pts, dts = pkt.pts, pkt.dts
                if pts is None:
                    pts = dts
                for j in sorted(outs):
                    plan = plans[j]
                    out, ost, tmp = outs[j]
                    if pts is not None and pts < plan.min_pts:
                        continue  # open-GOP leading frame: undecodable without the previous GOP
                    pkt.stream = ost
                    pkt.time_base = tb
                    pkt.pts = None if pts is None else pts - plan.min_pts
                    pkt.dts = None if dts is None else dts - plan.min_pts
                    out.mux(pkt)
                for j in [j for j in outs if plans[j].last == pos]:
                    out, _, tmp = outs.pop(j)
                    out.close()
                    _commit(tmp, finals[j])
                    done += 1
            if outs or done < len(plans):
                raise VideoError(f"{src_path}: the source ended before all copy clips were written")
    except av.error.FFmpegError as e:
        raise VideoError(f"{src_path}: stream copy failed: {e}") from None
    finally:
        for out, _, tmp in outs.values():
            with contextlib.suppress(Exception):
                out.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return plans


def _verify_copy(path: Path, plan: _CopyPlan, s_rel_s: float, fps: float) -> int:
    """Check the written file against its plan and return its frame count (demux only, no decoding)."""
    idx = build_index(path)
    if idx.num_frames != plan.total:
        raise VideoError(f"{path}: copy clip holds {idx.num_frames} frames, planned {plan.total}")
    got = float((int(idx.pts[plan.offset]) - int(idx.pts[0])) * idx.time_base)
    if abs(got - s_rel_s) > 0.5 / max(fps, 1.0):
        raise VideoError(f"{path}: copy clip start is at {got:.4f}s in the file, planned {s_rel_s:.4f}s")
    return idx.num_frames


# ---------------------------------------------------------------------------------------------------------
# public API


def cut_clips(
    src_path: str | os.PathLike[str],
    ranges: Sequence[tuple[int, int]],
    out_dir: str | os.PathLike[str],
    video_id: str,
    mode: str = "exact",
    fps: float | None = None,
    *,
    codec: str = "libx264",
    preset: str = DEFAULT_PRESET,
    crf: int = DEFAULT_CRF,
    audio: bool = True,
    progress: Callable[[int], None] | None = None,
    threads: int = 0,
) -> list[ClipFile]:
    """Cut ``src_path`` into clips of the half-open source frame ``ranges`` (sorted, not overlapping).

    Files go to ``<out_dir>/<video_id>/<video_id>-Scene-NNN.mp4`` (slice numbers from 1, in range order);
    ``virtual`` writes nothing. ``fps`` only feeds the fallback for times when the source has no usable
    timestamps (default: the probed average rate). ``audio``: in ``exact`` mode, also cut the source's
    audio streams (AAC), as the original's ``split_video_ffmpeg``. ``progress(frames_decoded)`` is called
    now and then in ``exact`` mode. ``threads``: decoder and encoder threads for this call (0: FFmpeg's and
    x264's automatic counts). Raises :class:`VideoError` for unreadable sources,
    :class:`lovr_hf.video.clip_audio.AudioError` for unreadable audio, ``ValueError`` for bad ranges.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"clip mode must be one of {CLIP_MODES}, got {mode!r}")
    src = str(Path(src_path).resolve())
    info = probe(src)
    if fps:
        info = VideoInfo(**{**asdict(info), "fps": float(fps)})
    index = build_index(src)
    rngs = _check_ranges(ranges, info.num_frames)
    check_id(video_id)
    times = [_clip_times(index, info, s, e) for s, e in rngs]
    ids = [schema.clip_id_for(video_id, n) for n in range(1, len(rngs) + 1)]

    if mode == "virtual":
        return [
            ClipFile(n, cid, src, s, e - s, s, e, t0, t1, mode, info.num_frames)
            for n, (cid, (s, e), (t0, t1)) in enumerate(zip(ids, rngs, times, strict=True), start=1)
        ]

    folder = clip_dir(out_dir, video_id)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)
    finals = [clip_path(out_dir, video_id, n) for n in range(1, len(rngs) + 1)]

    if mode == "exact":
        plan = None
        if audio:
            v0 = float(int(index.pts[0]) * index.time_base) if index.reliable and index.num_frames else 0.0
            plan = AudioPlan(src, [(v0 + t0, v0 + t1) for t0, t1 in times])  # AudioError if unreadable
        try:
            _cut_exact(src, rngs, finals, info, index, codec=codec, preset=preset, crf=crf, progress=progress,
                       audio=plan or None, threads=threads)
        finally:
            if plan is not None:
                plan.close()
        return [
            ClipFile(n, cid, str(f), 0, e - s, s, e, t0, t1, mode, e - s, *file_digest(f))
            for n, (cid, f, (s, e), (t0, t1)) in enumerate(
                zip(ids, finals, rngs, times, strict=True), start=1
            )
        ]

    if not index.reliable:
        raise VideoError(f"{src}: packet timestamps do not index the frames; use clip mode 'exact'")
    plans = _cut_copy(src, rngs, finals, index)
    clips = []
    for n, (cid, f, (s, e), (t0, t1), plan) in enumerate(
        zip(ids, finals, rngs, times, plans, strict=True), start=1
    ):
        rel = float((int(index.pts[s]) - plan.min_pts) * index.time_base)
        total = _verify_copy(f, plan, rel, info.fps)
        clips.append(ClipFile(n, cid, str(f), plan.offset, e - s, s, e, t0, t1, mode, total, *file_digest(f)))
    return clips


def ffmpeg_exe() -> str | None:
    """An ffmpeg binary for baselines (imageio-ffmpeg's, else one on PATH)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return shutil.which("ffmpeg")


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) plus its finished children (ffmpeg)."""
    try:
        import resource
    except ImportError:  # not POSIX: this process only
        return time.process_time()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_clip_modes(
    src_path: str | os.PathLike[str],
    ranges: Sequence[tuple[int, int]],
    tmpdir: str | os.PathLike[str] | None = None,
    *,
    modes: Sequence[str] = CLIP_MODES,
    baseline: bool = True,
    preset: str = DEFAULT_PRESET,
    crf: int = DEFAULT_CRF,
    audio: bool = True,
) -> dict[str, float]:
    """Wall seconds per clip mode (index building included: caches are cleared), plus ``ffmpeg_reencode``.

    The baseline is one ffmpeg pass re-encoding the whole source with the same encoder settings
    (``-map 0:v:0 -map 0:a? -c:v libx264 -preset P -crf C -c:a aac`` to an .mp4, ``-an`` instead of the
    audio options when ``audio`` is off): the target for ``exact`` is a ratio <= 1. Each key also comes as
    ``<key>_cpu`` (CPU seconds, all threads), which stays comparable on a machine shared with other jobs,
    where wall times are noisy.
    """
    own = tmpdir is None
    root = Path(tempfile.mkdtemp(prefix="lovr_clips_")) if own else Path(tmpdir)  # type: ignore[arg-type]
    out: dict[str, float] = {}
    try:
        for mode in modes:
            clear_cache()
            c0, t0 = _cpu_seconds(), time.perf_counter()
            cut_clips(src_path, ranges, root / mode, "bench", mode=mode, preset=preset, crf=crf, audio=audio)
            out[mode] = time.perf_counter() - t0
            out[f"{mode}_cpu"] = _cpu_seconds() - c0
        exe = ffmpeg_exe() if baseline else None
        if exe:
            dst = root / "ffmpeg_reencode.mp4"
            cmd = [exe, "-v", "error", "-y", "-i", os.fspath(src_path), "-map", "0:v:0"]
            cmd += ["-map", "0:a?", "-c:a", "aac"] if audio else ["-an"]
            cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), str(dst)]
            c0, t0 = _cpu_seconds(), time.perf_counter()
            subprocess.run(cmd, check=True)
            out["ffmpeg_reencode"] = time.perf_counter() - t0
            out["ffmpeg_reencode_cpu"] = _cpu_seconds() - c0
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return out


def rows_for(
    clips: Sequence[ClipFile], video_id: str, fps: float, root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """``clips`` table rows for one video's clips."""
    return [c.to_row(video_id, fps, root) for c in clips]


__all__ = [
    "CLIP_MODES",
    "ClipFile",
    "bench_clip_modes",
    "clip_dir",
    "clip_path",
    "cut_clips",
    "ffmpeg_exe",
    "remove_stale_temp_files",
    "rows_for",
]
