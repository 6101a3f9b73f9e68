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

This module is the entry point (:func:`cut_clips`: probe, check the ranges, dispatch by mode, build the
:class:`~lovr_hf.video.clip_files.ClipFile` of each clip); the cutters are :mod:`lovr_hf.video.exact_cut` and
:mod:`lovr_hf.video.copy_cut`, file naming and the atomic commit (a kill never leaves a truncated clip under
its final name) :mod:`lovr_hf.video.clip_files`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from lovr_hf import schema
from lovr_hf.ids import check_id
from lovr_hf.video.clip_audio import AudioPlan
from lovr_hf.video.clip_files import ClipFile, clip_dir, clip_path, clip_times, remove_stale_temp_files
from lovr_hf.video.clip_store import file_digest
from lovr_hf.video.copy_cut import cut_copy, verify_copy
from lovr_hf.video.exact_cut import cut_exact
from lovr_hf.video.frame_index import VideoError, VideoInfo, build_index
from lovr_hf.video.reader import probe

CLIP_MODES = ("exact", "copy", "virtual")
DEFAULT_CRF = 22  # split_video_ffmpeg's "-crf 22"
DEFAULT_PRESET = "veryfast"  # split_video_ffmpeg's "-preset veryfast"


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
    times = [clip_times(index, info, s, e) for s, e in rngs]
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
            cut_exact(src, rngs, finals, info, index, codec=codec, preset=preset, crf=crf, progress=progress,
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
    plans = cut_copy(src, rngs, finals, index)
    clips = []
    for n, (cid, f, (s, e), (t0, t1), plan) in enumerate(
        zip(ids, finals, rngs, times, plans, strict=True), start=1
    ):
        rel = float((int(index.pts[s]) - plan.min_pts) * index.time_base)
        total = verify_copy(f, plan, rel, info.fps)
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

