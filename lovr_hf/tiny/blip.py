"""Tiny random BLIP image-text retrieval model (``BlipForImageTextRetrieval`` + ``BlipProcessor``).

The text side is a genuine ``BertTokenizer`` on a WordPiece vocabulary trained locally on the tiny corpus
(BLIP's text encoder is BERT; its Hub checkpoints ship bert-base-uncased's vocabulary), the image side the
real ``BlipImageProcessor``; the ITC projections (``vision_proj`` / ``text_proj``) the adapter uses are the
model's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lovr_hf.tiny.common import _CORPUS, TINY_IMAGE_SIZE, _build_once, _seed_everything, tiny_tower

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_tokenizer(model_max_length: int = 512) -> Any:
    """A genuine (tokenizers-backed) ``BertTokenizer`` with a ~400-piece WordPiece vocabulary of the corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=BERT_SPECIALS, show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    vocab = dict(sorted(tok.get_vocab().items(), key=lambda kv: kv[1]))
    return BertTokenizer(vocab=vocab, model_max_length=model_max_length)


def _blip_save(out: Path, seed: int) -> None:
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    tokenizer = bert_tokenizer()
    text_config = tiny_tower(
        vocab_size=len(tokenizer), encoder_hidden_size=32, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    vision_config = tiny_tower(
        image_size=TINY_IMAGE_SIZE, patch_size=8,
        initializer_range=0.02,  # BlipVisionConfig's default (1e-10) makes every image look alike
    )
    config = BlipConfig(text_config=text_config, vision_config=vision_config, image_text_hidden_size=16)
    _seed_everything(seed)
    model = BlipForImageTextRetrieval(config).eval()
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    model.save_pretrained(out)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def build_tiny_blip(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny BlipForImageTextRetrieval (2+2 layers, width 32, 32x32 images, ITC width 16) -> folder."""
    return _build_once(out_dir, "blip", seed, lambda p: _blip_save(p, seed))
