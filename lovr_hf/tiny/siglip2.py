"""Tiny random SigLIP2 (``Siglip2Model`` + ``Siglip2Processor``) for offline tests of the SigLIP2 text rules.

The tokenizer is transformers' own ``Siglip2Tokenizer`` (Gemma-style BPE with byte fallback, plus the
lower-casing normaliser transformers 5 adds for SigLIP2) built on a vocabulary trained locally on the tiny
corpus, so the case handling of ``--protocol original`` vs ``lovr`` runs on the real class. The image side is
the real NaFlex ``Siglip2ImageProcessor`` (patches + ``pixel_attention_mask`` + ``spatial_shapes``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lovr_hf.tiny.common import _CORPUS, _build_once, _seed_everything, tiny_tower

PATCH = 8
MAX_PATCHES = 16  # 4x4 patches of 8 px: a 32x32 image budget


def _siglip2_tokenizer() -> Any:
    """``Siglip2Tokenizer`` on a BPE vocabulary trained on the corpus (specials pad/eos/bos/unk/mask = 0..4)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")  # Gemma: spaces become the metaspace symbol
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    # mixed-case corpus: upper- and lower-case words get their own tokens, so case handling is visible
    tok.train_from_iterator(_CORPUS * 4 + [c.lower() for c in _CORPUS] * 2, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return Siglip2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=64)


def _siglip2_save(out: Path, seed: int) -> None:
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    tokenizer = _siglip2_tokenizer()
    text_config = tiny_tower(
        vocab_size=len(tokenizer), max_position_embeddings=64, projection_size=32,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    vision_config = tiny_tower(patch_size=PATCH, num_patches=MAX_PATCHES)
    config = Siglip2Config(text_config=text_config, vision_config=vision_config)
    _seed_everything(seed)
    model = Siglip2Model(config).eval()
    image_processor = Siglip2ImageProcessor(patch_size=PATCH, max_num_patches=MAX_PATCHES)
    model.save_pretrained(out)
    Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def build_tiny_siglip2(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny Siglip2Model (2+2 layers, width 32, 16 NaFlex patches of 8 px, 64-token text) -> folder."""
    return _build_once(out_dir, "siglip2", seed, lambda p: _siglip2_save(p, seed))
