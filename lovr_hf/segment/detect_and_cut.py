"""Detect scene cuts and cut ``exact`` clip files in ONE decoding pass (the default segmentation path).

Why: detecting (a full decode) and then cutting (a second full decode + encode) decodes every video
twice; the decode is ~10-15 % of the CPU time of a segmented video (``scripts/bench_segment.py``
measures it). Here every decoded frame is scored (the ``content`` detector's score, the same code) and
handed to the H.264 encoder, so the file is decoded once.

How, given that a cut is only known after the frame: the encoder gets an IDR frame at every *candidate*
frame (score >= threshold), a superset of the cuts, because every cut the flash filter emits is an
above-threshold frame; the packets it returns wait in a queue until the online flash filter
(:class:`lovr_hf.video.scenes.OnlineFlashFilter`) has decided their frame's scene (at most ``min_scene_len``
frames later), and are then routed into their clip's file, exactly like the two-pass
``exact_cut._cut_exact_one_encoder`` routes them at known cuts. A candidate that does not become a cut (a flash
merged away) leaves an extra key frame inside a clip - the frames are the same. Audio is cut per clip as
in :mod:`lovr_hf.video.clip_audio`, the clip's end given when the next cut is known.

Used only where it gives the same clips as detect-then-cut: the ``content`` detector (no flash guard,
no adaptive threshold loop), ``exact`` clips with libx264, no rotation, the last scene kept as it is (no
``--merge-short-tail``); :func:`supports` says so, and the segment stage falls back to two passes
otherwise. The tests compare both paths clip by clip.
"""

from __future__ import annotations

import bisect
import collections
import logging
from pathlib import Path
from typing import Any

import av
import numpy as np

from lovr_hf import schema
from lovr_hf.backends.detectors.content_score import PlaneSampler, Scorer
from lovr_hf.backends.detectors.detector_base import (
    DetectionResult,
    effective_downscale,
    iter_frames,
    open_video,
    stream_fps,
)
from lovr_hf.backends.detectors.fast import FastContentDetector
from lovr_hf.ids import check_id
from lovr_hf.video.clip_audio import AudioPlan
from lovr_hf.video.clip_files import (
    ClipFile,
    _commit,
    clip_dir,
    clip_path,
    clip_times,
    remove_stale_temp_files,
    tmp_path_for,
)
from lovr_hf.video.clip_store import file_digest
from lovr_hf.video.exact_cut import _ClipMuxer, in_thread, one_encoder
from lovr_hf.video.frame_index import VideoError, build_index
from lovr_hf.video.reader import probe
from lovr_hf.video.scenes import MERGE, OnlineFlashFilter, scenes_from_cuts, seconds_to_frames

logger = logging.getLogger(__name__)

BIG_FRAME = 1280 * 720  # above this, score batches of 8 frames (fewer decoded frames held)


def supports(detector: Any, *, clip_mode: str, adaptive: bool, merge_short_tail: bool, rotation: int,
             codec: str = "libx264") -> bool:
    """Whether one pass gives exactly the clips of detect-then-cut for these settings."""
    return (
        type(detector) is FastContentDetector
        and not detector.flash_guard
        and detector.filter_mode == MERGE
        and clip_mode == "exact"
        and not adaptive
        and not merge_short_tail
        and not rotation
        and codec == "libx264"
    )


