"""Tiny random SmolVLM2 (``SmolVLMForConditionalGeneration``): a video VLM outside the Qwen family.

What differs from Qwen-VL and is exercised here: every frame is an image of its own (SigLIP-style tower,
pixel-shuffle connector, ``<fake_token_around_image><global-img><image>...`` per frame), the prompt spells
out the frame count and a timestamp per frame (from the video metadata the captioner passes), and the
frames of a batch are padded to a common count (so the captioner batches clips of equal frame counts).
The processor needs ``num2words`` (extra ``video-vlms``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lovr_hf.tiny.common import _build_once, _seed_everything, _train_bpe

SMOLVLM_SPECIAL_TOKENS = ["<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
                          "<image>"]
#: SmolVLM2's conversation layout (written for the tiny model): "<|im_start|>" once, then "Role: text" turns
#: closed by <end_of_utterance>, and "Assistant:" to prompt the reply. The processor uses its own built-in
#: template for conversations with a video, which has the same layout.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}"
    "{% if m['content'] is string %}: {{ m['content'] }}"
    "{% else %}{{ ':' if m['content'][0]['type'] == 'image' else ': ' }}"
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>{% elif part['type'] == 'video' %}<video>{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
TINY_FRAME_SIDE = 32  # frames are resized to 32x32: 4x4 patches of 8 px, pixel-shuffled to 4 tokens


def _smolvlm_tokenizer() -> Any:
    """Byte-level BPE (as SmolLM2's GPT-2 style tokenizer) with SmolVLM's special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    def configure(tok: Any) -> None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()

    vocab, merges = _train_bpe(vocab_size=400, special_tokens=["<|endoftext|>"], configure=configure)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    configure(tok)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                                        pad_token="<|endoftext|>", model_max_length=8192)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True) for t in SMOLVLM_SPECIAL_TOKENS]}
    )
    tokenizer.chat_template = SMOLVLM_CHAT_TEMPLATE
    return tokenizer


def _smolvlm_save(out: Path, seed: int) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tokenizer = _smolvlm_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [*SMOLVLM_SPECIAL_TOKENS, "<|endoftext|>"]}
    eos, pad = ids["<end_of_utterance>"], ids["<|endoftext|>"]
    text_config = {
        "model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 8192,
        "bos_token_id": ids["<|im_start|>"], "eos_token_id": eos, "pad_token_id": pad, "tie_word_embeddings": False,
    }
    vision_config = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "image_size": TINY_FRAME_SIDE, "patch_size": 8}
    config = SmolVLMConfig(text_config=text_config, vision_config=vision_config, scale_factor=2,
                           image_token_id=ids["<image>"], pad_token_id=pad)
    _seed_everything(seed)
    model = SmolVLMForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=ids["<|im_start|>"],
                                               do_sample=False)
    side = {"longest_edge": TINY_FRAME_SIDE}
    image_processor = SmolVLMImageProcessor(size=side, max_image_size=side, do_image_splitting=False)
    video_processor = SmolVLMVideoProcessor(size=side, max_image_size=side, fps=1, num_frames=64)
    image_seq_len = (TINY_FRAME_SIDE // 8) ** 2 // 4  # patches / scale_factor**2
    processor = SmolVLMProcessor(image_processor, tokenizer, video_processor, image_seq_len=image_seq_len,
                                 chat_template=SMOLVLM_CHAT_TEMPLATE)
    with torch.no_grad():
        model.save_pretrained(out)
    processor.save_pretrained(out)


def build_tiny_smolvlm2(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny SmolVLM2 (2 Llama text layers of width 64, 2-layer vision tower on 32x32 frames) -> folder."""
    return _build_once(out_dir, "smolvlm2", seed, lambda p: _smolvlm_save(p, seed))
