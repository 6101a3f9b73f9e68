"""open_clip models (``open_clip_torch``) as retrieval embedders, registered as ``open_clip``.

The module imports without open_clip (registered always; the constructor raises one ``ImportError`` naming
``lovr_hf[openclip]``). Model specs: ``hf-hub:<org>/<repo>`` (weights and tokenizer from the Hub), a bare
Hub id of an open_clip repo such as ``timm/PE-Core-B-16``, ``<architecture>/<pretrained tag>`` such as
``ViT-B-32/laion2b_s34b_b79k`` (an ``open_clip:`` prefix is allowed), a paper name from :data:`ALIASES`
(``EVA02-CLIP-B-16``, ``facebook/PE-Core-B16-224``), or a local folder in the Hub layout
(``open_clip_config.json`` + ``open_clip_model.safetensors``, as a path or ``local-dir:<path>``; open_clip
>= 2.32).

It also serves two families of the LoVR paper. The original scripts (commit 00ca611) did NOT use open_clip:
``EVA02-CLIP-B-16_test.py`` loaded BAAI's ``eva_clip`` package (``create_model_and_transforms(
"EVA02-CLIP-B-16", "EVA02_CLIP_B_psz16_s8B.pt", force_custom_clip=True)``) and ``PE-Core-B16-224_test.py``
Meta's ``perception_models`` (``core.vision_encoder.pe.CLIP.from_config("PE-Core-B16-224")``); neither is
on PyPI. open_clip ships the same architectures and the same weights converted by timm
(``EVA02-B-16/merged2b_s8b_b131k`` = ``timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k``;
``PE-Core-B-16/meta`` = ``timm/PE-Core-B-16``), so lovr_hf runs them here. Both original scripts ran
under fp16 autocast (``precision="amp"`` here). Tested offline on tiny random models of the same families
built from open_clip's own configs (:mod:`lovr_hf.tiny.openclip_timm`); Hub weights cannot be fetched here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    PieceTextEmbedder,
    check_frames,
    device_and_dtype,
    encode_batches,
    text_limit,
    token_pieces,
)
from lovr_hf.backends.embedders.families import OPEN_CLIP_CONFIG, Family, register_family
from lovr_hf.backends.extras import require_extra

logger = logging.getLogger(__name__)


LOCAL_DIR = "local-dir:"
PRECISIONS = ("fp32", "amp", "amp_bf16", "fp16", "bf16", "pure_fp16", "pure_bf16")
#: ``--dtype`` values -> open_clip precision (``amp``: fp16 autocast on a GPU, what the original EVA02-CLIP and
#: PE-Core scripts ran under, so a family row can name it as its original precision)
DTYPES = {"float32": "fp32", "fp32": "fp32", "float16": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16",
          "amp": "amp"}

#: the LoVR paper's model names (lower-cased) -> the open_clip model holding the same weights
ALIASES: dict[str, tuple[str, str | None]] = {
    "eva02-clip-b-16": ("EVA02-B-16", "merged2b_s8b_b131k"),
    "pe-core-b16-224": ("PE-Core-B-16", "meta"),
    "facebook/pe-core-b16-224": ("PE-Core-B-16", "meta"),
}


def is_local_open_clip(path: str) -> bool:
    """A folder that open_clip's ``local-dir:`` loader can read (its config file is there)."""
    return os.path.isfile(os.path.join(os.path.expanduser(path), OPEN_CLIP_CONFIG))


def parse_spec(spec: str, pretrained: str | None = None) -> tuple[str, str | None]:
    """``hf-hub:org/repo`` -> (spec, None); ``ViT-B-32/laion2b_s34b_b79k`` -> (``ViT-B-32``, tag);
    a local folder (or ``local-dir:<folder>``) -> (``local-dir:<absolute folder>``, None)."""
    spec = spec.removeprefix("open_clip:")
    local = spec.removeprefix(LOCAL_DIR)
    if spec.startswith(LOCAL_DIR) or is_local_open_clip(local):
        if not is_local_open_clip(local):
            raise FileNotFoundError(f"{local}: not an open_clip model folder (no {OPEN_CLIP_CONFIG})")
        return LOCAL_DIR + os.path.abspath(os.path.expanduser(local)), None
    alias = ALIASES.get(spec.lower())
    if alias:
        logger.info("%s -> open_clip %s/%s (the same weights in open_clip's layout)", spec, *alias)
        return alias[0], pretrained or alias[1]
    if spec.startswith("hf-hub:") or "/" not in spec:
        return spec, pretrained
    arch, _, tag = spec.partition("/")
    if arch not in _architectures():  # a Hub id (timm/PE-Core-B-16), not <architecture>/<tag>
        return f"hf-hub:{spec}", pretrained
    return arch, pretrained or tag


