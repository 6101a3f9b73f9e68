"""``copy`` clips: packets remuxed without re-encoding, from the key frame at or before each clip start.

The file keeps that pre-roll (and any trailing frames B-frames need); the plan records where the clip really
starts in it (``frame_offset``) and how many frames the file holds, and each written file is checked against
its plan by demuxing it. Video only. Called by :func:`lovr_hf.video.clipper.cut_clips`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from lovr_hf.video.clip_files import _commit, tmp_path_for
from lovr_hf.video.frame_index import FrameIndex, VideoError, build_index


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


def cut_copy(
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
                    tmp = tmp_path_for(finals[nxt])
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


def verify_copy(path: Path, plan: _CopyPlan, s_rel_s: float, fps: float) -> int:
    """Check the written file against its plan and return its frame count (demux only, no decoding)."""
    idx = build_index(path)
    if idx.num_frames != plan.total:
        raise VideoError(f"{path}: copy clip holds {idx.num_frames} frames, planned {plan.total}")
    got = float((int(idx.pts[plan.offset]) - int(idx.pts[0])) * idx.time_base)
    if abs(got - s_rel_s) > 0.5 / max(fps, 1.0):
        raise VideoError(f"{path}: copy clip start is at {got:.4f}s in the file, planned {s_rel_s:.4f}s")
    return idx.num_frames
