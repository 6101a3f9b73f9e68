"""What every scene-detector backend shares: :class:`DetectorBase` (threshold, minimum scene, downscale),
:class:`DetectionResult`, the downscale rule, and opening/decoding a video with clear error messages.

Downscale: ``"auto"`` (the default) is what the original LoVR script really got. It called
``VideoManager.set_downscale_factor(3)``, a documented no-op in PySceneDetect 0.6 ("No-op. Set
downscale_factor in SceneManager instead"), so the SceneManager's automatic factor applied:
``compute_downscale_factor(max(frame_size))`` = ``max(width, height) / 256`` as a float (1 below 256 px;
7.5 at 1920x1080, 5 at 1280x720, 2.5 at 640x360), and the frame is resized to
``(round(w / f), round(h / f))``. Checked in PySceneDetect's source: the float formula, its argument
``max(effective_frame_size)``, the resize and ``frame_skip = 0`` are the same in 0.6.5, 0.6.6, 0.6.7,
0.6.7.1 and 0.7 (0.6.0-0.6.4 used ``width // 256``, an integer; 0.6.5 was released in December 2024,
before the LoVR paper). An integer ``downscale`` (e.g. the ``3`` the original script meant) is lovr_hf's
option.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np

from lovr_hf.backends.base import SceneDetector

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 34.0  # the original LoVR clip_segmentation.py
DEFAULT_MIN_SCENE_LEN_S = 5.0
AUTO = "auto"
DEFAULT_DOWNSCALE = AUTO  # PySceneDetect's automatic factor: what the original script really ran with
AUTO_EFFECTIVE_WIDTH = 256  # scenedetect.scene_manager.DEFAULT_MIN_WIDTH
MAX_CONSECUTIVE_DECODE_FAILURES = 8  # as PySceneDetect's PyAV backend: skip isolated corrupt packets


class VideoReadError(ValueError):
    """The file is not a decodable video (empty, truncated, not a video, no video stream, ...)."""


@dataclass
class DetectionResult:
    """What a detector learned about one video; ``cuts`` is what :meth:`SceneDetector.detect` returns."""

    cuts: list[int]
    num_frames: int  # frames actually decoded (or reported by the reference tool)
    fps: float
    threshold: float
    scores: np.ndarray | None = None  # per-frame content_val, scores[0] == 0 (fast backends)
    frame_times: np.ndarray | None = None  # presentation time (s) of every frame, NaN if unknown (fast backends)
    extra: dict[str, Any] = field(default_factory=dict)


def parse_downscale(value: int | str) -> int | str:
    """``"auto"`` or a positive integer (``3``, ``"3"``, ``3.0``); anything else is a ``ValueError``."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v == AUTO:
            return AUTO
        try:
            value = int(v)
        except ValueError:
            raise ValueError(f"downscale must be 'auto' or a positive integer, got {value!r}") from None
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"downscale must be 'auto' or a positive integer, got {value!r}")
    return int(value)


def auto_downscale_factor(width: int, height: int) -> float:
    """PySceneDetect's ``compute_downscale_factor(max(frame_size))`` (0.6.5 to 0.7): the factor that
    brings the longer side to 256 px, a float (``1`` below 256 px)."""
    size = max(int(width), int(height))
    if size <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if size < AUTO_EFFECTIVE_WIDTH:
        return 1.0
    return size / float(AUTO_EFFECTIVE_WIDTH)


def effective_downscale(downscale: int | str, width: int, height: int) -> float:
    """The factor frames of a ``width x height`` video are shrunk by (``"auto"`` resolved)."""
    d = parse_downscale(downscale)
    return auto_downscale_factor(width, height) if d == AUTO else float(d)


class DetectorBase(SceneDetector):
    """Configuration shared by all detector backends.

    ``threshold``: the backend's own score threshold (None = the backend default: 34 for content,
    3.0 for adaptive, 0.5 for transnetv2). ``min_scene_len_s``: minimum scene length in seconds,
    converted to frames with the video's frame rate by truncation (as the original). ``downscale``:
    ``"auto"`` (PySceneDetect's automatic factor, which the original really ran with; see the module
    docstring) or an integer factor frames are shrunk by before scoring.
    """

    name = "detector"
    default_threshold: float = DEFAULT_THRESHOLD

    def __init__(
        self,
        threshold: float | None = None,
        min_scene_len_s: float = DEFAULT_MIN_SCENE_LEN_S,
        downscale: int | str = DEFAULT_DOWNSCALE,
    ) -> None:
        if min_scene_len_s < 0:
            raise ValueError("min_scene_len_s must be >= 0")
        self.threshold = float(self.default_threshold if threshold is None else threshold)
        self.min_scene_len_s = float(min_scene_len_s)
        self.downscale = parse_downscale(downscale)

    def params(self) -> dict[str, Any]:
        """Everything that changes the output (for dataset fingerprints and provenance)."""
        return {
            "detector": self.name,
            "threshold": self.threshold,
            "min_scene_len_s": self.min_scene_len_s,
            "downscale": self.downscale,
        }

    def analyze(self, path: str) -> DetectionResult:
        raise NotImplementedError

    def detect(self, path: str) -> list[int]:
        return self.analyze(path).cuts


# ----------------------------------------------------------------------------------------------------
# opening and decoding
# ----------------------------------------------------------------------------------------------------


def open_video(path: str | os.PathLike) -> tuple[Any, Any]:
    """Open ``path`` with PyAV and return ``(container, video_stream)``; raise :class:`VideoReadError`
    with a human-readable reason for every way a file can fail to be a video."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file")
    try:
        container = av.open(path)
    except av.FFmpegError as exc:
        raise VideoReadError(f"{path}: cannot open as a video ({exc.__class__.__name__}: {exc})") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        raise VideoReadError(f"{path}: no video stream (streams: {', '.join(kinds) or 'none'})")
    return container, container.streams.video[0]


def stream_fps(stream: Any) -> float:
    """Nominal frame rate of a PyAV stream (guessed, then average), 0.0 when unknown."""
    for rate in (getattr(stream, "guessed_rate", None), stream.average_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def iter_frames(container: Any, stream: Any, path: str = "") -> Iterator[Any]:
    """Decode every frame of ``stream`` in presentation order, skipping isolated corrupt packets (as
    PySceneDetect's PyAV backend does) and failing after several consecutive ones."""
    failures = 0
    for packet in container.demux(stream):
        try:
            frames = stream.decode(packet)
        except av.FFmpegError as exc:
            failures += 1
            if failures > MAX_CONSECUTIVE_DECODE_FAILURES:
                raise VideoReadError(f"{path}: too many consecutive decode errors ({exc})") from exc
            logger.debug("%s: skipping a corrupt packet (%s)", path, exc)
            continue
        failures = 0
        yield from frames