def _architectures() -> set[str]:
    import open_clip

    return set(open_clip.list_models())


#: tiny test trunk name -> (the real timm constructor it shrinks, small sizes): the trunks of the tiny
#: EVA02/PE-Core models of :mod:`lovr_hf.tiny.openclip_timm`, registered here, where a model naming them loads
TINY_TRUNKS: dict[str, tuple[str, dict[str, Any]]] = {
    "lovr_tiny_eva02_clip": ("eva02_base_patch16_clip_224",
                             {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8}),
    "lovr_tiny_pe_core": ("vit_pe_core_base_patch16_224",
                          {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8}),
}


def register_tiny_trunks() -> None:
    """Register the ``lovr_tiny_*`` timm variants (idempotent)."""
    import timm
    from timm.models import register_model

    for name, (base, sizes) in TINY_TRUNKS.items():
        if timm.is_model(name):
            continue

        def make(pretrained: bool = False, _base: str = base, _sizes: dict[str, Any] = sizes,
                 **kwargs: Any) -> Any:
            return timm.create_model(_base, pretrained=False, **{**_sizes, **kwargs})

        make.__name__ = name
        make.__qualname__ = name
        register_model(make)


def _register_tiny_trunks(spec: str) -> None:
    """A tiny test model's config names a ``lovr_tiny_`` timm trunk: register those variants first."""
    if not spec.startswith(LOCAL_DIR):
        return
    try:
        cfg = json.loads((Path(spec.removeprefix(LOCAL_DIR)) / OPEN_CLIP_CONFIG).read_text())
    except (OSError, ValueError):
        return
    if str(cfg.get("model_cfg", {}).get("vision_cfg", {}).get("timm_model_name", "")).startswith("lovr_tiny_"):
        register_tiny_trunks()


