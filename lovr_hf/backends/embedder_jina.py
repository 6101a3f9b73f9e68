"""jina-clip-v2 (and v1) through transformers ``AutoModel`` with the model's own remote code.

The model's Python code comes from its Hub repo, so it runs only when the user passes
``--trust-remote-code`` (the ``trust_remote_code`` option); without it the adapter refuses before anything is
downloaded (``lovr eval`` checks ``requires_remote_code`` even earlier). The calls follow the model card
(``encode_text`` / ``encode_image`` on the model, ``truncate_dim`` for Matryoshka widths) and are tested
against a local remote-code model implementing that API (tests/remote_code/); jina-clip-v2 itself needs
the Hub and was not run here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS, Embedder
from lovr_hf.backends.embedder_transformers import TEXT_MODES, chunk_mean, l2_normalize

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "jinaai/jina-clip-v2"
DEFAULT_TEXT_LIMIT = 8192  # jina-clip-v2 text tower (XLM-RoBERTa with RoPE)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


@EMBEDDERS.register("jina")
class JinaClipEmbedder(Embedder):
    """``jinaai/jina-clip-v2``-style models (``model.encode_text`` / ``model.encode_image``)."""

    name = "jina"
    requires_remote_code = True

    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        *,
        trust_remote_code: bool = False,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | None = "auto",
        batch_size: int = 32,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        truncate_dim: int | None = None,
    ) -> None:
        if not trust_remote_code:
            raise ValueError(
                f"{model_path} runs code from its Hub repo: pass --trust-remote-code "
                "if you trust it"
            )
        if text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
        self.model_path = model_path
        self.trust_remote_code = trust_remote_code  # True here: refused above otherwise
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.text_mode = text_mode
        self._limit = max_text_tokens
        self.truncate_dim = truncate_dim
        self._model: Any = None
        self._tokenizer: Any = None

    def model_id(self) -> str:
        return f"{self.model_path}@{self.revision}" if self.revision else self.model_path

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def load(self) -> Any:
        if self._model is None:
            from transformers import AutoModel

            from lovr_hf.backends.captioner_transformers import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            model = AutoModel.from_pretrained(self.model_path, revision=self.revision,
                                              trust_remote_code=self.trust_remote_code,
                                              dtype=resolve_dtype(self.dtype, device))
            self._model = model.to(device).eval()
        return self._model

    @property
    def max_text_tokens(self) -> int | None:  # type: ignore[override]
        return self._limit or DEFAULT_TEXT_LIMIT

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = self.load().encode_text(texts, batch_size=self.batch_size, truncate_dim=self.truncate_dim)
        return l2_normalize(_numpy(out))

    def embed_text(self, texts: Sequence[str], text_mode: str | None = None) -> np.ndarray:
        mode = text_mode or self.text_mode
        texts = [str(t) for t in texts]
        if not texts:  # the model's encode_text fails on an empty list
            return np.zeros((0, self.dim), np.float32)
        if mode == "truncate":  # the model's own tokenizer truncates at its limit
            return self._encode(texts)
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, revision=self.revision,
                                                            trust_remote_code=self.trust_remote_code)
        room = max(1, int(self.max_text_tokens or DEFAULT_TEXT_LIMIT) - 2)

        def split(text: str) -> list[str]:
            ids = self._tokenizer(text, add_special_tokens=False).input_ids
            return [self._tokenizer.decode(ids[j : j + room]) for j in range(0, max(1, len(ids)), room)]

        return chunk_mean(texts, split, self._encode)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        from PIL import Image

        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        images = [Image.fromarray(np.asarray(f)) for f in frames]
        out = self.load().encode_image(images, batch_size=self.batch_size, truncate_dim=self.truncate_dim)
        return l2_normalize(_numpy(out))

    @property
    def dim(self) -> int:
        """Embedding width (after ``truncate_dim``), measured once with one short text."""
        if getattr(self, "_dim", None) is None:
            self._dim = int(self._encode(["a"]).shape[1])
        return self._dim
