"""GME-Qwen2-VL on a tiny random checkpoint in GME's layout (Qwen2-VL weights without LM head, GME config
fields): the adapter against the model's own forward under GME's published protocol (GME prompt, image
placeholders filled by the vision tower, plain 1-D positions, final hidden state of the last token,
L2-normalised), computed one item at a time without padding; the image budget from the config; the prompt
limit; chunk-mean; the instruction option; family lookup."""

from __future__ import annotations

import numpy as np
import pytest
from test_embedder_transformers import LONG, MIXED

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.families import family_for
from lovr_hf.backends.embedders.gme import IMAGE_INPUT, GmeEmbedder, fetch_image, gme_prompt, smart_resize


@pytest.fixture(scope="module")
def gme_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from lovr_hf.tiny.gme import build_tiny_gme

    return build_tiny_gme(tmp_path_factory.getbasetemp() / "tiny_models" / "gme-qwen2-vl-tiny")


def reference(path: str, prompt: str, image=None, *, positions: str = "1d", max_length: int = 1800) -> np.ndarray:
    """The model's own forward (Qwen2VLModel) on ONE unpadded prompt, pooled as GME pools."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    from lovr_hf.tiny.gme import TINY_MAX_IMAGE_TOKENS, TINY_MIN_IMAGE_TOKENS

    model = Qwen2VLForConditionalGeneration.from_pretrained(path).eval()
    proc = AutoProcessor.from_pretrained(path, min_pixels=TINY_MIN_IMAGE_TOKENS * 784,
                                         max_pixels=TINY_MAX_IMAGE_TOKENS * 784)
    inputs = proc(text=[prompt], images=[image] if image is not None else None, truncation=True,
                  max_length=max_length, return_tensors="pt")
    kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "pixel_values",
                                                       "image_grid_thw", "mm_token_type_ids")}
    if positions == "1d":  # what GME's forward did: the decoder without position ids = 1-D positions
        kwargs["position_ids"] = torch.arange(inputs["input_ids"].shape[1]).view(1, 1, -1).expand(3, 1, -1)
    with torch.no_grad():
        hidden = model.model(**kwargs).last_hidden_state
    v = hidden[0, -1].float().numpy()
    return v / np.linalg.norm(v)


def test_gme_matches_own_forward(gme_dir: str, scene_frames: np.ndarray) -> None:
    emb = EMBEDDERS.create("gme", model_path=gme_dir, device="cpu", batch_size=3)
    assert isinstance(emb, GmeEmbedder)
    texts = MIXED[:2] + MIXED[3:]  # three captions of different lengths: right padding inside a batch
    t = emb.embed_text(texts)
    assert t.shape == (3, 64) and t.dtype == np.float32
    for i, text in enumerate(texts):
        np.testing.assert_allclose(t[i], reference(gme_dir, gme_prompt(text)), atol=2e-5)

    f = emb.embed_frames(scene_frames[[0, 3]])
    for i, frame in enumerate(scene_frames[[0, 3]]):
        image = fetch_image(frame)
        assert (image.height % 28, image.width % 28) == (0, 0)
        np.testing.assert_allclose(f[i], reference(gme_dir, gme_prompt(IMAGE_INPUT), image), atol=2e-5)
        # Qwen2-VL's own default (3-D M-RoPE over the image grid) is NOT what GME computed
        mrope = reference(gme_dir, gme_prompt(IMAGE_INPUT), image, positions="mrope")
        assert np.abs(mrope - f[i]).max() > 10 * 2e-5
    assert not np.allclose(f[0], f[1], atol=1e-3)

    # the image budget comes from GME's config fields (4..16 merged tokens here)
    _, proc = emb.load()
    assert proc.image_processor.size == {"shortest_edge": 4 * 784, "longest_edge": 16 * 784}
    assert smart_resize(720, 1280) == (728, 1288)


def test_gme_text_limits_and_options(gme_dir: str) -> None:
    emb = GmeEmbedder(gme_dir, device="cpu", max_length=48)
    # the whole prompt is truncated at max_length (GME's processor call): the tail of a long text is lost
    trunc = emb.embed_text([LONG, LONG + " And then it rains."])
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)
    np.testing.assert_allclose(trunc[0], reference(gme_dir, gme_prompt(LONG), max_length=48), atol=2e-5)
    # chunk-mean: chunks that fit the prompt, each embedded with the template, mean re-normalised
    assert emb.max_text_tokens < 48
    mean = emb.embed_text([LONG, LONG + " And then it rains."], text_mode="chunk-mean")
    assert not np.allclose(mean[0], mean[1], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)
    # a query instruction changes text prompts only
    inst = GmeEmbedder(gme_dir, device="cpu", instruction="Find a video that matches the given text.")
    plain = GmeEmbedder(gme_dir, device="cpu")
    assert not np.allclose(inst.embed_text(["a red car"]), plain.embed_text(["a red car"]), atol=1e-4)
    assert emb.embed_text([]).shape == (0, 64)


def test_gme_family() -> None:
    for hub_id in ("Alibaba-NLP/gme-Qwen2-VL-7B-Instruct", "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"):
        fam = family_for(hub_id)
        assert fam is not None and (fam.name, fam.backend) == ("gme", "gme")


def test_gme_explicit_text_limit(gme_dir: str) -> None:
    """An explicit max_text_tokens cuts captions under truncate (the first chunk-mean piece, in GME's prompt);
    one longer than a prompt can hold is refused (the prompt limit would cut every piece)."""
    ref = GmeEmbedder(gme_dir, device="cpu")
    short = GmeEmbedder(gme_dir, device="cpu", max_text_tokens=12)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gme_dir)
    piece = tok.decode(tok(LONG, add_special_tokens=False).input_ids[:12])  # the first 12 caption tokens
    np.testing.assert_allclose(short.embed_text([LONG])[0], reference(gme_dir, gme_prompt(piece)), atol=2e-5)
    assert not np.allclose(short.embed_text([LONG]), ref.embed_text([LONG]), atol=1e-3)
    with pytest.raises(ValueError, match="exceeds the text limit"):
        _ = GmeEmbedder(gme_dir, device="cpu", max_length=48, max_text_tokens=100).max_text_tokens
    with pytest.raises(ValueError, match="text_mode"):
        ref.embed_text(["a"], text_mode="average")
