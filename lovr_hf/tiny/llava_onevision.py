"""Tiny random LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): a video VLM outside the Qwen family.

What differs from Qwen-VL and is exercised here: a SigLIP vision tower on fixed-size frames, a projector,
2x2 bilinear pooling of each frame's features and one ``<video>`` token per pooled feature (+1 newline)
in a Qwen2 (ChatML) prompt; a batch's videos must have equal frame counts (the captioner groups them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lovr_hf.tiny.common import _build_once, _seed_everything
from lovr_hf.tiny.qwen_vl import _qwen_tokenizer

#: ChatML turns (Qwen2 text model) with the image/video placeholders before the text of a turn, each on its
#: own line (written for the tiny model, in the layout of the llava-onevision-qwen2 checkpoints)
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'video' %}<video>\n{% endif %}{% endfor %}"
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_FRAME_SIDE = 32  # 4x4 patches of 8 px per frame, pooled to 2x2 video tokens


def _llava_tokenizer() -> Any:
    from tokenizers import AddedToken

    tokenizer = _qwen_tokenizer()
    tokenizer.add_tokens([AddedToken("<image>", special=True), AddedToken("<video>", special=True)],
                         special_tokens=True)
    tokenizer.chat_template = LLAVA_OV_CHAT_TEMPLATE
    return tokenizer


def _llava_onevision_save(out: Path, seed: int) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = _llava_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<video>", "<|im_end|>", "<|endoftext|>")}
    eos, pad = ids["<|im_end|>"], ids["<|endoftext|>"]
    text_config = {
        "model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 8192,
        "bos_token_id": None, "eos_token_id": eos, "pad_token_id": pad, "tie_word_embeddings": False,
    }
    vision_config = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": TINY_FRAME_SIDE, "patch_size": 8}
    pinpoints = [[TINY_FRAME_SIDE, TINY_FRAME_SIDE]]
    config = LlavaOnevisionConfig(text_config=text_config, vision_config=vision_config,
                                  image_token_index=ids["<image>"], video_token_index=ids["<video>"],
                                  vision_feature_select_strategy="full", vision_feature_layer=-1,
                                  image_grid_pinpoints=pinpoints)
    _seed_everything(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False)
    size = {"height": TINY_FRAME_SIDE, "width": TINY_FRAME_SIDE}
    processor = LlavaOnevisionProcessor(
        LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints), tokenizer,
        LlavaOnevisionVideoProcessor(size=size), num_image_tokens=(TINY_FRAME_SIDE // 8) ** 2,
        vision_feature_select_strategy="full", chat_template=LLAVA_OV_CHAT_TEMPLATE,
    )
    with torch.no_grad():
        model.save_pretrained(out)
    processor.save_pretrained(out)


def build_tiny_llava_onevision(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny LLaVA-OneVision (2 Qwen2 text layers of width 64, 2-layer SigLIP tower on 32x32 frames) -> folder."""
    return _build_once(out_dir, "llava_onevision", seed, lambda p: _llava_onevision_save(p, seed))
