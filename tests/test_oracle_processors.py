"""``--protocol original``: the image processor of each transformers family against the one its original
script got, recorded with the transformers release of the original run.

The SigLIP and MetaCLIP scripts call ``AutoProcessor.from_pretrained(path)`` without ``use_fast``: before
transformers 4.52 that is the slow, PIL-based processor; the SigLIP2 script asks for ``use_fast=True``.
transformers 5 loads the torchvision processors by default, up to 0.015 away on these frames. The reference
(tests/data/oracle/processors_tf4.npz) is what transformers 4.51.3 made of fixed frames with each family's
published preprocessor config at 32 px; tests/data/oracle/make_processor_reference.py regenerates it. The
three scripts then cast the pixel values to bfloat16 (SigLIP2's fp32 model casts them back).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lovr_hf.backends.embedders.transformers import TransformersEmbedder

DATA = Path(__file__).parent / "data" / "oracle"
#: family -> the tiny model its folder is made from (siglip2's fixed-resolution checkpoints are SigLIP models)
BASE = {"siglip": "siglip", "siglip2": "siglip", "metaclip": "clip"}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "processors_tf4.npz") as z:
        return {k: z[k] for k in z.files}


def _folder(tiny: dict[str, str], family: str, root: Path) -> str:
    """The family's tiny model with the family's published image-processor config (as on the Hub: a
    ``preprocessor_config.json``)."""
    cfg = json.loads((DATA / "processor_configs.json").read_text())[family]
    out = root / f"{family}-tiny"
    shutil.copytree(tiny[BASE[family]], out)
    (out / "processor_config.json").unlink(missing_ok=True)
    (out / "preprocessor_config.json").write_text(json.dumps(cfg))
    return str(out)


@pytest.mark.parametrize("family", sorted(BASE))
def test_original_frames_go_through_the_processor_the_original_script_got(
        tiny: dict[str, str], reference: dict[str, np.ndarray], tmp_path: Path, family: str) -> None:
    assert str(reference["transformers_version"]) == "4.51.3"
    folder = _folder(tiny, family, tmp_path)
    frames = [reference[f"frame_{i}"] for i in range(3)]
    want = [reference[f"{family}_{i}"] for i in range(3)]
    original = TransformersEmbedder(folder, protocol="original", family=family, device="cpu", dtype="float32")
    proc = original._frame_processor()
    for f, w in zip(frames, want):
        got = proc(images=[f], return_tensors="pt")["pixel_values"][0].numpy()
        np.testing.assert_allclose(got, w, atol=1e-6)
    # the embeddings are the model's features of exactly those pixels, cast to bfloat16 as the script did
    # (``v.cuda().to(torch.bfloat16)``; SigLIP2's fp32 model casts them back)
    model, _ = original.load()

    def features(pixels: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = model.get_image_features(pixel_values=pixels)
        out = getattr(out, "pooler_output", out).numpy()
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    pixels = torch.from_numpy(np.stack(want))
    feats = features(pixels.to(torch.bfloat16).float())
    got = np.concatenate([original.embed_frames(f[None]) for f in frames])
    np.testing.assert_allclose(got, feats, atol=1e-5)
    assert np.abs(got - features(pixels)).max() > 1e-5  # the rounding is visible in the features
    # lovr's own protocol keeps transformers 5's default processor: for siglip and metaclip that is another
    # resize (the reason the original needs its own), for siglip2 the same fast one
    lovr = TransformersEmbedder(folder, protocol="lovr", family=family, device="cpu", dtype="float32")
    diff = max(np.abs(lovr._frame_processor()(images=[f], return_tensors="pt")["pixel_values"][0].numpy() - w).max()
               for f, w in zip(frames, want))
    assert (diff > 1e-3) == (family != "siglip2"), diff
