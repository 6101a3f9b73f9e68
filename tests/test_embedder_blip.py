"""BLIP (image-text retrieval ITC features) on a tiny random ``BlipForImageTextRetrieval``: the adapter's
text and frame embeddings against the model's own forward (``use_itm_head=False``: the cosine matrix of its
normalised ITC features), family lookup by Hub id, refusal of a non-retrieval BLIP checkpoint, and
``lovr eval`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _embedder_helpers import eval_repo, run_eval
from test_embedder_transformers import LONG, MIXED

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.blip import BlipEmbedder
from lovr_hf.backends.embedders.families import family_for


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from lovr_hf.tiny.blip import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.getbasetemp() / "tiny_models" / "blip-itm-tiny")


def test_blip_matches_own_retrieval_forward(blip_dir: str, scene_frames: np.ndarray) -> None:
    import torch
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    emb = EMBEDDERS.create("blip", model_path=blip_dir, device="cpu", batch_size=4)
    assert isinstance(emb, BlipEmbedder) and emb.max_text_tokens == 512
    t, f = emb.embed_text(MIXED), emb.embed_frames(scene_frames)
    assert t.dtype == f.dtype == np.float32 and t.shape[1] == f.shape[1] == 16
    np.testing.assert_allclose(np.linalg.norm(np.vstack([t, f]), axis=1), 1.0, atol=1e-5)

    model = BlipForImageTextRetrieval.from_pretrained(blip_dir).eval()
    proc = AutoProcessor.from_pretrained(blip_dir)
    inputs = proc(text=MIXED, images=list(scene_frames), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, use_itm_head=False)
    # the model's own retrieval score = cosine of its ITC features: image x text
    np.testing.assert_allclose(f @ t.T, out.itm_score.numpy(), atol=1e-5)
    assert not np.allclose(f[0], f[3], atol=1e-3)  # two different scenes

    mean = emb.embed_text([LONG, LONG + " And then it rains."], text_mode="chunk-mean")
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)


def test_blip_family_and_wrong_checkpoint(blip_dir: str, tmp_path: Path) -> None:
    fam = family_for("Salesforce/blip-itm-base-coco")
    assert fam is not None and (fam.name, fam.backend) == ("blip", "blip")
    assert family_for(blip_dir).backend == "blip"  # local folder: config model_type "blip"
    # a captioning BLIP checkpoint has no trained ITC projections: refused, not silently random
    import shutil

    cap = tmp_path / "blip-captioning"
    shutil.copytree(blip_dir, cap)
    cfg = json.loads((cap / "config.json").read_text())
    cfg["architectures"] = ["BlipForConditionalGeneration"]
    (cap / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TypeError, match="BlipForImageTextRetrieval"):
        BlipEmbedder(str(cap), device="cpu").embed_text(["a"])


def test_lovr_eval_with_blip(blip_dir: str, eval_source: Path, tmp_path: Path) -> None:
    run_eval(eval_repo(tmp_path, eval_source), blip_dir, "--backend", "blip", "--interval", "10", dim=16)
