"""The open_clip adapter on a real (tiny, random) open_clip model saved in the Hub layout: features equal
open_clip's own forward pass, text modes, pickling, auto-detection of the folder, and ``lovr eval`` end to
end. Skipped only when open_clip_torch is missing (the ``dev`` extra installs it)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")

from _embedder_helpers import eval_repo, run_eval  # noqa: E402
from test_embedder_transformers import LONG  # noqa: E402

from lovr_hf import schema  # noqa: E402
from lovr_hf.backends.base import EMBEDDERS  # noqa: E402
from lovr_hf.backends.embedders.openclip import OpenCLIPEmbedder, parse_spec  # noqa: E402
from lovr_hf.evaluation.models import EmbedConfig, make_embedder, model_slug, resolve_backend  # noqa: E402
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
    repo = eval_repo(tmp_path, eval_source)
    rows = run_eval(repo, tiny_oc, "--interval", "10", dim=16)
    hits = [r["value"] for r in rows if r["metric"] == "pass@k"]
    assert hits and all(0.0 <= v <= 1.0 for v in hits)
    emb_rows = repo.read(schema.embeddings_config(model_slug(tiny_oc)))
    assert {r["kind"] for r in emb_rows} >= {"clip", "video", "clip_caption"}


# ---- EVA02-CLIP and PE-Core: the same open_clip families, tiny and random ----------------------------------

@pytest.fixture(scope="module")
def tiny_eva_pe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from lovr_hf.tiny.openclip_timm import build_tiny_eva02_clip, build_tiny_pe_core

    root = tmp_path_factory.getbasetemp() / "tiny_models"
    # folder names as the families are recognised by name (local open_clip folders have no config.json)
    return {"eva02": build_tiny_eva02_clip(root / "EVA02-B-16-tiny"),
            "pe_core": build_tiny_pe_core(root / "PE-Core-B-16-tiny")}


@pytest.mark.parametrize("family,trunk_cls,context", [("eva02", "Eva", 77), ("pe_core", "Eva", 32)])
def test_eva02_pe_core_tiny_features_equal_open_clip_forward(tiny_eva_pe: dict[str, str], scene_frames: np.ndarray,
                                                             family: str, trunk_cls: str, context: int) -> None:
    import json

    from lovr_hf.backends.embedders.families import family_for
    from lovr_hf.backends.embedders.openclip import register_tiny_trunks
    from lovr_hf.tiny.openclip_timm import TINY_FAMILIES

    path = tiny_eva_pe[family]
    cfg = json.loads((Path(path) / "open_clip_config.json").read_text())
    real = open_clip.get_model_config(TINY_FAMILIES[family][0])
    # the same family: open_clip's own config, a timm trunk built by the real timm constructor, shrunk
    assert cfg["model_cfg"]["vision_cfg"]["timm_pool"] == real["vision_cfg"]["timm_pool"]
    assert cfg["model_cfg"]["text_cfg"]["context_length"] == real["text_cfg"]["context_length"] == context
    assert family_for(path).name == family and resolve_backend(path) == "open_clip"

    emb = make_embedder(EmbedConfig(model=path, device="cpu", batch_size=4))
    assert isinstance(emb, OpenCLIPEmbedder)
    texts = ["a red car", "two dogs play in the park", LONG]
    t, f = emb.embed_text(texts), emb.embed_frames(scene_frames)
    register_tiny_trunks()
    ref_t, ref_f = reference(path, texts, scene_frames)
    model = emb.load()
    assert type(model.visual.trunk).__name__ == trunk_cls
    assert t.shape == (3, 16) and f.shape == (6, 16) and t.dtype == f.dtype == np.float32
    np.testing.assert_allclose(t, ref_t, atol=1e-5)
    np.testing.assert_allclose(f, ref_f, atol=1e-5)
    assert not np.allclose(f[0], f[3], atol=1e-3)  # two different scenes
    assert emb.max_text_tokens == context
    if family == "pe_core":  # 32 tokens: a long caption is cut, chunk-mean sees all of it
        cut = emb.embed_text([LONG, LONG + " rain"], text_mode="truncate")
        np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)
        assert len(emb._split(LONG)) > 20

    # the original scripts ran under fp16 autocast: precision=amp (bf16 autocast on CPU) stays close
    amp = OpenCLIPEmbedder(path, device="cpu", precision="amp")
    assert (np.sum(amp.embed_text(texts) * t, axis=1) > 0.98).all()
    assert (np.sum(amp.embed_frames(scene_frames) * f, axis=1) > 0.98).all()
    with pytest.raises(ValueError, match="precision"):
        OpenCLIPEmbedder(path, precision="fp8")
    assert make_embedder(EmbedConfig(model=path, dtype="bfloat16")).precision == "bf16"  # --dtype reaches it
    # fp16 autocast can be named as a dtype (a family's original precision); an explicit precision wins
    assert OpenCLIPEmbedder(path, dtype="amp").precision == "amp"
    assert OpenCLIPEmbedder(path, dtype="amp", precision="fp32").precision == "fp32"
    assert make_embedder(EmbedConfig(model=path, dtype="amp", backend_options={"precision": "bf16"})).precision == "bf16"
    with pytest.raises(ValueError, match="dtype"):
        OpenCLIPEmbedder(path, dtype="int8")


def test_eva02_pe_core_names_resolve_to_open_clip() -> None:
    from lovr_hf.backends.embedders.families import family_for, get_family

    assert parse_spec("EVA02-CLIP-B-16") == ("EVA02-B-16", "merged2b_s8b_b131k")
    assert parse_spec("facebook/PE-Core-B16-224") == ("PE-Core-B-16", "meta")
    assert parse_spec("timm/PE-Core-B-16") == ("hf-hub:timm/PE-Core-B-16", None)  # a Hub id, not arch/tag
    assert parse_spec("EVA02-B-16/merged2b_s8b_b131k") == ("EVA02-B-16", "merged2b_s8b_b131k")
    for name in ("eva02", "pe_core"):
        fam = get_family(name)
        assert fam.backend == "open_clip" and fam.original_interval == 30 and fam.original_bgr
        for hub_id in fam.hub_ids:
            assert family_for(hub_id).name == name
    assert family_for("openai/clip-vit-base-patch32").name == "clip"


def test_open_clip_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    with pytest.raises(ImportError, match=r"lovr_hf\[openclip\]"):
        OpenCLIPEmbedder("EVA02-CLIP-B-16")


def test_open_clip_low_precision_text_limit_and_one_load(tiny_oc: str, scene_frames: np.ndarray) -> None:
    """--dtype bfloat16 (open_clip precision bf16: weights cast) embeds frames (the pixels used to stay fp32 and
    the first conv refused them); an explicit max_text_tokens cuts captions under truncate as well; an unknown
    text mode is refused; two embedders of one model share one loaded copy."""
    ref = OpenCLIPEmbedder(tiny_oc, device="cpu")
    low = make_embedder(EmbedConfig(model=tiny_oc, device="cpu", dtype="bfloat16"))
    import torch

    assert low.precision == "bf16" and low.load().visual.conv1.weight.dtype == torch.bfloat16  # weights cast
    f, f16 = ref.embed_frames(scene_frames), low.embed_frames(scene_frames)
    assert f16.dtype == np.float32 and (np.sum(f * f16, axis=1) > 0.98).all()

    short = OpenCLIPEmbedder(tiny_oc, device="cpu", max_text_tokens=12)
    assert short.max_text_tokens == 12
    cut = short.embed_text([LONG])
    np.testing.assert_allclose(cut[0], ref.embed_text([short._split(LONG)[0]])[0], atol=1e-5)
    assert not np.allclose(cut, ref.embed_text([LONG]), atol=1e-3)  # not the 77-token cut
    with pytest.raises(ValueError, match="exceeds the text limit"):
        _ = OpenCLIPEmbedder(tiny_oc, device="cpu", max_text_tokens=100).max_text_tokens
    with pytest.raises(ValueError, match="text_mode"):
        ref.embed_text(["a"], text_mode="average")
    assert OpenCLIPEmbedder(tiny_oc, device="cpu").load() is ref.load()
