"""The open_clip adapter on a real (tiny, random) open_clip model saved in the Hub layout: features equal
open_clip's own forward pass, text modes, pickling, auto-detection of the folder, and ``lovr eval`` end to
end. Skipped only when open_clip_torch is missing (the ``dev`` extra installs it)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")

from test_embed import make_repo  # noqa: E402
from test_embedder_transformers import LONG  # noqa: E402

from lovr_hf import schema  # noqa: E402
from lovr_hf.backends.base import EMBEDDERS  # noqa: E402
from lovr_hf.backends.embedder_openclip import OpenCLIPEmbedder, parse_spec  # noqa: E402
from lovr_hf.cli import main as cli_main  # noqa: E402
from lovr_hf.embed import EmbedConfig, make_embedder, model_slug, resolve_backend  # noqa: E402
from lovr_hf.tiny import build_tiny_open_clip  # noqa: E402


@pytest.fixture(scope="module")
def tiny_oc(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_open_clip(tmp_path_factory.getbasetemp() / "tiny_models" / "open_clip")


def reference(path: str, texts: list[str], frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own pipeline, written out independently of the adapter."""
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    tok = open_clip.get_tokenizer(f"local-dir:{path}")
    with torch.no_grad():
        t = model.encode_text(tok(texts)).numpy()
        f = model.encode_image(torch.stack([preprocess(Image.fromarray(x)) for x in frames])).numpy()
    return t / np.linalg.norm(t, axis=1, keepdims=True), f / np.linalg.norm(f, axis=1, keepdims=True)


def test_local_folder_is_recognised(tiny_oc: str, tmp_path: Path) -> None:
    assert resolve_backend(tiny_oc) == "open_clip"
    assert resolve_backend(f"local-dir:{tiny_oc}") == "open_clip"
    assert parse_spec(tiny_oc) == (f"local-dir:{Path(tiny_oc).resolve()}", None)
    assert parse_spec("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                                                                          None)
    assert resolve_backend(str(tmp_path)) == "transformers"  # a folder without open_clip's config
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        parse_spec(f"local-dir:{tmp_path}")
    emb = make_embedder(EmbedConfig(model=tiny_oc, device="cpu"))
    assert isinstance(emb, OpenCLIPEmbedder) and emb.model_id().startswith("open_clip:local-dir:")


def test_features_equal_open_clip_forward(tiny_oc: str, scene_frames: np.ndarray) -> None:
    emb = EMBEDDERS.create("open_clip", model_path=tiny_oc, device="cpu", batch_size=4)
    texts = ["a red car", "two dogs play in the park", LONG, ""]
    t, f = emb.embed_text(texts), emb.embed_frames(scene_frames)
    ref_t, ref_f = reference(tiny_oc, texts, scene_frames)
    assert t.dtype == np.float32 and t.shape == (4, 16) and f.shape == (6, 16)
    np.testing.assert_allclose(t, ref_t, atol=1e-5)
    np.testing.assert_allclose(f, ref_f, atol=1e-5)  # batches of 4 + 2 == one batch of 6
    assert not np.allclose(f[0], f[3], atol=1e-3)  # two different scenes
    assert emb.max_text_tokens == 77
    assert emb.embed_text([]).shape == (0, 16)
    assert emb.embed_frames(scene_frames[:0]).shape == (0, 16)


def test_text_modes_and_pickling(tiny_oc: str, scene_frames: np.ndarray) -> None:
    emb = OpenCLIPEmbedder(tiny_oc, device="cpu")
    texts = [LONG, LONG + " And then it rains.", "a red car"]
    trunc = emb.embed_text(texts, text_mode="truncate")
    mean = emb.embed_text(texts, text_mode="chunk-mean")
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)  # the tail past 77 tokens is cut off
    assert not np.allclose(mean[0], mean[1], atol=1e-4)  # chunk-mean sees it
    np.testing.assert_allclose(trunc[2], mean[2], atol=1e-5)  # a short text is one chunk either way
    pieces = emb._split(LONG)
    assert len(pieces) > 5
    expected = emb.embed_text(pieces).mean(0)
    np.testing.assert_allclose(mean[0], expected / np.linalg.norm(expected), atol=1e-5)

    blob = pickle.dumps(emb)
    assert len(blob) < 10_000  # the weights are never pickled into workers
    np.testing.assert_allclose(pickle.loads(blob).embed_frames(scene_frames[:2]), emb.embed_frames(scene_frames[:2]),
                               atol=1e-6)


def test_lovr_eval_with_local_open_clip_folder(tiny_oc: str, eval_source: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", tiny_oc, "--device", "cpu",
                     "--topk", "1,5", "--interval", "10"]) == 0
    rows = [r for r in repo.read(schema.RESULTS) if r["model"] == tiny_oc]
    assert {r["direction"] for r in rows} >= {"text_to_clip", "clip_to_text", "text_to_video", "video_to_text"}
    hits = [r["value"] for r in rows if r["metric"] == "pass@k"]
    assert hits and all(0.0 <= v <= 1.0 for v in hits)
    emb_rows = repo.read(schema.embeddings_config(model_slug(tiny_oc)))
    assert {r["kind"] for r in emb_rows} >= {"clip", "video", "clip_caption"}
    assert all(r["status"] == schema.OK and len(r["embedding"]) == 16 for r in emb_rows)