def detect_and_cut(
    src_path: str,
    out_dir: str | Path,
    video_id: str,
    detector: FastContentDetector,
    *,
    min_clip_s: float,
    preset: str,
    crf: int,
    audio: bool = True,
    threads: int = 0,
) -> tuple[DetectionResult, list[ClipFile]]:
    """Cuts of ``detector`` on ``src_path`` and its ``exact`` clip files, from one decoding pass.

    Files go to ``<out_dir>/<video_id>/<video_id>-Scene-NNN.mp4`` as with :func:`lovr_hf.video.clipper.cut_clips`;
    ``threads`` sizes the decoder and encoder thread pools (0: FFmpeg's and x264's automatic choice).
    """
    src = str(Path(src_path).resolve())
    check_id(video_id)
    info = probe(src)
    index = build_index(src)
    n_expected = info.num_frames
    if n_expected < 1:
        raise VideoError(f"{src}: no frames")
    folder = clip_dir(out_dir, video_id)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)
    v0 = float(int(index.pts[0]) * index.time_base) if index.reliable and index.num_frames else 0.0

    container, vs = open_video(src)
    fps = stream_fps(vs)
    container.close()
    enc, (w, h), rate, tb, tick = one_encoder(src, info, codec="libx264", preset=preset, crf=crf, threads=threads)

    thr = detector.threshold
    w8 = np.asarray(detector.weights, dtype=np.float64)
    norm = np.abs(w8).sum()
    flt = OnlineFlashFilter(seconds_to_frames(detector.min_scene_len_s, fps or info.fps), MERGE)
    plan = AudioPlan(src) if audio else None
    if plan is not None and not plan:
        plan.close()
        plan = None

    pts_of: list[int] = []  # encoder pts of every frame
    frame_of: dict[int, int] = {}  # encoder pts -> frame index
    queue: collections.deque[av.Packet] = collections.deque()  # packets whose scene is not final yet
    cuts: list[int] = []  # final cuts so far
    muxers: dict[int, _ClipMuxer] = {}
    finals: dict[int, Path] = {}
    counts: dict[int, int] = collections.Counter()
    times: list[float] = []
    state = {"last": -1, "scored": 0, "comp_i": 0, "comp_off": 0}
    pending: collections.deque[Any] = collections.deque()  # decoded frames waiting for their score

    def bounds_of(j: int) -> tuple[int, int]:
        return (0 if j == 0 else cuts[j - 1]), (cuts[j] if j < len(cuts) else n_expected)

    def window_s(j: int) -> tuple[float, float]:
        """The clip's time range on the container clock, as the two-pass path computes it."""
        t0, t1 = clip_times(index, info, *bounds_of(j))
        return v0 + t0, v0 + t1

    def commit_below(j: int) -> None:
        for jj in sorted(m for m in muxers if m < j):
            m = muxers.pop(jj)
            m.close(window_s(jj)[1])
            _commit(m.tmp, finals[jj])

    def route(final_upto: int) -> None:
        """Mux the queued packets whose frame is below ``final_upto`` (their scene is decided)."""
        while queue:
            pkt = queue[0]
            f = frame_of[pkt.pts]
            if f >= final_upto:
                return
            queue.popleft()
            j = bisect.bisect_right(cuts, f)
            if j not in muxers:
                if j < max(muxers, default=-1):
                    raise VideoError(f"{src}: a packet of clip {j + 1} came after a later clip started")
                commit_below(j)
                finals[j] = clip_path(out_dir, video_id, j + 1)
                start = 0 if j == 0 else cuts[j - 1]
                m = _ClipMuxer(tmp_path_for(finals[j]), "libx264", rate, tb, w, h, pts_of[start])
                if plan is not None:
                    m.audio = plan.open_clip(m.out, window_s(j)[0])
                muxers[j] = m
            muxers[j].mux(pkt)
            counts[j] += 1

    def encode(i: int, frame: Any, above: bool) -> None:
        if frame.format.name != "yuv420p" or frame.width != w or frame.height != h:
            frame = frame.reformat(width=w, height=h, format="yuv420p")
        pts = frame.pts
        if pts is None or pts <= state["last"]:
            pts = state["last"] + tick if state["last"] >= 0 else 0
        state["last"] = pts
        pts_of.append(pts)
        frame_of[pts] = i
        frame.pts, frame.time_base = pts, tb
        frame.pict_type = 1 if (i == 0 or above) else 0  # I (an IDR with forced-idr) at every candidate
        queue.extend(enc.encode(frame))

    def drain(scorer: Scorer) -> None:
        """Encode the pending frames whose scores the scorer has produced."""
        while pending and state["scored"] < scorer.n_done:
            while state["comp_off"] >= len(scorer.comps[state["comp_i"]]):
                state["comp_i"] += 1
                state["comp_off"] = 0
            c = scorer.comps[state["comp_i"]][state["comp_off"]]
            state["comp_off"] += 1
            score = float(c @ w8 / norm)
            i = state["scored"]
            state["scored"] += 1
            above = score >= thr
            cuts.extend(x for x in flt.push(above) if x < n_expected)
            encode(i, pending.popleft(), above)
            route(min(flt.horizon, i + 1))

    scorer: Scorer | None = None
    frames_in = in_thread(lambda: _decode_all(src, threads))
    n = 0
    try:
        for frame in frames_in:
            if n >= n_expected:  # as the two-pass path: frames past the probed count are not clipped
                break
            if scorer is None:
                full = frame.format.name == "yuvj420p" or int(getattr(frame, "color_range", 0) or 0) == 2
                target = "yuvj420p" if frame.format.name == "yuvj420p" else "yuv420p"
                fw, fh = frame.width, frame.height
                factor = effective_downscale(detector.downscale, fw, fh)
                batch = 8 if fw * fh > BIG_FRAME else 16
                scorer = Scorer(PlaneSampler(fw, fh, factor), w8, batch, full, 0, 8.0, True)
            sample = frame
            if frame.format.name != target or frame.width != fw or frame.height != fh:
                sample = frame.reformat(width=fw, height=fh, format=target)
            times.append(frame.time if frame.pts is not None else float("nan"))
            pending.append(frame)
            scorer.add(sample)
            n += 1
            drain(scorer)
        if scorer is None:
            raise VideoError(f"{src}: no decodable video frame")
        if n < n_expected:
            raise VideoError(f"{src}: the video ended after {n} of its {n_expected} frames")
        components, _, _ = scorer.finish()
        drain(scorer)
        if pending:
            raise VideoError(f"{src}: {len(pending)} frames were never scored")
        queue.extend(enc.encode(None))
        route(n + 1)
        commit_below(len(cuts) + 1)
    except av.error.FFmpegError as e:
        raise VideoError(f"{src}: decoding or encoding failed: {e}") from None
    finally:
        frames_in.close()
        if scorer is not None:
            scorer.close()
        for m in muxers.values():
            m.abort()
        if plan is not None:
            plan.close()

    ranges = scenes_from_cuts(cuts, n, info.fps, min_clip_s)
    bounds = list(zip([0, *cuts], [*cuts, n], strict=True))
    if ranges != bounds:  # cannot happen for the content detector's cuts; never write wrong clips
        raise VideoError(f"{src}: single-pass clips {bounds} differ from the scene rule's {ranges}")
    for j, (s, e) in enumerate(bounds):
        if counts[j] != e - s:
            raise VideoError(f"{src}: clip {j + 1} got {counts[j]} of its {e - s} frames")
    scores = components @ w8 / norm
    det = DetectionResult(list(cuts), n, fps, thr, scores, np.asarray(times, dtype=np.float64),
                          extra={"downscale": float(scorer.sampler.f)})
    clips = []
    for j, (s, e) in enumerate(bounds, start=1):
        t0, t1 = clip_times(index, info, s, e)
        f = finals[j - 1]
        clips.append(ClipFile(j, schema.clip_id_for(video_id, j), str(f), 0, e - s, s, e, t0, t1, "exact", e - s,
                              *file_digest(f)))
    return det, clips


def _decode_all(path: str, threads: int) -> Any:
    container, stream = open_video(path)
    try:
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        yield from iter_frames(container, stream, path)
    finally:
        container.close()


__all__ = ["detect_and_cut", "supports"]
