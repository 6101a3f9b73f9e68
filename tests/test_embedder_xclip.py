"""X-CLIP, a native video tower, on a tiny random ``XCLIPModel`` (4 frames per clip): ``embed_video`` against
the model's own forward on the same frames, the family's frame count taken from the model config (frames
re-sampled uniformly to it), text features vs ``get_text_features`` and how far the forward's
video-conditioned text prompts move them, and family lookup."""

from __future__ import annotations

import numpy as np
import pytest
from test_embedder_transformers import MIXED

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.families import NATIVE_VIDEO, family_for
from lovr_hf.backends.embedders.xclip import XClipEmbedder, resample_uniform
from lovr_hf.tiny.xclip import TINY_XCLIP_FRAMES


@pytest.fixture(scope="module")
def xclip_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from lovr_hf.tiny.xclip import build_tiny_xclip

    return build_tiny_xclip(tmp_path_factory.getbasetemp() / "tiny_models" / "xclip-tiny")


@pytest.fixture(scope="module")
def clip_frames(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """16 decoded frames of two scenes (8 each)."""
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec
    from lovr_hf.video.reader import read_frames

    path = tmp_path_factory.mktemp("xclip_video") / "two.mp4"
    make_video(path, [SceneSpec(8), SceneSpec(8)], width=64, height=48, fps=8, seed=7)
    return read_frames(path, list(range(16)))


def test_xclip_video_tower_matches_own_forward(xclip_dir: str, clip_frames: np.ndarray) -> None:
    import torch
    from transformers import AutoProcessor, XCLIPModel

    emb = EMBEDDERS.create("xclip", model_path=xclip_dir, device="cpu", batch_size=8)
    assert isinstance(emb, XClipEmbedder) and emb.video_frames == TINY_XCLIP_FRAMES  # from the config
    a, b = clip_frames[:4], clip_frames[8:12]  # exactly the model's 4 frames each
    va, vb = emb.embed_video(a), emb.embed_video(b)
    assert va.shape == (emb.dim,) and va.dtype == np.float32
    t = emb.embed_text(MIXED)

    model = XCLIPModel.from_pretrained(xclip_dir).eval()
    proc = AutoProcessor.from_pretrained(xclip_dir)
    inputs = proc(text=MIXED, videos=[list(a), list(b)], padding=True, truncation=True, max_length=77,
                  return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        plain = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    np.testing.assert_allclose(np.stack([va, vb]), out.video_embeds.numpy(), atol=1e-5)
    plain = torch.nn.functional.normalize(plain.pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(t, plain, atol=1e-5)
    # the forward's text embeddings carry a prompt computed from each video: a dual-encoder index cannot,
    # so the adapter's texts are the unconditioned ones (the difference is real, not zero)
    conditioned = out.text_embeds.numpy()  # [videos, texts, d]
    assert conditioned.shape == (2, len(MIXED), emb.dim)
    assert not np.allclose(conditioned[0], t, atol=1e-4)
    assert not np.allclose(va, vb, atol=1e-3)


def test_xclip_frame_rule_and_stills(xclip_dir: str, clip_frames: np.ndarray) -> None:
    emb = XClipEmbedder(xclip_dir, device="cpu")
    # any number of frames is re-sampled uniformly to the model's count (first and last kept)
    idx = np.arange(16)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    assert resample_uniform(idx, 4)[:, 0, 0, 0].tolist() == [0, 5, 10, 15]
    assert resample_uniform(idx[:2], 4)[:, 0, 0, 0].tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(emb.embed_video(clip_frames), emb.embed_video(clip_frames[[0, 5, 10, 15]]),
                               atol=1e-6)
    # per-frame features: each frame as a still clip
    f = emb.embed_frames(clip_frames[[0, 9]])
    np.testing.assert_allclose(f[1], emb.embed_video(np.repeat(clip_frames[9:10], 4, axis=0)), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    assert emb.embed_frames(clip_frames[:0]).shape == (0, emb.dim)
    with pytest.raises(ValueError):
        emb.embed_video(clip_frames[:0])


def test_xclip_family() -> None:
    fam = family_for("microsoft/xclip-base-patch32")
    assert fam is not None and (fam.name, fam.backend, fam.video_input) == ("xclip", "xclip", NATIVE_VIDEO)
    assert fam.video_frames == 8


def test_lovr_eval_with_xclip(xclip_dir: str, eval_source, tmp_path) -> None:
    """The visual stage calls the video tower for every clip and full video (``embed_video``)."""
    from _embedder_helpers import eval_repo, run_eval

    run_eval(eval_repo(tmp_path, eval_source), xclip_dir, "--backend", "xclip", "--interval", "10", dim=16)


def test_xclip_unreadable_config_is_an_error(xclip_dir: str, tmp_path) -> None:
    """The frame count comes from the config; a config that cannot be read fails loudly (it used to fall
    back to 8 frames with a warning, for a temporal embedding that may have another size)."""
    import shutil

    broken = tmp_path / "xclip-broken"
    shutil.copytree(xclip_dir, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable X-CLIP config"):
        XClipEmbedder(str(broken), device="cpu")
    with pytest.raises(ValueError, match="text_mode"):
        XClipEmbedder(xclip_dir, device="cpu").embed_text(["a"], text_mode="average")
