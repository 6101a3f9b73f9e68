"""Tiny random X-CLIP (``XCLIPModel`` + ``XCLIPProcessor``: VideoMAE image processor + CLIP tokenizer).

``num_frames`` is 4 here (the Hub checkpoints use 8, 16 or 32), so tests see the adapter follow the model's
own frame count instead of a hard-coded 8.
"""

from __future__ import annotations

import os
from pathlib import Path

from lovr_hf.tiny.clip import _clip_tokenizer, clip_text_tower
from lovr_hf.tiny.common import TINY_IMAGE_SIZE, _build_once, _seed_everything, tiny_tower

TINY_XCLIP_FRAMES = 4


def _xclip_save(out: Path, seed: int) -> None:
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPProcessor

    tokenizer = _clip_tokenizer()
    vision_config = tiny_tower(
        image_size=TINY_IMAGE_SIZE, patch_size=8, num_frames=TINY_XCLIP_FRAMES,
        mit_hidden_size=16, mit_intermediate_size=32, mit_num_hidden_layers=1, mit_num_attention_heads=2,
    )
    config = XCLIPConfig(text_config=clip_text_tower(tokenizer), vision_config=vision_config, projection_dim=16,
                         prompt_layers=1, prompt_num_attention_heads=2)
    _seed_everything(seed)
    model = XCLIPModel(config).eval()
    image_processor = VideoMAEImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    model.save_pretrained(out)
    XCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def build_tiny_xclip(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny XCLIPModel (2+2 layers, width 32, 32x32 frames, 4 frames per clip, 77-token text) -> folder."""
    return _build_once(out_dir, "xclip", seed, lambda p: _xclip_save(p, seed))
