"""Tiny random GME-Qwen2-VL: a tiny Qwen2-VL saved in the layout of ``Alibaba-NLP/gme-Qwen2-VL-*``.

GME's checkpoints are Qwen2-VL weights without the LM head (``visual.*`` + ``model.*``; GME pools hidden
states and never generates), with ``architectures: ["GmeQwen2VL"]`` and GME's config fields
(``min_image_tokens`` / ``max_image_tokens`` / ``max_length``). This builder makes exactly that from the tiny
Qwen2-VL (2 text layers of width 64), with small image-token budgets so frames stay a few tokens on CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lovr_hf.tiny.common import _build_once
from lovr_hf.tiny.qwen_vl import _qwen_vl_save

TINY_MIN_IMAGE_TOKENS = 4
TINY_MAX_IMAGE_TOKENS = 16


def _gme_save(out: Path, seed: int) -> None:
    from safetensors.torch import load_file, save_file

    _qwen_vl_save(out, seed, "qwen2_vl")
    weights = load_file(str(out / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("lm_head.")}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "generation_config.json").unlink(missing_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(architectures=["GmeQwen2VL"], min_image_tokens=TINY_MIN_IMAGE_TOKENS,
               max_image_tokens=TINY_MAX_IMAGE_TOKENS, max_length=1800)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))


def build_tiny_gme(out_dir: str | os.PathLike[str], seed: int = 0) -> str:
    """Tiny GME-Qwen2-VL folder (Qwen2-VL weights without LM head, GME config fields) -> folder."""
    return _build_once(out_dir, "gme_qwen2_vl", seed, lambda p: _gme_save(p, seed))
