"""Clip files on disk: where a clip of a video goes, its temporary name, the atomic commit, and what a cut
returns (:class:`ClipFile`, the reader contract of a ``clips`` row).

Why apart from the cutters: the two-pass cutters (:mod:`lovr_hf.video.exact_cut`, :mod:`lovr_hf.video.copy_cut`)
and the one-pass detect-and-cut (:mod:`lovr_hf.segment.detect_and_cut`) name, write and commit files the
same way: every file is written under a temporary name in its final folder and renamed when complete, so a
kill never leaves a truncated clip under the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lovr_hf import schema
from lovr_hf.ids import check_id, safe_join
from lovr_hf.video.frame_index import FrameIndex, VideoInfo

TMP_PREFIX = "."
TMP_SUFFIX = ".tmp.mp4"


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


def clip_times(index: FrameIndex, info: VideoInfo, s: int, e: int) -> tuple[float, float]:
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


def tmp_path_for(final: Path) -> Path:
    """The name a clip is written under until it is complete (per process: two writers never share one)."""
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


def rows_for(
    clips: Sequence[ClipFile], video_id: str, fps: float, root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """``clips`` table rows for one video's clips."""
    return [c.to_row(video_id, fps, root) for c in clips]
