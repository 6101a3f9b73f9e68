"""The video preprocessing the original captioner got from ``qwen_vl_utils`` (0.0.10, Qwen2.5-VL), restated.

``process_vision_info`` did three things to each clip before vLLM saw it, all reproduced here on frames
the stage has already sampled (frame count and indices are :mod:`lovr_hf.video.frames`' job):

* a **pixel budget** per frame: at least 128 merged tokens, at most 768, and at most twice the video
  budget (128000 * 0.9 tokens, the default of its ``VIDEO_MAX_PIXELS`` variable) per frame count, never
  below 1.05 x the minimum; a token covers ``factor`` x ``factor`` pixels (patch 14 x merge 2 = 28 for
  Qwen2/2.5-VL, 16 x 2 = 32 for Qwen3-VL);
* ``smart_resize``: both sides rounded to multiples of ``factor``, then scaled (aspect kept) into the
  budget, with torchvision's bicubic, antialiased resize of the uint8 frames (clamped to [0, 255] and
  rounded, as torchvision does for uint8 input), handed on as float frames [T, C, H, W];
* the **sampled fps** ``nframes / total_frames * video_fps`` passed as ``mm_processor_kwargs={"fps": [...]}``
  (the caption stage computes it per clip: :func:`lovr_hf.caption.stage.sampled_fps`).
"""

from __future__ import annotations

import math

import numpy as np

MIN_TOKENS = 128
MAX_TOKENS = 768
#: the video budget in tokens: qwen_vl_utils' VIDEO_TOTAL_PIXELS default (128000 * 28 * 28 * 0.9 pixels)
TOTAL_TOKENS = 128000 * 0.9
FRAME_FACTOR = 2  # frames go in temporal pairs
MAX_RATIO = 200


def round_to(x: float, factor: int) -> int:
    return round(x / factor) * factor


def ceil_to(x: float, factor: int) -> int:
    return math.ceil(x / factor) * factor


def floor_to(x: float, factor: int) -> int:
    return math.floor(x / factor) * factor


def smart_resize(height: int, width: int, factor: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """(height, width): multiples of ``factor`` near the input, with an area in [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio above {MAX_RATIO}: {width}x{height}")
    h = max(factor, round_to(height, factor))
    w = max(factor, round_to(width, factor))
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h, w = floor_to(height / scale, factor), floor_to(width / scale, factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = ceil_to(height * scale, factor), ceil_to(width * scale, factor)
    return h, w


def video_pixel_budget(n_frames: int, factor: int, *, min_pixels: float | None = None,
                       max_pixels: float | None = None, total_pixels: float | None = None) -> tuple[float, float]:
    """(min, max) pixels per frame of a clip of ``n_frames`` frames; ``min_pixels`` / ``max_pixels`` /
    ``total_pixels`` override the defaults as the per-video options of ``qwen_vl_utils`` did (a larger
    ``max_pixels`` than the budget allows is capped)."""
    low = MIN_TOKENS * factor * factor if min_pixels is None else min_pixels
    total = TOTAL_TOKENS * factor * factor if total_pixels is None else total_pixels
    high = max(min(MAX_TOKENS * factor * factor, total / n_frames * FRAME_FACTOR), int(low * 1.05))
    if max_pixels is not None:
        high = min(max_pixels, high)
    return low, high


def resize_video(frames: np.ndarray, factor: int, *, min_pixels: float | None = None,
                 max_pixels: float | None = None, total_pixels: float | None = None):
    """uint8 frames [T, H, W, 3] -> float32 torch tensor [T, 3, H', W'] sized by the pixel budget (integer
    values: the original resized decord's uint8 frames, which torchvision clamps and rounds)."""
    import torch

    t, height, width = frames.shape[:3]
    low, high = video_pixel_budget(t, factor, min_pixels=min_pixels, max_pixels=max_pixels,
                                   total_pixels=total_pixels)
    h, w = smart_resize(height, width, factor, low, high)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if (h, w) == (height, width):
        return x
    y = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp(0, 255).round()


def merge_factor(processor: object) -> int | None:
    """Pixels per merged token side of a Qwen-VL processor (patch size x merge size); None otherwise."""
    vp = getattr(processor, "video_processor", None)
    patch, merge = getattr(vp, "patch_size", None), getattr(vp, "merge_size", None)
    name = type(processor).__name__
    if not (isinstance(patch, int) and isinstance(merge, int)) or not name.startswith(("Qwen2VL", "Qwen2_5_VL",
                                                                                        "Qwen3VL")):
        return None
    return patch * merge
