"""The locally built tiny models are real transformers checkpoints: they reload through the Auto classes,
carry the right special tokens/configs, generate, and are deterministic given the seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
)

from lovr_hf.tiny import (
    build_tiny_clip,
    build_tiny_qwen2vl,
    build_tiny_qwen25vl,
    build_tiny_siglip,
)
from lovr_hf.tiny.common import MARKER
from lovr_hf.tiny.qwen_vl import QWEN_SPECIAL_TOKENS

VLM_BUILDERS = {"qwen2_5_vl": build_tiny_qwen25vl, "qwen2_vl": build_tiny_qwen2vl}


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one folder for the whole session: the builders are idempotent, other test modules reuse the builds
    return tmp_path_factory.getbasetemp() / "tiny_models"


def _video_inputs(processor, n_frames: int, seed: int = 0):
    frames = np.random.default_rng(seed).integers(0, 256, (n_frames, 96, 128, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], videos=[frames], return_tensors="pt")


@pytest.mark.parametrize("arch", sorted(VLM_BUILDERS))
def test_tiny_vlm_reloads_through_auto_classes_and_generates(tiny_root: Path, arch: str) -> None:
    path = VLM_BUILDERS[arch](tiny_root / arch)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.model_type == arch
    assert (
        type(processor).__name__
        == {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen2_vl": "Qwen2VLProcessor"}[arch]
    )
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"

    tok = processor.tokenizer
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert 380 <= len(tok) <= 450  # ~400-token byte-level BPE plus the Qwen special tokens
    ids = tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)
    assert len(set(ids)) == len(QWEN_SPECIAL_TOKENS) and all(i < len(tok) for i in ids)
    # special tokens are atomic, ordinary text round-trips through the byte-level BPE
    assert tok("<|im_start|>user", add_special_tokens=False).input_ids[0] == tok.convert_tokens_to_ids(
        "<|im_start|>"
    )
    assert tok.decode(tok("Ünïcode café 42!").input_ids) == "Ünïcode café 42!"
    assert "<|vision_start|><|video_pad|><|vision_end|>" in processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}], tokenize=False
    )

    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.config.text_config.eos_token_id == eos
    assert model.config.text_config.pad_token_id == pad
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    gen = GenerationConfig.from_pretrained(path)
    assert eos in gen.eos_token_id and gen.pad_token_id == pad
    assert model.config.text_config.num_hidden_layers == 2 and model.config.text_config.hidden_size == 64
    assert model.config.vision_config.depth == 2

    inputs = _video_inputs(processor, 8)
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) > 0
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_builders_are_idempotent_and_deterministic(tiny_root: Path, tmp_path: Path) -> None:
    first = Path(build_tiny_qwen25vl(tiny_root / "qwen2_5_vl"))
    marker_mtime = (first / MARKER).stat().st_mtime_ns
    weights_mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert Path(build_tiny_qwen25vl(first)) == first  # complete folder: reused, not rewritten
    assert (first / MARKER).stat().st_mtime_ns == marker_mtime
    assert (first / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert json.loads((first / MARKER).read_text())["seed"] == 0
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp folders left

    again = Path(build_tiny_qwen25vl(tmp_path / "again", seed=0))
    other = Path(build_tiny_qwen25vl(tmp_path / "other", seed=1))
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()

    # same weights -> same greedy tokens
    outs = []
    for path in (first, again):
        model = AutoModelForImageTextToText.from_pretrained(path)
        inputs = _video_inputs(AutoProcessor.from_pretrained(path), 4, seed=3)
        with torch.inference_mode():
            outs.append(model.generate(**inputs, max_new_tokens=5, do_sample=False).tolist())
    assert outs[0] == outs[1]


def test_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / "clip"
    target.mkdir()
    (target / "config.json").write_text("{}")  # a crashed build left a folder without the marker
    path = Path(build_tiny_clip(target))
    assert (path / MARKER).exists()
    assert AutoModel.from_pretrained(path).config.model_type == "clip"

    mine = tmp_path / "not_a_model"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_clip(mine)  # a folder that is not a tiny-model build is never deleted
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp build cleaned up


@pytest.mark.parametrize(
    ("builder", "model_type", "max_len"), [(build_tiny_clip, "clip", 77), (build_tiny_siglip, "siglip", 64)]
)
def test_tiny_dual_encoders_load_and_embed(tiny_root: Path, builder, model_type: str, max_len: int) -> None:
    path = builder(tiny_root / model_type)
    model = AutoModel.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.model_type == model_type
    assert processor.tokenizer.model_max_length == max_len
    assert model.config.text_config.max_position_embeddings == max_len
    enc = processor.tokenizer(
        ["a red car", "two dogs play in the park"], padding="max_length", return_tensors="pt"
    )
    assert enc["input_ids"].shape == (2, max_len)
    assert processor.tokenizer.eos_token_id in enc["input_ids"][0].tolist()
    pixels = processor.image_processor(
        images=list(np.random.default_rng(0).integers(0, 256, (2, 50, 70, 3), dtype=np.uint8)),
        return_tensors="pt",
    )["pixel_values"]
    with torch.inference_mode():
        text = model.get_text_features(input_ids=enc["input_ids"])
        image = model.get_image_features(pixel_values=pixels)
    text = text if torch.is_tensor(text) else text.pooler_output
    image = image if torch.is_tensor(image) else image.pooler_output
    assert text.shape[0] == 2 and image.shape == (2, text.shape[1])
    assert not torch.allclose(image[0], image[1])


def test_tiny_clip_is_the_same_folder_on_every_build(tmp_path: Path) -> None:
    """Two builds of the tiny CLIP are byte-equal and get one content label, so the demo's results and
    model names are the same on every run (before: ``tokenizers`` numbered the ``</w>`` symbols in hash
    order, every build had another vocabulary and the demo's tiny CLIP another label and other scores)."""
    from lovr_hf.model_labels import folder_digest
    from lovr_hf.tiny import build_tiny_clip

    a, b = Path(build_tiny_clip(tmp_path / "a")), Path(build_tiny_clip(tmp_path / "b"))
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert folder_digest(a) == folder_digest(b)


def test_suffix_bpe_learns_what_the_tokenizers_trainer_learns() -> None:
    """Oracle: ``tokenizers``' own BpeTrainer on the tiny corpus. Given the trainer's numbering of the initial
    symbols, the project's merge loop reproduces its merges and vocabulary exactly (so only the numbering,
    now sorted, differs from the library); and the trained tokenizer splits each corpus word into the
    symbols the merge loop ended with."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from lovr_hf.tiny.clip import _clip_tokenizer, configure_clip_tokenizer
    from lovr_hf.tiny.common import _CORPUS, _learn_merges, _word_counts

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    configure_clip_tokenizer(tok)
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  end_of_word_suffix="</w>")
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    lib = json.loads(tok.to_str())["model"]
    lib_merges = [tuple(m) for m in lib["merges"]]
    by_id = sorted(lib["vocab"], key=lib["vocab"].get)
    words = _word_counts(tok)
    seqs = {(*w[:-1], w[-1] + "</w>"): n for w, n in words.items()}
    vocab, merges = _learn_merges(seqs, by_id[: len(by_id) - len(lib_merges)], 600)
    assert merges == lib_merges and vocab == lib["vocab"]

    ours = _clip_tokenizer()
    assert len(ours) == 600 and ours.convert_tokens_to_ids("<|endoftext|>") == 1
    for word in ("video", "walking", "celebration", "the", "people"):
        pieces = ours.tokenize(word)
        assert "".join(pieces) == word + "</w>" and len(pieces) <= 3, pieces
