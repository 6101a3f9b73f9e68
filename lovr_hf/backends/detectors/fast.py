"""Fast scene detection: PySceneDetect's ContentDetector (and AdaptiveDetector) rules on the scores of
:mod:`lovr_hf.backends.detectors.content_score`, at decode speed.

Every frame is scored once (see that module for how and for the speed); the cut decision then applies
PySceneDetect's rules (threshold, ``min_scene_len`` in frames, flash filter ``merge``) from
:mod:`lovr_hf.video.scenes`. Downscale: ``"auto"`` by default, what the original LoVR script really got
(:mod:`lovr_hf.backends.detectors.detector_base` says why).

Behaviour inherited from ContentDetector's rules (kept by default for fidelity, covered by tests):

* a flash (1-3 bright frames) more than ``min_scene_len`` after the previous cut is reported as a cut;
  one that comes sooner starts a merge that swallows the next true cut if that cut follows within
  ``min_scene_len``. ``flash_guard=True`` (opt-in) treats a jump after which the picture comes back
  within ``flash_lookahead`` frames as a flash, which removes both effects;
* a cross-dissolve spreads its change over many frames and is usually not detected (the two scenes
  stay one clip); ``transnetv2`` detects dissolves;
* a fast pan raises scores but stays below 34 on ordinary footage; a static shot scores ~0.
"""

from __future__ import annotations

from typing import Any

from lovr_hf.backends.base import DETECTORS
from lovr_hf.backends.detectors.content_score import FrameScores, content_scores
from lovr_hf.backends.detectors.detector_base import (
    DEFAULT_DOWNSCALE,
    DEFAULT_MIN_SCENE_LEN_S,
    DEFAULT_THRESHOLD,
    DetectionResult,
    DetectorBase,
)
from lovr_hf.video.scenes import (
    MERGE,
    SUPPRESS,
    adaptive_cuts,
    flash_filter,
    seconds_to_frames,
    suppress_flashes,
)


@DETECTORS.register("content")
class FastContentDetector(DetectorBase):
    """ContentDetector semantics (HSV frame difference, threshold 34, min scene 5 s, PySceneDetect's
    automatic downscale) at close to raw decode speed. The default detector.

    ``filter_mode``: ``merge`` (PySceneDetect 0.7 default) or ``suppress``. ``flash_guard`` (opt-in,
    off by default to keep the original behaviour): an above-threshold jump after which the picture
    returns to what it was within ``flash_lookahead`` frames is a flash, not a cut.
    """

    name = "content"
    default_threshold = DEFAULT_THRESHOLD
    rescorable = True  # scores() once, cuts_from_scores() at every threshold the adaptive search tries

    def __init__(
        self,
        threshold: float | None = None,
        min_scene_len_s: float = DEFAULT_MIN_SCENE_LEN_S,
        downscale: int | str = DEFAULT_DOWNSCALE,
        weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0),
        filter_mode: str = MERGE,
        flash_guard: bool = False,
        flash_lookahead: int = 3,
        thread_type: str = "AUTO",
        threads: int = 0,
    ) -> None:
        super().__init__(threshold, min_scene_len_s, downscale)
        self.threads = int(threads)  # decoder threads (0 = automatic); never changes the output
        if filter_mode not in (MERGE, SUPPRESS):
            raise ValueError(f"filter_mode must be {MERGE!r} or {SUPPRESS!r}")
        self.weights = tuple(float(x) for x in weights)
        self.filter_mode = filter_mode
        self.flash_guard = bool(flash_guard)
        self.flash_lookahead = int(flash_lookahead)
        self.thread_type = thread_type

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "weights": list(self.weights),
            "filter_mode": self.filter_mode,
            "flash_guard": self.flash_guard,
            "flash_lookahead": self.flash_lookahead if self.flash_guard else 0,
        }

    def scores(self, path: str) -> FrameScores:
        return content_scores(
            path,
            downscale=self.downscale,
            weights=self.weights,  # type: ignore[arg-type]
            thread_type=self.thread_type,
            flash_lookahead=self.flash_lookahead if self.flash_guard else 0,
            flash_floor=min(8.0, self.threshold),
            threads=self.threads,
        )

    def cuts_from_scores(self, fs: FrameScores, threshold: float | None = None) -> list[int]:
        """Re-threshold cached scores (no decoding): used by the adaptive threshold loop."""
        thr = self.threshold if threshold is None else float(threshold)
        if self.flash_guard:
            above = suppress_flashes(fs.scores, fs.return_dist, fs.return_len, thr)
        else:
            above = fs.scores >= thr
        return flash_filter(above, seconds_to_frames(self.min_scene_len_s, fs.fps), self.filter_mode)

    def analyze(self, path: str) -> DetectionResult:
        fs = self.scores(path)
        cuts = self.cuts_from_scores(fs)
        return DetectionResult(cuts, fs.num_frames, fs.fps, self.threshold, fs.scores, fs.frame_times,
                               extra={"downscale": fs.downscale})


@DETECTORS.register("adaptive-fast")
class FastAdaptiveDetector(DetectorBase):
    """PySceneDetect's AdaptiveDetector rule (score / mean of the neighbours' scores) on the fast
    backend's scores: same semantics as the ``adaptive`` reference backend, at decode speed."""

    name = "adaptive-fast"
    default_threshold = 3.0

    def __init__(
        self,
        threshold: float | None = None,
        min_scene_len_s: float = DEFAULT_MIN_SCENE_LEN_S,
        downscale: int | str = DEFAULT_DOWNSCALE,
        window_width: int = 2,
        min_content_val: float = 15.0,
        thread_type: str = "AUTO",
        threads: int = 0,
    ) -> None:
        super().__init__(threshold, min_scene_len_s, downscale)
        self.window_width = int(window_width)
        self.min_content_val = float(min_content_val)
        self.thread_type = thread_type
        self.threads = int(threads)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "window_width": self.window_width, "min_content_val": self.min_content_val}

    def analyze(self, path: str) -> DetectionResult:
        fs = content_scores(path, downscale=self.downscale, thread_type=self.thread_type, flash_lookahead=0,
                            threads=self.threads)
        cuts = adaptive_cuts(
            fs.scores,
            seconds_to_frames(self.min_scene_len_s, fs.fps),
            adaptive_threshold=self.threshold,
            window_width=self.window_width,
            min_content_val=self.min_content_val,
        )
        return DetectionResult(cuts, fs.num_frames, fs.fps, self.threshold, fs.scores, fs.frame_times,
                               extra={"downscale": fs.downscale})
