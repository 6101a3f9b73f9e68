"""Real, tiny, randomly initialised models saved to a folder: tests and the offline demo never need the Hub.

Each builder creates a genuine transformers architecture (Qwen2.5-VL, Qwen2-VL, Qwen3-VL, CLIP, SigLIP)
from a small config, a tokenizer trained locally with ``tokenizers`` on a fixed built-in corpus, and the
real processors, and saves them with ``save_pretrained``. The folders reload through the Auto classes exactly like a Hub
checkpoint, so every code path that loads a model by id/folder is exercised for real. Weights depend only
on ``seed`` (same weights every build, hence the same greedy outputs).

Builders are idempotent: a complete folder (marked by ``lovr_tiny.json``, written last) is reused as is.
A build goes to a temporary sibling folder that is renamed into place, so concurrent builders (e.g. two
processes of one ``accelerate launch``) never see a half-written folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARKER = "lovr_tiny.json"
#: bump when the builders change what they save, so stale cached folders are rebuilt
BUILD_VERSION = 1

# Fixed training corpus for the tiny tokenizers: words a captioner and a retrieval model meet.
_CORPUS = [
    "The video shows a person walking along a busy street in the city at night.",
    "A man in a red jacket talks to a woman near a car; the camera pans slowly to the left.",
    "Scene: a kitchen with bright lights, someone is cooking pasta and chopping vegetables.",
    "The overall style is cinematic, with warm colors and a calm, emotional atmosphere.",
    "Children play football in a green park while dogs run across the grass.",
    "A drone flies over mountains and a blue lake; clouds move quickly in the sky.",
    "In the first scene, the character opens a door; in the second, she reads a letter.",
    "Noteworthy details include a clock on the wall, a black cat, and rain on the window.",
    "The narrative follows a journey from the beginning to the end of the day.",
    "Events: a meeting, a conversation, an argument, a celebration with music and dancing.",
    "Text on screen reads 2024, 10:30, 42 km, 3 people, 100%.",
    "Close-up of hands typing on a keyboard, then a wide shot of an office with many desks.",
    "The sun sets over the ocean, waves crash on the rocks and birds fly away.",
    "A white dog, a brown horse and a small yellow bird appear in the frame.",
    "Overall, the video presents a detailed and structured description of everyday life.",
    "You are a video analysis assistant. Describe events, scenes, actions, style and mood.",
]

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


def _seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _train_bpe(
    *,
    vocab_size: int,
    special_tokens: list[str],
    configure: Callable[[Any], None],
    end_of_word_suffix: str | None = None,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE on the built-in corpus; return (vocab, merges) for a transformers tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    model = models.BPE(end_of_word_suffix=end_of_word_suffix) if end_of_word_suffix else models.BPE()
    tok = Tokenizer(model)
    configure(tok)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        **({"end_of_word_suffix": end_of_word_suffix} if end_of_word_suffix else {}),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in data["model"]["merges"]]
    return vocab, merges  # type: ignore[return-value]


# files a (possibly interrupted) build writes: only folders made of these are ever replaced
_BUILD_FILES = {
    MARKER, "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja",
    "chat_template.json", "processor_config.json", "preprocessor_config.json",
    "video_preprocessor_config.json", "added_tokens.json", "open_clip_config.json",
    "open_clip_model.safetensors",
}  # fmt: skip


def _check_replaceable(out: Path) -> None:
    """Refuse to delete a folder that is not an (old or interrupted) tiny-model build."""
    foreign = [p.name for p in out.iterdir() if p.name not in _BUILD_FILES] if out.is_dir() else [out.name]
    if foreign:
        raise FileExistsError(
            f"{out} exists and is not a tiny-model folder (has {foreign[:3]}); not replacing it"
        )


def _build_once(out_dir: str | os.PathLike[str], kind: str, seed: int, build: Callable[[Path], None]) -> str:
    """Run ``build(tmp)`` unless ``out_dir`` already holds a complete build; publish atomically."""
    out = Path(out_dir)
    marker = out / MARKER
    want = {"kind": kind, "seed": seed, "version": BUILD_VERSION}
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == want:
                return str(out)
        except (OSError, ValueError):
            pass
        logger.info("rebuilding tiny model in %s (stale or different build)", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(want))
        if out.exists():
            if (out / MARKER).exists() and json.loads((out / MARKER).read_text()) == want:
                return str(out)  # another process won the race
            _check_replaceable(out)
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:  # lost a race to another builder: its (identical) folder stands
            if not (out / MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built tiny %s model in %s", kind, out)
    return str(out)


# ---------------------------------------------------------------------------------------------- Qwen VLMs


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


# ---------------------------------------------------------------------------------------------- CLIP / SigLIP

TINY_IMAGE_SIZE = 32
# CLIPTokenizer's pre-tokenizer split (words, single digits, punctuation runs, the two special tokens)
_CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def _clip_tokenizer() -> Any:
    """A genuine ``CLIPTokenizer`` (CLIP normaliser/pre-tokenizer, ``</w>`` BPE) trained on the corpus."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    from transformers import CLIPTokenizer

    def configure(tok: Any) -> None:
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(
                    Regex(_CLIP_SPLIT),
                    behavior="removed",
                    invert=True,
                ),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()

    vocab, merges = _train_bpe(
        vocab_size=600,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        configure=configure,
        end_of_word_suffix="</w>",
    )
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


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
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16)
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
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "projection_size": 32,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    vision_config = {
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
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

    from lovr_hf.models import OPEN_CLIP_CONFIG

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


# ------------------------------------------------------------------------- family builders (own modules)
from lovr_hf.tiny.blip import build_tiny_blip  # noqa: E402, F401
from lovr_hf.tiny.gme import build_tiny_gme  # noqa: E402, F401
from lovr_hf.tiny.llava_onevision import build_tiny_llava_onevision  # noqa: E402, F401
from lovr_hf.tiny.openclip_timm import build_tiny_eva02_clip, build_tiny_pe_core  # noqa: E402, F401
from lovr_hf.tiny.siglip2 import build_tiny_siglip2  # noqa: E402, F401
from lovr_hf.tiny.smolvlm import build_tiny_smolvlm2  # noqa: E402, F401
from lovr_hf.tiny.xclip import build_tiny_xclip  # noqa: E402, F401