@EMBEDDERS.register("open_clip")
class OpenCLIPEmbedder(PieceTextEmbedder):
    """``embed_text`` / ``embed_frames`` through an open_clip model (L2-normalised float32).

    ``precision`` is open_clip's (``fp32``, ``amp``: fp32 weights under autocast, ``bf16`` / ``fp16``: weights
    cast); ``--dtype`` maps onto it (:data:`DTYPES`) unless ``precision`` is given explicitly, which wins: it
    is the more specific option. Images go in the model's input dtype, as open_clip's own eval does."""

    name = "open_clip"
    _LOADED = ("_model", "_preprocess", "_tokenizer")

    def __init__(
        self,
        model_path: str,
        *,
        pretrained: str | None = None,
        device: str = "auto",
        precision: str | None = None,
        dtype: str | None = None,
        batch_size: int = 64,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
    ) -> None:
        require_extra("open_clip", "openclip", "open_clip")
        from_dtype = "fp32"
        if dtype not in (None, "", "auto"):  # --dtype: open_clip calls it precision
            if str(dtype) not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or precision={PRECISIONS}), got {dtype!r}")
            from_dtype = DTYPES[str(dtype)]
        if precision is None:
            precision = from_dtype
        elif from_dtype != precision and dtype not in (None, "", "auto"):
            logger.info("open_clip precision=%s given explicitly: dtype %s not applied", precision, dtype)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self._settings(model_path, device=device, dtype=dtype, batch_size=batch_size, text_mode=text_mode,
                       max_text_tokens=max_text_tokens)
        self.spec, self.pretrained = parse_spec(model_path, pretrained)
        self.precision = precision

    def model_id(self) -> str:
        return f"open_clip:{self.spec}" + (f"/{self.pretrained}" if self.pretrained else "")

    def load(self) -> Any:
        if self._model is None:
            device, _ = device_and_dtype(self.device, None)
            key = (self.spec, self.pretrained, device, self.precision)
            self._model, self._preprocess, self._tokenizer = self.shared(key, lambda: self._load_uncached(device))
        return self._model

    def _load_uncached(self, device: str) -> tuple[Any, Any, Any]:
        import open_clip

        _register_tiny_trunks(self.spec)
        model, _, preprocess = open_clip.create_model_and_transforms(
            self.spec, pretrained=self.pretrained, device=device, precision=self.precision
        )
        return model.eval(), preprocess, open_clip.get_tokenizer(self.spec)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``amp`` / ``amp_bf16``: fp32 weights under autocast, as the original EVA02 / PE-Core scripts ran."""
        import torch

        if not self.precision.startswith("amp"):
            return contextlib.nullcontext()
        device = next(self.load().parameters()).device.type
        dtype = torch.bfloat16 if self.precision == "amp_bf16" or device == "cpu" else torch.float16
        return torch.autocast(device, dtype=dtype)

    @property
    def max_text_tokens(self) -> int | None:
        self.load()
        native = getattr(self._tokenizer, "context_length", None) or 77
        return text_limit(self._limit, native, self.model_id())

    def _split(self, text: str) -> list[str]:
        """Pieces of ``text`` of at most the context length minus start/end tokens (chunk-mean)."""
        self.load()
        tok = self._tokenizer
        inner = getattr(tok, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        if inner is not None:
            ids, decode = inner(text, add_special_tokens=False).input_ids, inner.decode
        else:  # SimpleTokenizer
            ids, decode = tok.encode(text), tok.decode
        return token_pieces(ids, int(self.max_text_tokens) - 2, decode)

    _text_pieces = _split

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Truncate: open_clip's tokenizer cuts at the context length."""
        import torch

        model = self.load()
        device = next(model.parameters()).device

        def encode(batch: list[str]) -> Any:
            with torch.inference_mode(), self._autocast():
                return model.encode_text(self._tokenizer(batch).to(device))

        return encode_batches(texts, self.batch_size, encode, lambda: self.dim)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        import open_clip
        import torch
        from PIL import Image

        frames = check_frames(frames)
        model = self.load()
        device = next(model.parameters()).device
        input_dtype = open_clip.get_input_dtype(self.precision)  # bf16 / fp16 weights take bf16 / fp16 pixels

        def encode(batch: list[np.ndarray]) -> Any:
            pixels = torch.stack([self._preprocess(Image.fromarray(f)) for f in batch])
            with torch.inference_mode(), self._autocast():
                return model.encode_image(pixels.to(device, dtype=input_dtype))

        return encode_batches(frames, self.batch_size, encode, lambda: self.dim)


# ---- families served by this adapter (the LoVR paper's EVA02-CLIP and PE-Core rows) --------------------------

register_family(Family(
    name="eva02", backend="open_clip", patterns=(r"eva02",), priority=2,
    original_interval=30, interval=30, original_bgr=True,
    text="77 tokens (open_clip SimpleTokenizer), truncated",
    precision="fp32; --protocol original on a GPU: fp16 autocast (precision amp), as the original script",
    original_dtype="amp", extra="openclip",
    hub_ids=("EVA02-CLIP-B-16", "timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k"),
    notes="original: BAAI eva_clip package, EVA02_CLIP_B_psz16_s8B.pt (run_EVA02-CLIP-B-16.sh --interval 30); "
          "here open_clip EVA02-B-16/merged2b_s8b_b131k, the same weights converted by timm",
))
register_family(Family(
    name="pe_core", backend="open_clip", patterns=(r"pe[-_]core",), priority=2,
    original_interval=30, interval=30, original_bgr=True,
    text="32 tokens (open_clip SimpleTokenizer), truncated",
    precision="fp32; --protocol original on a GPU: fp16 autocast (precision amp), as the original script",
    original_dtype="amp", extra="openclip",
    hub_ids=("facebook/PE-Core-B16-224", "timm/PE-Core-B-16"),
    notes="original: Meta perception_models pe.CLIP.from_config('PE-Core-B16-224') (run_PE-Core-B16-224.sh "
          "--interval 30); here open_clip PE-Core-B-16/meta, the same weights converted by timm; images "
          "squashed to 224x224, mean/std 0.5",
))
