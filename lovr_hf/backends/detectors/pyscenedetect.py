"""Reference backends: PySceneDetect 0.7 itself (ContentDetector, AdaptiveDetector).

Why keep them when ``content`` is faster: they are the semantics LoVR's original segmentation used,
so they are the yardstick the fast backend is tested against, and a user can always choose the stock
tool. Configured as the original ran it: a ``SceneManager`` with its automatic downscale (``downscale=
"auto"``: the original's ``VideoManager.set_downscale_factor(3)`` was a no-op, see
:mod:`lovr_hf.backends.detectors.detector_base`; an integer fixes the factor instead), the minimum scene length in
frames, ``int(5 s * frame rate)`` (truncated, as the original), OpenCV decoding by default (the original's
``VideoManager`` decoded with OpenCV too; ``backend="pyav"`` selects PySceneDetect's PyAV backend).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lovr_hf.backends.base import DETECTORS
from lovr_hf.backends.detectors.detector_base import (
    AUTO,
    DEFAULT_DOWNSCALE,
    DEFAULT_MIN_SCENE_LEN_S,
    DEFAULT_THRESHOLD,
    DetectionResult,
    DetectorBase,
    VideoReadError,
    auto_downscale_factor,
    open_video,
)
from lovr_hf.video.scenes import seconds_to_frames

logger = logging.getLogger(__name__)


class _PySceneDetectBase(DetectorBase):
    """Runs one PySceneDetect detector over a video and returns cut frame indices."""

    def __init__(
        self,
        threshold: float | None = None,
        min_scene_len_s: float = DEFAULT_MIN_SCENE_LEN_S,
        downscale: int | str = DEFAULT_DOWNSCALE,
        backend: str = "opencv",
    ) -> None:
        super().__init__(threshold, min_scene_len_s, downscale)
        self.backend = backend

    def params(self) -> dict[str, Any]:
        return {**super().params(), "backend": self.backend}

    def _make(self, min_len_frames: int) -> Any:
        raise NotImplementedError

    def analyze(self, path: str) -> DetectionResult:
        from scenedetect import SceneManager
        from scenedetect import open_video as sd_open_video

        path = os.fspath(path)
        container, _ = open_video(path)  # same checks and messages as the fast backends
        container.close()
        try:
            video = sd_open_video(path, backend=self.backend)
        except Exception as exc:  # VideoOpenFailure, av/cv2 errors: all mean "not a readable video"
            raise VideoReadError(f"{path}: cannot open as a video ({exc.__class__.__name__}: {exc})") from exc
        fps = float(video.frame_rate)
        manager = SceneManager()
        if self.downscale == AUTO:
            manager.auto_downscale = True
            factor = auto_downscale_factor(*video.frame_size)
        else:
            manager.auto_downscale = False
            manager.downscale = self.downscale
            factor = float(self.downscale)
        manager.add_detector(self._make(seconds_to_frames(self.min_scene_len_s, fps)))
        num_frames = manager.detect_scenes(video=video)
        if num_frames <= 0:
            raise VideoReadError(f"{path}: no decodable video frame")
        scenes = manager.get_scene_list(start_in_scene=True)
        first = scenes[0][0].frame_num if scenes else 0
        cuts = [int(start.frame_num) - first for start, _ in scenes[1:]]
        return DetectionResult(cuts, int(num_frames), fps, self.threshold, extra={"downscale": factor})


@DETECTORS.register("pyscenedetect")
class PySceneDetectContent(_PySceneDetectBase):
    """PySceneDetect's ``ContentDetector`` (threshold 34, min scene 5 s, automatic downscale by default)."""

    name = "pyscenedetect"
    default_threshold = DEFAULT_THRESHOLD

    def _make(self, min_len_frames: int) -> Any:
        from scenedetect import ContentDetector

        return ContentDetector(threshold=self.threshold, min_scene_len=min_len_frames)


@DETECTORS.register("adaptive")
class PySceneDetectAdaptive(_PySceneDetectBase):
    """PySceneDetect's ``AdaptiveDetector``: ``threshold`` is its ``adaptive_threshold`` (default 3.0);
    a frame is a cut when its score is that many times its neighbours' mean and at least
    ``min_content_val`` (15)."""

    name = "adaptive"
    default_threshold = 3.0

    def __init__(
        self,
        threshold: float | None = None,
        min_scene_len_s: float = DEFAULT_MIN_SCENE_LEN_S,
        downscale: int | str = DEFAULT_DOWNSCALE,
        backend: str = "opencv",
        window_width: int = 2,
        min_content_val: float = 15.0,
    ) -> None:
        super().__init__(threshold, min_scene_len_s, downscale, backend)
        self.window_width = int(window_width)
        self.min_content_val = float(min_content_val)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "window_width": self.window_width, "min_content_val": self.min_content_val}

    def _make(self, min_len_frames: int) -> Any:
        from scenedetect import AdaptiveDetector

        return AdaptiveDetector(
            adaptive_threshold=self.threshold,
            min_scene_len=min_len_frames,
            window_width=self.window_width,
            min_content_val=self.min_content_val,
        )
