"""open_clip models (``open_clip_torch``) as retrieval embedders, registered as ``open_clip``.

Only registered when ``open_clip`` imports (the registry skips this module otherwise; ``lovr eval`` then
says which extra to install). Model specs: ``hf-hub:<org>/<repo>`` (weights and tokenizer from the Hub), or
``<architecture>/<pretrained tag>`` such as ``ViT-B-32/laion2b_s34b_b79k`` (an ``open_clip:`` prefix is
allowed), or a local folder in the Hub layout (``open_clip_config.json`` + ``open_clip_model.safetensors``,
given as a path or ``local-dir:<path>``; open_clip >= 2.32). Tested offline on a tiny random model built
by :func:`lovr_hf.tiny.build_tiny_open_clip`; Hub weights cannot be fetched here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import open_clip  # noqa: F401  (ImportError here = backend not available)

from lovr_hf.backends.base import EMBEDDERS, Embedder
from lovr_hf.backends.embedder_transformers import TEXT_MODES, chunk_mean, l2_normalize
from lovr_hf.models import OPEN_CLIP_CONFIG

logger = logging.getLogger(__name__)


LOCAL_DIR = "local-dir:"


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
    if spec.startswith("hf-hub:") or "/" not in spec:
        return spec, pretrained
    arch, _, tag = spec.partition("/")
    return arch, pretrained or tag


@EMBEDDERS.register("open_clip")
class OpenCLIPEmbedder(Embedder):
    """``embed_text`` / ``embed_frames`` through an open_clip model (L2-normalised float32)."""

    name = "open_clip"

    def __init__(
        self,
        model_path: str,
        *,
        pretrained: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int = 64,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
    ) -> None:
        if text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
        self.spec, self.pretrained = parse_spec(model_path, pretrained)
        self.device = device
        self.precision = precision
        self.batch_size = max(1, int(batch_size))
        self.text_mode = text_mode
        self._limit = max_text_tokens
        self._model: Any = None
        self._preprocess: Any = None
        self._tokenizer: Any = None

    def model_id(self) -> str:
        return f"open_clip:{self.spec}" + (f"/{self.pretrained}" if self.pretrained else "")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_preprocess": None, "_tokenizer": None}

    def load(self) -> Any:
        if self._model is None:
            import open_clip

            from lovr_hf.backends.captioner_transformers import resolve_device

            device = resolve_device(self.device)
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.spec, pretrained=self.pretrained, device=device, precision=self.precision
            )
            self._model, self._preprocess = model.eval(), preprocess
            self._tokenizer = open_clip.get_tokenizer(self.spec)
        return self._model

    @property
    def max_text_tokens(self) -> int | None:  # type: ignore[override]
        self.load()
        return self._limit or getattr(self._tokenizer, "context_length", None) or 77

    def _split(self, text: str) -> list[str]:
        """Pieces of ``text`` of at most the context length minus start/end tokens (chunk-mean)."""
        tok = self._tokenizer
        room = max(1, int(self.max_text_tokens) - 2)
        inner = getattr(tok, "tokenizer", None)  # HFTokenizer wraps a transformers tokenizer
        if inner is not None:
            ids = inner(text, add_special_tokens=False).input_ids
            decode = inner.decode
        else:  # SimpleTokenizer
            ids = tok.encode(text)
            decode = tok.decode
        return [decode(ids[i : i + room]) for i in range(0, max(1, len(ids)), room)] or [""]

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        model = self.load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self._tokenizer(texts[i : i + self.batch_size]).to(next(model.parameters()).device)
            with torch.inference_mode():
                out.append(model.encode_text(tokens).float().cpu().numpy())
        return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_text(self, texts: Sequence[str], text_mode: str | None = None) -> np.ndarray:
        mode = text_mode or self.text_mode
        texts = [str(t) for t in texts]
        if mode == "truncate":  # open_clip's tokenizer truncates at the context length
            return self._encode_texts(texts)
        self.load()
        return chunk_mean(texts, self._split, self._encode_texts)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        model = self.load()
        device = next(model.parameters()).device
        out = []
        for i in range(0, len(frames), self.batch_size):
            batch = torch.stack([self._preprocess(Image.fromarray(f)) for f in frames[i : i + self.batch_size]])
            with torch.inference_mode():
                out.append(model.encode_image(batch.to(device)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        """Embedding width (measured once with one short text through the model)."""
        if getattr(self, "_dim", None) is None:
            self._dim = int(self._encode_texts([""]).shape[1])
        return self._dim
