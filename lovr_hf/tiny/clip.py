"""Tiny random CLIP and SigLIP (transformers) and open_clip CLIP, with genuine tokenizers trained on the corpus.

The dual encoders the retrieval tests run on (CLIP, SigLIP; open_clip's own ``CLIP`` in its Hub layout); the
CLIP tokenizer is reused by the X-CLIP, LanguageBind and remote-code stand-in builders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lovr_hf.tiny.common import (
    _CORPUS,
    TINY_IMAGE_SIZE,
    _build_once,
    _seed_everything,
    _train_bpe,
    tiny_tower,
)

# CLIPTokenizer's pre-tokenizer split (words, single digits, punctuation runs, the two special tokens)
_CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def configure_clip_tokenizer(tok: Any) -> None:
    """CLIP's normaliser (NFC, whitespace, lower case), pre-tokenizer (its split regex, byte level), decoder."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()


def _clip_tokenizer() -> Any:
    """A genuine ``CLIPTokenizer`` (CLIP normaliser/pre-tokenizer, ``</w>`` BPE) trained on the corpus."""
    from transformers import CLIPTokenizer

    vocab, merges = _train_bpe(
        vocab_size=600,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        configure=configure_clip_tokenizer,
        end_of_word_suffix="</w>",
    )
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def clip_text_tower(tokenizer: Any, **fields: Any) -> dict[str, Any]:
    """A tiny CLIP text tower config for ``tokenizer`` (77 positions, its special token ids)."""
    return tiny_tower(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **fields)


def _siglip_tokenizer() -> Any:
    """SigLIP-style tokenizer (lower-cased metaspace BPE, ``</s>`` appended, pad = ``</s>``, 64 tokens).

    The real SiglipTokenizer needs sentencepiece (not a dependency), so a trained ``tokenizers`` model is
    wrapped as ``PreTrainedTokenizerFast``, which AutoTokenizer/AutoProcessor reload as is.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>"], show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    eos_id = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="<unk>", model_max_length=64
    )


def _clip_save(out: Path, seed: int) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    vision_config = tiny_tower(image_size=TINY_IMAGE_SIZE, patch_size=8)
    config = CLIPConfig(text_config=clip_text_tower(tokenizer), vision_config=vision_config, projection_dim=16)
    _seed_everything(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    )
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def _siglip_save(out: Path, seed: int) -> None:
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = _siglip_tokenizer()
    text_config = tiny_tower(
        vocab_size=len(tokenizer), max_position_embeddings=64, projection_size=32,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    vision_config = tiny_tower(image_size=TINY_IMAGE_SIZE, patch_size=8)
    config = SiglipConfig(text_config=text_config, vision_config=vision_config)
    _seed_everything(seed)
    model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    model.save_pretrained(out)
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def build_tiny_clip(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny CLIPModel (2+2 layers, width 32, 32x32 images, 77-token text) + CLIPProcessor -> folder."""
    return _build_once(out_dir, "clip", seed, lambda p: _clip_save(p, seed))


def build_tiny_siglip(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny SiglipModel (2+2 layers, width 32, 32x32 images, 64-token text) + SiglipProcessor -> folder."""
    return _build_once(out_dir, "siglip", seed, lambda p: _siglip_save(p, seed))


# ------------------------------------------------------------------------------------------------- open_clip

def _open_clip_save(out: Path, seed: int) -> None:
    """A random open_clip ``CLIP`` in the Hub layout (config JSON + safetensors; the tokenizer is open_clip's
    bundled ``SimpleTokenizer``, so nothing is downloaded)."""
    import open_clip
    from safetensors.torch import save_file

    from lovr_hf.backends.embedders.families import OPEN_CLIP_CONFIG

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": TINY_IMAGE_SIZE, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    _seed_everything(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}}
    (out / OPEN_CLIP_CONFIG).write_text(json.dumps(cfg, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))


def build_tiny_open_clip(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny open_clip CLIP (2+2 layers, width 32, 32x32 images, 77-token text) -> folder (needs open_clip_torch)."""
    return _build_once(out_dir, "open_clip", seed, lambda p: _open_clip_save(p, seed))
