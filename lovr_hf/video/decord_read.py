"""Frame reads through decord, refused whenever decord's frame numbering differs from the index.

Why apart: decord (what the original LoVR evaluation reads clips with) trusts its own frame count,
``len(vr)``, which over-reports on stream-copied files -- their hidden pre-roll packets count as frames --
and mis-seeks in open-GOP streams, so it is used only where it provably returns the frames of
:class:`~lovr_hf.video.frame_index.FrameIndex`; :func:`lovr_hf.video.reader.read_frames` falls back to PyAV
otherwise. Readers stay open between calls (opening one demuxes the whole file).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.video.frame_index import FrameIndex, VideoError, VideoInfo, file_key


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


def clear_decord_readers() -> None:
    """Close the decord readers kept open (see :func:`lovr_hf.video.reader.clear_cache`)."""
    _decord_reader.cache_clear()


def read_with_decord(
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
    vr, lock = _decord_reader(*file_key(path), size)
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
