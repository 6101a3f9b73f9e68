"""Tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL (the captioner families) with a genuine ``Qwen2Tokenizer``.

Kept apart from :mod:`lovr_hf.tiny` (the shared build machinery) because three architectures, the Qwen chat
template and the pixel budgets that keep CPU generation fast are one family's business; GME
(:mod:`lovr_hf.tiny.gme`) re-saves the tiny Qwen2-VL in its own layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lovr_hf.tiny.common import _build_once, _seed_everything, _train_bpe

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen2-VL / Qwen2.5-VL chat template (system default, image/video placeholders, generation prompt).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small pixel budget for the tiny VLM processors: a few merged visual tokens per frame pair keeps CPU
# generation from 8 frames well under a second while still running the real resize/patchify path.
TINY_MIN_PIXELS = 28 * 28 * 4
TINY_MAX_PIXELS = 28 * 28 * 16
#: the same budgets for Qwen3-VL's 16-pixel patches
TINY_MIN_PIXELS_P16 = 32 * 32 * 4
TINY_MAX_PIXELS_P16 = 32 * 32 * 16


def _qwen_tokenizer() -> Any:
    """A genuine ``Qwen2Tokenizer``: Qwen pre-tokenizer, ~400-token byte-level BPE, Qwen special tokens."""
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    def configure(tok: Any) -> None:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()

    vocab, merges = _train_bpe(vocab_size=400, special_tokens=["<|endoftext|>"], configure=configure)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
        padding_side="left",
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True) for t in QWEN_SPECIAL_TOKENS]}
    )
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def _qwen_vl_save(out: Path, seed: int, arch: str) -> None:
    """Build and save one tiny Qwen-VL (``arch`` = "qwen2_5_vl", "qwen2_vl" or "qwen3_vl") + processor."""
    import torch
    from transformers import GenerationConfig, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = _qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    eos, pad = ids["<|im_end|>"], ids["<|endoftext|>"]
    text_config: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        # head_dim 16 -> 8 rotary frequencies split over (time, height, width)
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": None,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "tie_word_embeddings": False,
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        vision_config = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        }
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **common)
        model_cls, processor_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    elif arch == "qwen3_vl":
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

        # Qwen3 text: explicit head_dim (q/k norms), interleaved M-RoPE over the same 8 frequencies
        text_config["head_dim"] = 16
        text_config["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        }
        vision_config = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,  # 8x8 learned grid, interpolated to each frame's patch grid
            "deepstack_visual_indexes": [0],  # one deepstack merger feeding the first text layer
        }
        config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **common)
        model_cls, processor_cls = Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    elif arch == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        vision_config = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        }
        config = Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **common)
        model_cls, processor_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:  # pragma: no cover - internal
        raise ValueError(arch)

    _seed_everything(seed)
    model = model_cls(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[eos, pad], pad_token_id=pad, bos_token_id=None, do_sample=False
    )
    if arch == "qwen3_vl":
        from transformers import Qwen3VLVideoProcessor

        # 16-pixel patches (32-pixel merged tokens); Qwen3-VL's video budget covers all frames (t*h*w),
        # so the video gets 4x the per-image budget: a few merged tokens per frame pair, as for Qwen2.5-VL
        size = {"shortest_edge": TINY_MIN_PIXELS_P16, "longest_edge": TINY_MAX_PIXELS_P16}
        video_size = {"shortest_edge": TINY_MIN_PIXELS_P16, "longest_edge": 4 * TINY_MAX_PIXELS_P16}
        norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
        image_processor = Qwen2VLImageProcessor(size=size, patch_size=16, **norm)
        video_processor: Any = Qwen3VLVideoProcessor(size=video_size, cap_pixels_per_frame=False, **norm)
    else:
        size = {"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS}
        image_processor = Qwen2VLImageProcessor(size=size)
        video_processor = Qwen2VLVideoProcessor(size=size, cap_pixels_per_frame=False)
    processor = processor_cls(
        image_processor, tokenizer, video_processor, chat_template=QWEN_VL_CHAT_TEMPLATE
    )
    with torch.no_grad():
        model.save_pretrained(out)
    processor.save_pretrained(out)


def build_tiny_qwen25vl(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny Qwen2.5-VL (2 text layers of width 64, 2-block vision tower, ~400-token tokenizer) -> folder."""
    return _build_once(out_dir, "qwen2_5_vl", seed, lambda p: _qwen_vl_save(p, seed, "qwen2_5_vl"))


def build_tiny_qwen2vl(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny Qwen2-VL (same sizes as :func:`build_tiny_qwen25vl`) -> folder."""
    return _build_once(out_dir, "qwen2_vl", seed, lambda p: _qwen_vl_save(p, seed, "qwen2_vl"))


def build_tiny_qwen3vl(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny Qwen3-VL (2 text layers of width 64, 2-block vision tower with one deepstack merger) -> folder.

    Exercises what differs from Qwen2.5-VL: 16-pixel patches, learned interpolated vision positions,
    deepstack features, interleaved M-RoPE and per-frame timestamp tokens in the prompt.
    """
    return _build_once(out_dir, "qwen3_vl", seed, lambda p: _qwen_vl_save(p, seed, "qwen3_vl"))
