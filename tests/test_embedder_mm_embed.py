"""MM-Embed through a local remote-code stand-in (tests/remote_code/modeling_mm_embed_standin.py implements
the documented ``encode`` API on a tiny random network): refused without ``--trust-remote-code``; texts
and frames equal the model's own ``encode`` output, normalised, with the original's instruction, query flag
and max_length; the ORACLE frame choice of the original script as a pure function; family lookup."""

from __future__ import annotations

import numpy as np
import pytest
from _embedder_helpers import save_standin, standin_calls
from test_embedder_transformers import LONG, MIXED

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.families import family_for
from lovr_hf.backends.embedders.mm_embed import (
    INSTRUCTION,
    MMEmbedEmbedder,
    oracle_frame,
    oracle_pool,
)
from lovr_hf.evaluation.models import EmbedConfig, check_embedder


@pytest.fixture(scope="module")
def mm_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("models") / "MM-Embed-standin"
    return save_standin("modeling_mm_embed_standin.py", "MMEmbedStandInConfig", "MMEmbedStandInModel", out)


def remote_model(path: str):
    from transformers import AutoModel

    return AutoModel.from_pretrained(path, trust_remote_code=True).eval()


def calls() -> list[dict]:
    return standin_calls("modeling_mm_embed_standin", "MMEmbedStandInModel")


def unit(x) -> np.ndarray:
    x = x["hidden_states"].numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mm_embed_refused_without_trust_remote_code(mm_dir: str) -> None:
    assert MMEmbedEmbedder.requires_remote_code and MMEmbedEmbedder.original_oracle_frame
    with pytest.raises(ValueError, match="--trust-remote-code"):
        EMBEDDERS.create("mm_embed", model_path=mm_dir)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        check_embedder(EmbedConfig(model=mm_dir, backend="mm_embed"))


def test_mm_embed_matches_own_encode(mm_dir: str, scene_frames: np.ndarray) -> None:
    from PIL import Image

    emb = EMBEDDERS.create("mm_embed", model_path=mm_dir, trust_remote_code=True, device="cpu", batch_size=2)
    t, f = emb.embed_text(MIXED), emb.embed_frames(scene_frames)
    assert t.dtype == f.dtype == np.float32 and t.shape == (len(MIXED), 24) and f.shape == (6, 24)
    model = remote_model(mm_dir)
    ref_t = unit(model.encode([{"txt": x} for x in MIXED], is_query=True, instruction=INSTRUCTION,
                              max_length=4096))
    ref_f = unit(model.encode([{"img": Image.fromarray(x)} for x in scene_frames], is_query=False,
                              max_length=4096))
    np.testing.assert_allclose(t, ref_t, atol=1e-5)
    np.testing.assert_allclose(f, ref_f, atol=1e-5)
    adapter_calls = [c for c in calls() if c["n"] <= 2]  # the adapter's batches of 2
    assert {(c["is_query"], c["instruction"], c["max_length"], tuple(c["keys"])) for c in adapter_calls} == {
        (True, INSTRUCTION, 4096, ("txt",)), (False, None, 4096, ("img",))}

    # chunk-mean with a small limit sees the whole text; truncate cuts it at max_length
    short = MMEmbedEmbedder(mm_dir, trust_remote_code=True, device="cpu", max_length=72)  # 40-token prefix
    tail = LONG + " The sun sets over the ocean, waves crash on the rocks and birds fly away." * 20
    trunc = short.embed_text([LONG, tail])
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)
    mean = short.embed_text([LONG, tail], text_mode="chunk-mean")
    assert not np.allclose(mean[0], mean[1], atol=1e-3) and short.max_text_tokens == 72 - 40 - 2
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)
    assert emb.embed_text([]).shape == (0, 24) and emb.embed_frames(scene_frames[:0]).shape == (0, 24)


def test_mm_embed_oracle_frame_choice() -> None:
    frames = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, -3.0]])
    idx, chosen = oracle_frame(frames, np.array([0.0, 10.0, 1.0]))
    assert idx == 1 and chosen.dtype == np.float32
    np.testing.assert_allclose(chosen, [0.0, 1.0, 0.0])  # the chosen frame, L2-normalised
    # cosine, not dot product: scale of a frame does not matter; ties -> the first frame
    assert oracle_frame(frames * [[100.0], [1.0], [1.0], [1.0]], np.array([1.0, 0.0, 0.0]))[0] == 0
    assert oracle_frame(np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([1.0, 1.0]))[0] == 0
    with pytest.raises(ValueError):
        oracle_frame(frames[:0], np.ones(3))
    with pytest.raises(ValueError):
        oracle_frame(frames, np.ones(4))
    # oracle_pool: the oracle when there is a gold caption, the mean of normalised frames otherwise
    emb, i = oracle_pool(frames, np.array([0.0, 0.0, -1.0]))
    assert i == 3
    np.testing.assert_allclose(emb, [0.0, 0.0, -1.0])
    mean, none = oracle_pool(frames[:2], None)
    assert none is None
    np.testing.assert_allclose(mean, np.array([1.0, 1.0, 0.0]) / np.sqrt(2), atol=1e-6)


def test_mm_embed_oracle_on_real_embeddings(mm_dir: str, scene_frames: np.ndarray) -> None:
    """The oracle on the adapter's own frame embeddings picks the frame nearest to the caption embedding."""
    emb = MMEmbedEmbedder(mm_dir, trust_remote_code=True, device="cpu")
    f = emb.embed_frames(scene_frames)
    caption = emb.embed_text(["a red car"])[0]
    idx, chosen = oracle_frame(f, caption)
    assert idx == int(np.argmax(f @ caption))
    np.testing.assert_allclose(chosen, f[idx], atol=1e-6)
    assert np.dot(chosen, caption) >= np.dot(oracle_pool(f, None)[0], caption) - 1e-6  # beats the mean


def test_mm_embed_family() -> None:
    fam = family_for("nvidia/MM-Embed")
    assert fam is not None and (fam.name, fam.backend) == ("mm_embed", "mm_embed")


def test_mm_embed_explicit_text_limit_and_one_load(mm_dir: str) -> None:
    """An explicit max_text_tokens cuts captions under truncate too (the first chunk-mean piece); one above
    what max_length leaves is refused; one loaded copy per process for one model."""
    ref = MMEmbedEmbedder(mm_dir, trust_remote_code=True, device="cpu")
    short = MMEmbedEmbedder(mm_dir, trust_remote_code=True, device="cpu", max_text_tokens=10)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mm_dir)
    piece = tok.decode(tok(LONG, add_special_tokens=False).input_ids[:10])  # the first 10 caption tokens
    np.testing.assert_allclose(short.embed_text([LONG]), ref.embed_text([piece]), atol=1e-6)
    assert not np.allclose(short.embed_text([LONG]), ref.embed_text([LONG]), atol=1e-3)
    with pytest.raises(ValueError, match="exceeds the text limit"):
        _ = MMEmbedEmbedder(mm_dir, trust_remote_code=True, max_length=72, max_text_tokens=64).max_text_tokens
    assert short.load() is ref.load()
