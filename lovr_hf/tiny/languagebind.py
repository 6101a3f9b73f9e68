"""A tiny random LanguageBind-Video model built from the ``languagebind`` package's own classes, offline.

``LanguageBindVideoConfig`` / ``LanguageBindVideo`` (the package's CLIP variant with per-frame temporal
attention and LoRA on it) at width 32, saved with ``save_pretrained``, plus a CLIP BPE tokenizer trained on
the built-in corpus and saved so that ``LanguageBindVideoTokenizer.from_pretrained`` reloads it. The text
tower pools the token with the highest id (CLIP's end-of-text rule, ``input_ids.argmax``), so the tokenizer's
vocabulary puts ``<|startoftext|>`` / ``<|endoftext|>`` last, as CLIP's real vocabulary does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

NUM_FRAMES = 8  # LanguageBind_Video's vision_config.num_frames
IMAGE_SIZE = 224  # the package's video transform crops 224 pixels whatever the config says


def _specials_last_tokenizer() -> Any:
    """A genuine ``CLIPTokenizer`` whose two special tokens have the highest ids (as in CLIP's vocab)."""
    from transformers import CLIPTokenizer

    from lovr_hf.tiny.clip import _clip_tokenizer

    base = _clip_tokenizer()
    vocab = base.get_vocab()
    specials = ["<|startoftext|>", "<|endoftext|>"]
    words = sorted((t for t in vocab if t not in specials), key=vocab.__getitem__)
    order = {t: i for i, t in enumerate(words + specials)}
    data = json.loads(base.backend_tokenizer.to_str())
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in data["model"]["merges"]]
    return CLIPTokenizer(vocab=order, merges=merges, model_max_length=77)


def _save(out: Path, seed: int) -> None:
    import torch

    from lovr_hf.backends.embedders.languagebind import import_languagebind
    from lovr_hf.tiny.clip import clip_text_tower
    from lovr_hf.tiny.common import tiny_tower

    lb = import_languagebind()
    tokenizer = _specials_last_tokenizer()
    config = lb.LanguageBindVideoConfig(
        text_config=clip_text_tower(tokenizer),
        vision_config=tiny_tower(image_size=IMAGE_SIZE, patch_size=32, add_time_attn=True, num_frames=NUM_FRAMES,
                                 lora_r=2, lora_alpha=16, video_decode_backend="decord"),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = lb.LanguageBindVideo(config).eval()
    with torch.no_grad():  # LoRA's B matrices start at zero: give them weights so the LoRA path matters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_languagebind(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny LanguageBind-Video (8-frame temporal attention with LoRA, width 32) -> folder (needs the
    ``languagebind`` extra)."""
    from lovr_hf.tiny.common import _build_once

    return _build_once(out_dir, "languagebind_video", seed, lambda p: _save(p, seed))
