"""X-CLIP (transformers ``XCLIPModel``): a native video tower on the family's own frame count.

X-CLIP encodes a clip as ``num_frames`` frames (8 for ``microsoft/xclip-base-patch32``, 16 or 32 for others:
``vision_config.num_frames``) through CLIP's image encoder, a cross-frame communication transformer and a
multi-frame integration transformer whose temporal embedding has exactly that many positions. The visual
stage gives native video towers ``video_frames`` uniform frames per clip / video (``embed_video``); other
counts are re-sampled uniformly to the model's count here, so a clip of any length gets the family's rule.

The model's full forward also adds a *video-conditioned* prompt to every text (``prompts_generator``: each
text embedding is shifted by the video it is compared with). A retrieval index embeds each text once, so
the adapter uses the unconditioned text features (``get_text_features``), as X-CLIP's retrieval API does;
the difference is measured in tests/test_embedder_xclip.py and listed in docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import check_frames, encode_batches
from lovr_hf.backends.embedders.families import NATIVE_VIDEO, Family, register_family
from lovr_hf.backends.embedders.transformers import TransformersEmbedder, _features, to_model

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/xclip-base-patch32"
DEFAULT_FRAMES = 8


def config_num_frames(model_path: str, revision: str | None = None) -> int:
    """``vision_config.num_frames`` of a local folder or Hub id (config only, no weights).

    A config that cannot be read is an error, not a guess: the temporal embedding has exactly that many
    positions, so a wrong count would fail (or, for a model trained on more frames, misread) every clip."""
    cfg = Path(model_path).expanduser() / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text())
        except ValueError as e:
            raise ValueError(f"{cfg}: not a readable X-CLIP config ({e})") from e
    else:
        from transformers import AutoConfig

        data = AutoConfig.from_pretrained(model_path, revision=revision).to_dict()
    return int((data.get("vision_config") or {}).get("num_frames") or DEFAULT_FRAMES)


def resample_uniform(frames: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames spread evenly over ``frames`` (first and last kept; repeats when there are fewer)."""
    if len(frames) == n:
        return frames
    idx = np.rint(np.linspace(0, len(frames) - 1, n)).astype(np.int64)
    return frames[idx]


@EMBEDDERS.register("xclip")
class XClipEmbedder(TransformersEmbedder):
    """``XCLIPModel``: ``embed_video`` = the video tower on ``video_frames`` frames; text = ``get_text_features``.

    ``embed_frames`` (per-frame features, for callers that pool frames) encodes each frame as a still clip
    (the frame repeated ``video_frames`` times): X-CLIP has no single-image path.
    """

    name = "xclip"
    video_frames: int | None = DEFAULT_FRAMES

    def __init__(self, model_path: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        super().__init__(model_path, **kwargs)
        self.video_frames = config_num_frames(model_path, self.revision)

    def _check_model(self, model: Any) -> None:
        for method in ("get_text_features", "get_video_features"):
            if not hasattr(model, method):
                raise TypeError(f"{self.model_path}: {type(model).__name__} has no {method}()")

    def _videos(self, clips: list[np.ndarray]) -> np.ndarray:
        """[n, T, H, W, 3] uint8 clips -> [n, d] normalised video features."""
        import torch

        model, processor = self.load()
        image_processor = getattr(processor, "image_processor", processor)

        def encode(batch: list[np.ndarray]) -> Any:
            inputs = to_model(image_processor(images=[list(c) for c in batch], return_tensors="pt"), model)
            with torch.inference_mode():
                return _features(model.get_video_features(pixel_values=inputs["pixel_values"]))

        # batch_size counts frames: as many clips per forward as fit
        return encode_batches(clips, self.batch_size // int(self.video_frames), encode, lambda: self.dim)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames, allow_empty=False)
        return self._videos([resample_uniform(frames, int(self.video_frames))])[0]

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        n = int(self.video_frames)
        return self._videos([np.repeat(f[None], n, axis=0) for f in frames])


register_family(Family(
    name="xclip", backend="xclip", patterns=(r"x-?clip",), model_types=("xclip",), priority=2,
    video_input=NATIVE_VIDEO, video_frames=DEFAULT_FRAMES, original_bgr=False,
    text="CLIP tokenizer, 77 tokens, truncated; text features without the video-conditioned prompt",
    pooling="video tower (cross-frame + multi-frame integration transformers) on uniform frames, "
            "L2-normalised",
    precision="model dtype (auto: bf16 on GPU)",
    hub_ids=(DEFAULT_MODEL, "microsoft/xclip-base-patch16-zero-shot"),
    notes="not in the paper; frames per item = vision_config.num_frames (8 for base-patch32, 32 for "
          "base-patch16-zero-shot)",
))
