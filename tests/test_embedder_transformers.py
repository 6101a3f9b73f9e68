"""Retrieval embedders on real decoded frames and real forward passes (tiny CLIP and SigLIP), the text
length modes, the original eval frame-sampling rule (interval stride continuous across clips), and the
dummy embedder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from lovr_hf.backends.base import EMBEDDERS, GenerationParams
from lovr_hf.backends.embedders.transformers import TransformersEmbedder
from lovr_hf.backends.standins.testing import DummyCaptioner, DummyEmbedder
from lovr_hf.video.frames import (
    clip_start_offsets,
    interval_indices,
    next_start_offset,
    uniform_indices,
    video_interval_indices,
)

LONG = " ".join(
    f"In scene {i} a man in a red jacket walks along the busy street while the camera pans slowly."
    for i in range(40)
)
TEXT_LIMITS = {"clip": 77, "siglip": 64}  # the original truncation of each family


# ------------------------------------------------------------------------------------ frame sampling rule


def test_interval_indices_within_one_clip() -> None:
    assert interval_indices(100, 30) == [0, 30, 60, 90]
    assert interval_indices(100, 30, start_offset=12) == [12, 42, 72]
    assert interval_indices(10, 30, start_offset=25) == []
    assert next_start_offset(100, 30, 0) == 20  # last sample at 90, next 30 frames later = frame 120 = 20
    assert next_start_offset(10, 30, 25) == 15  # clip shorter than its offset: offset shrinks
    assert next_start_offset(90, 30, 0) == 0
    with pytest.raises(ValueError):
        interval_indices(10, 0)


@pytest.mark.parametrize("interval", [1, 7, 10, 30])
def test_full_video_stride_continues_across_clips(interval: int) -> None:
    rng = np.random.default_rng(interval)
    for _ in range(50):
        counts = rng.integers(1, 120, size=rng.integers(1, 9)).tolist()
        per_clip = video_interval_indices(counts, interval)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        flat = [int(s) + i for s, idx in zip(starts, per_clip, strict=True) for i in idx]
        # sampling each clip with its carried offset == sampling the concatenated video every `interval`
        assert flat == list(range(0, sum(counts), interval))
        assert all(0 <= i < n for idx, n in zip(per_clip, counts, strict=True) for i in idx)


def test_clip_offsets_known_counts() -> None:
    # clips of 45, 20, 50 frames, every 30: frames 0, 30 | 60 = clip 2 frame 15 | 90 = clip 3 frame 25
    assert clip_start_offsets([45, 20, 50], 30) == [0, 15, 25]
    assert video_interval_indices([45, 20, 50], 30) == [[0, 30], [15], [25]]
    assert uniform_indices(300, 4) == [0, 99, 199, 299]


# ------------------------------------------------------------------------------------ transformers embedder


@pytest.mark.parametrize("name", sorted(TEXT_LIMITS))
def test_embedder_shapes_normalisation_and_limits(tiny, scene_frames, name: str) -> None:
    emb = EMBEDDERS.create("transformers", model_path=tiny[name], batch_size=4)
    assert isinstance(emb, TransformersEmbedder)
    assert emb.max_text_tokens == TEXT_LIMITS[name]  # CLIP 77, SigLIP 64 (the original truncation)
    assert emb._padding() == ("max_length" if name == "siglip" else "longest")

    texts = ["a red car", "two dogs play in the park", LONG, ""]
    t = emb.embed_text(texts)
    f = emb.embed_frames(scene_frames)
    assert t.dtype == np.float32 and f.dtype == np.float32
    assert t.shape == (4, emb.dim) and f.shape == (6, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert emb.embed_text([]).shape == (0, emb.dim)
    assert emb.embed_frames(scene_frames[:0]).shape == (0, emb.dim)

    # different frames -> different image features; batching does not change them
    assert not np.allclose(f[0], f[3], atol=1e-3)
    np.testing.assert_allclose(emb.embed_frames(scene_frames[3:4]), f[3:4], atol=1e-5)
    np.testing.assert_allclose(emb.embed_text(texts[1:2]), t[1:2], atol=1e-5)


@pytest.mark.parametrize("name", sorted(TEXT_LIMITS))
def test_truncate_vs_chunk_mean(tiny, name: str) -> None:
    emb = TransformersEmbedder(tiny[name], device="cpu")
    limit = emb.max_text_tokens
    chunks = emb.text_chunk_ids(LONG)
    content = emb.tokenizer(LONG, add_special_tokens=False, verbose=False).input_ids
    prefix, suffix = emb._special_affixes()
    assert len(chunks) == -(-len(content) // (limit - len(prefix) - len(suffix))) > 5
    assert all(
        len(c) <= limit and c[: len(prefix)] == prefix and c[len(c) - len(suffix) :] == suffix for c in chunks
    )
    # the chunks' contents are exactly the token ids of the whole text, in order
    assert [t for c in chunks for t in c[len(prefix) : len(c) - len(suffix)]] == list(content)
    eos = emb.tokenizer.eos_token_id
    assert suffix == [eos]  # both CLIP and SigLIP end every input with eos (pooled at / after it)

    trunc = emb.embed_text([LONG, LONG + " And then it rains.", "a red car"], text_mode="truncate")
    mean = emb.embed_text([LONG, LONG + " And then it rains.", "a red car"], text_mode="chunk-mean")
    # truncation: the tail past the limit is ignored; chunk-mean sees it
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)
    assert not np.allclose(mean[0], mean[1], atol=1e-4)
    assert not np.allclose(trunc[0], mean[0], atol=1e-3)
    np.testing.assert_allclose(trunc[2], mean[2], atol=1e-5)  # fits in one chunk: the same either way
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)
    # chunk-mean is the re-normalised mean of the chunk embeddings
    per_chunk = emb._encode_ids(chunks)
    expected = per_chunk.mean(0) / np.linalg.norm(per_chunk.mean(0))
    np.testing.assert_allclose(mean[0], expected, atol=1e-5)
    with pytest.raises(ValueError):
        emb.embed_text(["x"], text_mode="average")
    # an explicit limit above the model's position table is refused (it used to fail inside the forward)
    with pytest.raises(ValueError, match="exceeds the text limit"):
        TransformersEmbedder(tiny[name], device="cpu", max_text_tokens=limit + 1).embed_text([LONG])
    assert TransformersEmbedder(tiny[name], device="cpu", max_text_tokens=limit - 1).max_text_tokens == limit - 1


def test_embedder_pickles_without_weights(tiny, scene_frames) -> None:
    emb = TransformersEmbedder(tiny["clip"], device="cpu")
    expected = emb.embed_frames(scene_frames[:2])
    blob = pickle.dumps(emb)
    assert len(blob) < 10_000
    np.testing.assert_allclose(pickle.loads(blob).embed_frames(scene_frames[:2]), expected, atol=1e-6)


# ------------------------------------------------------------------------------------ dummy embedder


def test_dummy_embedder_retrieves_dummy_captions(scene_frames) -> None:
    emb = EMBEDDERS.create("dummy")
    assert isinstance(emb, DummyEmbedder)
    frames = emb.embed_frames(scene_frames)
    np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb.embed_frames(scene_frames), frames)  # deterministic
    assert not np.allclose(frames[0], frames[3])

    # solid-colour clips, captioned by the dummy captioner: each caption is nearest to its own clip
    colours = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (235, 220, 50)]
    clips = [np.full((4, 16, 16, 3), c, np.uint8) for c in colours]
    captions = DummyCaptioner().caption(clips, {}, GenerationParams())
    clip_emb = np.stack([emb.embed_frames(c).mean(0) for c in clips])
    sims = emb.embed_text(captions) @ clip_emb.T
    assert (sims.argmax(1) == np.arange(len(clips))).all()


def test_dummy_embedder_text_modes() -> None:
    emb = DummyEmbedder(max_text_tokens=10)
    words = "red car " * 10 + "blue sky " * 10
    trunc, mean = (
        emb.embed_text([words], text_mode="truncate")[0],
        emb.embed_text([words], text_mode="chunk-mean")[0],
    )
    red, blue = 3, 8  # palette order: black white gray red orange yellow green cyan blue ...
    assert trunc[blue] == 0 and trunc[red] > 0  # only the first 10 words
    assert mean[blue] > 0 and mean[red] > 0
    np.testing.assert_allclose(np.linalg.norm([trunc, mean], axis=1), 1.0, atol=1e-6)
    assert emb.embed_text([]).shape == (0, emb.dim)


# ------------------------------------------------------------------------------------ vs the model's own forward
# The reference is the model's full forward (``model(**processor outputs)`` -> text_embeds / image_embeds) on
# what the family's processor makes of the same inputs with the family's text settings; the adapter must give
# the same vectors (cosine 1), so a dropped mask, a wrong padding or a missed lower-casing fails here.

MIXED = ["A Man in a Red Jacket walks along the busy Street", "two dogs play in the park", LONG, "Rain"]


def own_forward(path: str, texts: list[str], frames: np.ndarray, *, padding: str | bool, max_length: int,
                lowercase: bool = False, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path).eval()
    proc = AutoProcessor.from_pretrained(path)
    tok = tokenizer or proc.tokenizer
    t_in = tok([t.lower() for t in texts] if lowercase else texts, padding=padding, truncation=True,
               max_length=max_length, return_tensors="pt")
    i_in = proc.image_processor(images=list(frames), return_tensors="pt")
    with torch.no_grad():
        out = model(**t_in, **i_in)
    return out.text_embeds.numpy(), out.image_embeds.numpy()


def assert_same(a: np.ndarray, b: np.ndarray, atol: float = 1e-5) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(np.sum(a * b, axis=1), 1.0, atol=atol)  # both unit length: cosine 1 = equal


@pytest.fixture(scope="module")
def tiny_siglip2(tmp_path_factory: pytest.TempPathFactory) -> str:
    from lovr_hf.tiny.siglip2 import build_tiny_siglip2

    return build_tiny_siglip2(tmp_path_factory.getbasetemp() / "tiny_models" / "siglip2")


def test_clip_matches_own_forward(tiny, scene_frames) -> None:
    emb = TransformersEmbedder(tiny["clip"], device="cpu", batch_size=3)
    ref_t, ref_f = own_forward(tiny["clip"], MIXED, scene_frames, padding=True, max_length=77)
    assert_same(emb.embed_text(MIXED), ref_t)
    assert_same(emb.embed_frames(scene_frames), ref_f)


def test_metaclip_matches_own_forward(tmp_path_factory, scene_frames) -> None:
    """MetaCLIP (v1) checkpoints are CLIPModel; the original script: processor(padding=True, truncation=True,
    max_length=77) -> get_text_features."""
    from lovr_hf.backends.embedders.families import family_for
    from lovr_hf.tiny import build_tiny_clip

    path = build_tiny_clip(tmp_path_factory.getbasetemp() / "tiny_models" / "metaclip-tiny", seed=3)
    assert family_for("facebook/metaclip-h14-fullcc2.5b").name == "metaclip"
    for protocol in ("lovr", "original"):
        emb = TransformersEmbedder(path, device="cpu", protocol=protocol)
        ref_t, ref_f = own_forward(path, MIXED, scene_frames, padding=True, max_length=77)
        assert_same(emb.embed_text(MIXED), ref_t)
        assert_same(emb.embed_frames(scene_frames), ref_f)


def test_siglip_matches_own_forward_with_its_attention_mask(tiny, scene_frames) -> None:
    path = tiny["siglip"]
    emb = TransformersEmbedder(path, device="cpu", batch_size=3)
    ref_t, ref_f = own_forward(path, MIXED, scene_frames, padding="max_length", max_length=64)
    assert_same(emb.embed_text(MIXED), ref_t)
    assert_same(emb.embed_frames(scene_frames), ref_f)
    # the former adapter left the mask out: a different (big_vision-style) embedding, now an explicit option
    unmasked = TransformersEmbedder(path, device="cpu", text_attention_mask=False).embed_text(MIXED)
    assert np.min(np.sum(unmasked * ref_t, axis=1)) < 0.99
    # --protocol original: the original script's padding=True (longest), with the processor's mask
    orig = TransformersEmbedder(path, device="cpu", protocol="original")
    assert orig._padding() == "longest"
    short = [MIXED[0], MIXED[1], MIXED[3]]  # no 64-token text: "longest" pads less than max_length
    ref_o, _ = own_forward(path, short, scene_frames[:1], padding=True, max_length=64)
    assert_same(orig.embed_text(short), ref_o)
    ref_m, _ = own_forward(path, short, scene_frames[:1], padding="max_length", max_length=64)
    assert np.min(np.sum(ref_o * ref_m, axis=1)) < 0.999  # the padding matters for a last-position pooler


def test_siglip2_max_length_lowercase_and_original_case(tiny_siglip2, scene_frames) -> None:
    from transformers import AutoTokenizer

    from lovr_hf.backends.embedders.families import family_for
    from lovr_hf.backends.embedders.transformers import without_lowercase

    assert family_for("google/siglip2-base-patch16-224").name == "siglip2"
    emb = TransformersEmbedder(tiny_siglip2, device="cpu", batch_size=3)
    assert (emb._padding(), emb._lowercase(), emb.max_text_tokens) == ("max_length", True, 64)
    ref_t, ref_f = own_forward(tiny_siglip2, MIXED, scene_frames, padding="max_length", max_length=64,
                               lowercase=True)
    assert_same(emb.embed_text(MIXED), ref_t)
    assert_same(emb.embed_frames(scene_frames), ref_f)  # NaFlex: pixel_attention_mask + spatial_shapes go in

    # --protocol original: max_length 64 as the original script, the case kept (its GemmaTokenizerFast did
    # not lower-case; transformers 5's Siglip2Tokenizer does, so the adapter takes that normaliser out)
    tok = AutoTokenizer.from_pretrained(tiny_siglip2)
    cased = without_lowercase(tok)
    assert tok("A Man").input_ids == tok("a man").input_ids and cased("A Man").input_ids != tok("a man").input_ids
    orig = TransformersEmbedder(tiny_siglip2, device="cpu", protocol="original")
    assert (orig._padding(), orig._lowercase()) == ("max_length", False)
    ref_o, _ = own_forward(tiny_siglip2, MIXED, scene_frames[:1], padding="max_length", max_length=64,
                           tokenizer=cased)
    out_o = orig.embed_text(MIXED)
    assert_same(out_o, ref_o)
    assert np.sum(out_o[0] * ref_t[0]) < 0.999  # mixed-case caption: the two protocols differ
    np.testing.assert_allclose(out_o[1], ref_t[1], atol=1e-5)  # an all-lower-case caption does not

    # chunk-mean sees the whole (lower-cased) text, in 64-token chunks
    mean = emb.embed_text([LONG, LONG + " And then it rains."], text_mode="chunk-mean")
    assert not np.allclose(mean[0], mean[1], atol=1e-4)
    assert all(len(c) <= 64 for c in emb.text_chunk_ids(LONG))


def test_fixed_resolution_siglip2_pads_to_max_length_under_original(tiny, scene_frames) -> None:
    """The paper's google/siglip2-base-patch16-224 is model type ``siglip`` (a Gemma tokenizer tells it from
    SigLIP); its script padded to ``max_length`` (SigLIP's: to the longest), so under ``original`` the family,
    not the model type, picks the padding. A SigLIP model under the siglip2 row stands in for it here."""
    short = [MIXED[0], MIXED[1], MIXED[3]]  # no 64-token text: "longest" pads less than max_length
    orig = TransformersEmbedder(tiny["siglip"], device="cpu", protocol="original", family="siglip2")
    assert (orig._padding(), orig._lowercase()) == ("max_length", False)
    ref, _ = own_forward(tiny["siglip"], short, scene_frames[:1], padding="max_length", max_length=64)
    assert_same(orig.embed_text(short), ref)
    # the same folder as SigLIP keeps its own script's padding; lovr's protocol keeps the model type's rule
    assert TransformersEmbedder(tiny["siglip"], device="cpu", protocol="original", family="siglip")._padding() \
        == "longest"
    lovr = TransformersEmbedder(tiny["siglip"], device="cpu", family="siglip2")
    assert (lovr._padding(), lovr._lowercase()) == ("max_length", False)


def test_siglip_tokenizer_without_sentencepiece_names_the_extra(tiny, monkeypatch) -> None:
    """google/siglip-* ship a SentencePiece SiglipTokenizer: without sentencepiece the load fails with one
    clear error naming the extra (the message transformers raises, wrapped)."""
    import transformers

    def no_spm(*args, **kwargs):
        raise ImportError("SiglipTokenizer requires the SentencePiece library but it was not found")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", no_spm)
    emb = TransformersEmbedder(tiny["siglip"], device="cpu", revision="spm-test")  # own cache entry
    with pytest.raises(ImportError, match=r"lovr_hf\[siglip\]"):
        emb.embed_text(["a"])
