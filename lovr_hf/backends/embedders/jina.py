"""jina-clip-v2 (and v1) through transformers ``AutoModel`` with the model's own remote code.

The model's Python code comes from its Hub repo, so it runs only when the user passes
``--trust-remote-code`` (the ``trust_remote_code`` option); without it the adapter refuses before anything is
downloaded (``lovr eval`` checks ``requires_remote_code`` even earlier). The calls follow the model card
(``encode_text`` / ``encode_image`` on the model, ``truncate_dim`` for Matryoshka widths) and are tested
against a local remote-code model implementing that API (tests/remote_code/); jina-clip-v2 itself needs
the Hub and was not run here.

Text limit: ``encode_text`` tokenizes with ``max_length=512, truncation=True`` unless its caller passes a
``max_length`` (jina's cross-modal training stopped at 512 tokens, although the text tower takes 8192). The
adapter always passes its limit (512, or ``--max-text-tokens`` up to 8192), so the limit it reports is the
one applied and every ``chunk-mean`` piece fits it.
"""

from __future__ import annotations

import logging

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    RemoteCodeEmbedder,
    check_frames,
    hf_pieces,
    refuse_remote_code,
    to_numpy,
)
from lovr_hf.stats.vectors import l2_normalize

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "jinaai/jina-clip-v2"
#: jina-clip's ``encode_text`` tokenizes with ``max_length=512, truncation=True`` unless told otherwise (its
#: cross-modal training stopped at 512 tokens; the XLM-RoBERTa text tower itself takes 8192)
DEFAULT_TEXT_LIMIT = 512
#: what the text tower can take at all (RoPE positions): the ceiling of an explicit ``max_text_tokens``
TOWER_TEXT_LIMIT = 8192


@EMBEDDERS.register("jina")
class JinaClipEmbedder(RemoteCodeEmbedder):
    """``jinaai/jina-clip-v2``-style models (``model.encode_text`` / ``model.encode_image``).

    The text limit is given to ``encode_text`` as its tokenizer's ``max_length`` (default 512, the model's own
    default), so the limit the adapter reports is the one applied, and each ``chunk-mean`` piece fits it.
    """

    name = "jina"
    _cuts_at_override = True  # encode_text is given max_length

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
        refuse_remote_code(trust_remote_code, model_path)
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.trust_remote_code = trust_remote_code  # True here: refused above otherwise
        self.truncate_dim = truncate_dim

    @property
    def max_text_tokens(self) -> int | None:
        """Tokens per text, special tokens included: 512 (``encode_text``'s default) or ``max_text_tokens``."""
        limit = self._limit or DEFAULT_TEXT_LIMIT
        if limit > TOWER_TEXT_LIMIT:
            raise ValueError(f"max_text_tokens={limit} exceeds the text limit of {self.model_id()} "
                             f"({TOWER_TEXT_LIMIT} tokens)")
        return int(limit)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        out = self.load().encode_text(texts, batch_size=self.batch_size, truncate_dim=self.truncate_dim,
                                      max_length=self.max_text_tokens)
        return l2_normalize(to_numpy(out))

    def _text_pieces(self, text: str) -> list[str]:
        return hf_pieces(self.tokenizer(), int(self.max_text_tokens) - 2)(text)  # room for <s> ... </s>

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        from PIL import Image

        frames = check_frames(frames)
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        images = [Image.fromarray(f) for f in frames]
        out = self.load().encode_image(images, batch_size=self.batch_size, truncate_dim=self.truncate_dim)
        return l2_normalize(to_numpy(out))
