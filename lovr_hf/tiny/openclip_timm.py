"""Tiny random open_clip models of the EVA02-CLIP and PE-Core families (timm vision towers), built offline.

open_clip builds both families from its own model configs (``EVA02-B-16``, ``PE-Core-B-16``): a timm
vision trunk (``eva02_base_patch16_clip_224``, ``vit_pe_core_base_patch16_224``: timm's ``Eva`` class with
rotary position embeddings, SwiGLU MLPs and, for PE, an attention-pool head) and open_clip's text
transformer. open_clip's config names the trunk by its timm name and gives no way to shrink it, so this
module registers two small timm variants (``lovr_tiny_*``) that call the SAME timm constructors with small
widths; the saved folder is open_clip's Hub layout (``open_clip_config.json`` = the real model config with
the tiny trunk name and small text sizes, plus the real pretrained tag's preprocessing) and loads through
``open_clip.create_model_and_transforms("local-dir:<folder>")`` once the variants are registered (the
open_clip adapter, :mod:`lovr_hf.backends.embedders.openclip`, registers them when a config names a
``lovr_tiny_`` trunk).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: family -> (open_clip model config it copies, its pretrained tag (preprocessing), tiny trunk)
TINY_FAMILIES: dict[str, tuple[str, str, str]] = {
    "eva02": ("EVA02-B-16", "merged2b_s8b_b131k", "lovr_tiny_eva02_clip"),
    "pe_core": ("PE-Core-B-16", "meta", "lovr_tiny_pe_core"),
}
TINY_IMAGE_SIZE = 32
TINY_EMBED_DIM = 16


def tiny_model_config(family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) of the tiny ``family`` model: open_clip's real config, small sizes."""
    import open_clip

    arch, tag, trunk = TINY_FAMILIES[family]
    cfg = json.loads(json.dumps(open_clip.get_model_config(arch)))  # deep copy
    cfg["embed_dim"] = TINY_EMBED_DIM
    cfg["vision_cfg"].update(timm_model_name=trunk, image_size=TINY_IMAGE_SIZE)
    cfg["text_cfg"].update(width=32, heads=2, layers=2)
    pre = open_clip.get_pretrained_cfg(arch, tag)
    preprocess = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pre.items()
                  if k in ("mean", "std", "interpolation", "resize_mode")}
    return cfg, preprocess


def _save(out: Path, seed: int, family: str) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from lovr_hf.backends.embedders.families import OPEN_CLIP_CONFIG
    from lovr_hf.backends.embedders.openclip import register_tiny_trunks

    register_tiny_trunks()
    model_cfg, preprocess = tiny_model_config(family)
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{_write_config(out, model_cfg, preprocess, OPEN_CLIP_CONFIG)}",
                                   pretrained=None, load_weights=False).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / "open_clip_model.safetensors"))


def _write_config(out: Path, model_cfg: dict[str, Any], preprocess: dict[str, Any], name: str) -> str:
    (out / name).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2))
    return str(out)


def build_tiny_eva02_clip(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny EVA02-CLIP (open_clip ``EVA02-B-16`` config, timm Eva trunk of width 32, 32x32 images) -> folder."""
    from lovr_hf.tiny.common import _build_once

    return _build_once(out_dir, "open_clip_eva02", seed, lambda p: _save(p, seed, "eva02"))


def build_tiny_pe_core(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny PE-Core (open_clip ``PE-Core-B-16`` config: timm PE trunk with attention pool, 32-token text)."""
    from lovr_hf.tiny.common import _build_once

    return _build_once(out_dir, "open_clip_pe_core", seed, lambda p: _save(p, seed, "pe_core"))
