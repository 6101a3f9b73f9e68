"""nvidia/MM-Embed through its own remote code (``model.encode``), and the original's ORACLE frame choice.

MM-Embed (NV-Embed on LLaVA-Next) ships its Python code in its Hub repo, so it runs only with
``--trust-remote-code`` (``requires_remote_code``). The calls follow its model card and the original LoVR
script: texts ``encode([{"txt": t}], is_query=True, instruction=INSTRUCTION, max_length=4096)``, frames
``encode([{"img": image}], is_query=False, max_length=4096)``, both read from ``["hidden_states"]`` and
L2-normalised here.

The ORIGINAL script did not pool a clip's frames: for each clip and each full video it took the single
frame whose embedding is most similar to that item's GOLD caption (:func:`oracle_frame`). That uses the
answer to build the gallery — an oracle that inflates every number of the paper's MM-Embed row. lovr_hf
therefore mean-pools frames by default (``--protocol lovr``) and offers the oracle only under
``--protocol original``, where the visual stage calls :func:`oracle_pool` (class attribute
``original_oracle_frame``) and the results are flagged as oracle.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    RemoteCodeEmbedder,
    check_frames,
    encode_batches,
    hf_pieces,
    refuse_remote_code,
    text_limit,
    to_numpy,
)
from lovr_hf.backends.embedders.families import FRAMES, Family, register_family
from lovr_hf.stats.vectors import l2_normalize

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "nvidia/MM-Embed"
#: the original LoVR script's text instruction (MM-Embed's text-to-image retrieval task)
INSTRUCTION = "Retrieve the most relevant image given the textual description."
MAX_LENGTH = 4096  # the original script's max_length for texts and images


def oracle_frame(frame_embeddings: np.ndarray, gold_embedding: np.ndarray) -> tuple[int, np.ndarray]:
    """The original MM-Embed script's frame choice: the frame most similar to the item's gold caption.

    ``frame_embeddings`` [n, d] (one row per sampled frame of ONE clip or ONE full video, any scale) and
    ``gold_embedding`` [d] (the embedding of that item's own caption) are L2-normalised here; the result is
    ``(index, embedding)``: the index of the frame with the highest cosine (first one on ties) and its
    L2-normalised embedding [d] float32, which the original stored as the item's visual embedding.
    """
    frames = l2_normalize(np.asarray(frame_embeddings, dtype=np.float32))
    gold = l2_normalize(np.asarray(gold_embedding, dtype=np.float32).reshape(1, -1))[0]
    if frames.ndim != 2 or not len(frames):
        raise ValueError(f"expected frame embeddings [n>0, d], got shape {frames.shape}")
    if frames.shape[1] != gold.shape[0]:
        raise ValueError(f"frame width {frames.shape[1]} != caption width {gold.shape[0]}")
    index = int(np.argmax(frames @ gold))
    return index, frames[index].copy()


def oracle_pool(frame_embeddings: np.ndarray, gold_embedding: np.ndarray | None) -> tuple[np.ndarray, int | None]:
    """One item's visual embedding under ``--protocol original``: :func:`oracle_frame` when the item has a
    gold caption; otherwise the mean of its normalised frames, re-normalised (index None).

    The fallback is lovr_hf's: the original looked the gold caption up among the captioned items only and,
    for a gallery clip without a caption, silently kept the PREVIOUS item's embedding (a bug not copied).
    """
    if gold_embedding is None:
        frames = l2_normalize(np.asarray(frame_embeddings, dtype=np.float32))
        return l2_normalize(frames.mean(0, keepdims=True))[0], None
    index, emb = oracle_frame(frame_embeddings, gold_embedding)
    return emb, index


@EMBEDDERS.register("mm_embed")
class MMEmbedEmbedder(RemoteCodeEmbedder):
    """``nvidia/MM-Embed`` (``model.encode`` of its remote code)."""

    name = "mm_embed"
    #: under --protocol original the visual stage picks each item's frame with :func:`oracle_pool`
    #: (frame embeddings + the gold caption's embedding) instead of mean pooling; results are flagged oracle
    original_oracle_frame = True

    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        *,
        trust_remote_code: bool = False,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | None = "auto",
        batch_size: int = 8,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        instruction: str = INSTRUCTION,
        max_length: int = MAX_LENGTH,
    ) -> None:
        refuse_remote_code(trust_remote_code, model_path)
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.trust_remote_code = trust_remote_code
        self.instruction = instruction
        self.max_length = int(max_length)

    @property
    def max_text_tokens(self) -> int | None:
        """Caption tokens per call: ``max_length`` less the instruction prefix (and two special tokens)."""
        prefix = len(self.tokenizer()(f"Instruct: {self.instruction}\nQuery: ", add_special_tokens=False).input_ids)
        return text_limit(self._limit, max(1, self.max_length - prefix - 2), f"{self.model_id()} queries")

    def _encode(self, items: list[dict[str, Any]], is_query: bool) -> np.ndarray:
        """``model.encode`` in batches; its ``hidden_states`` are not normalised (the original normalised)."""
        import torch

        model = self.load()
        kwargs: dict[str, Any] = {"is_query": is_query, "max_length": self.max_length}
        if is_query:
            kwargs["instruction"] = self.instruction

        def encode(batch: list[dict[str, Any]]) -> np.ndarray:
            with torch.inference_mode():
                return to_numpy(model.encode(batch, **kwargs)["hidden_states"])

        return encode_batches(items, self.batch_size, encode, lambda: self.dim)

    # truncate: the model's own encode cuts at max_length
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        return self._encode([{"txt": t} for t in texts], is_query=True)

    def _text_pieces(self, text: str) -> list[str]:
        return hf_pieces(self.tokenizer(), int(self.max_text_tokens or 1))(text)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        from PIL import Image

        frames = check_frames(frames)
        return self._encode([{"img": Image.fromarray(f)} for f in frames], is_query=False)


register_family(Family(
    name="mm_embed", backend="mm_embed", patterns=(r"mm-embed",), priority=2,
    video_input=FRAMES, original_interval=None, interval=30, original_bgr=True,
    text=f"query instruction '{INSTRUCTION}', max_length {MAX_LENGTH} (the model's encode truncates)",
    pooling="lovr: mean of L2-normalised frame embeddings, re-normalised; original: ORACLE - the frame most "
            "similar to the item's gold caption",
    precision="original float32 (no dtype given); lovr_hf: the --dtype (auto: bf16 on GPU)",
    original_dtype="float32",
    hub_ids=(DEFAULT_MODEL,), remote_code=True,
    notes="remote code (--trust-remote-code); the paper's numbers come from the oracle frame choice",
))
