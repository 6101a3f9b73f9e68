"""Retrieval embeddings from any transformers dual encoder (CLIP, SigLIP, SigLIP2, MetaCLIP, ...).

One adapter for every model exposing ``get_text_features`` / ``get_image_features``, by Hub id or local
folder, replacing the original per-model scripts. Long captions (full-video captions run to ~17k words)
are either truncated at the model's text length (the original behaviour: CLIP 77 tokens, SigLIP 64) or
split into max-length chunks whose embeddings are averaged (``chunk-mean``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    PROTOCOLS,
    LazyEmbedder,
    check_frames,
    check_text_mode,
    chunk_mean,
    device_and_dtype,
    encode_batches,
    model_ref,
    text_limit,
)
from lovr_hf.backends.embedders.openai_clip_original import clean_caption, openai_clip_pixels, raw_tokenizer
from lovr_hf.model_labels import model_label

logger = logging.getLogger(__name__)

#: text handling per model type and protocol: (padding, lower-case the text first). SigLIP-family towers pool
#: the LAST position, so the padding changes the embedding: they were trained on text padded to 64 tokens
#: (big_vision; the model cards say padding="max_length"), SigLIP2 also on lower-cased text. Under
#: ``original`` each family gets what its original LoVR script passed: SigLIP ``padding=True`` (longest),
#: SigLIP2 ``padding="max_length"`` without lower-casing (the tokenizer of its time, GemmaTokenizerFast, kept
#: the case; transformers 5's Siglip2Tokenizer lower-cases, so that normaliser is taken out under
#: ``original``). Other model types: the tokenizer's own padding, ``longest`` (CLIP/MetaCLIP: causal
#: towers pooled at eos, padding-independent).
TEXT_RULES: dict[str, dict[str, tuple[str, bool]]] = {
    "siglip": {"lovr": ("max_length", False), "original": ("longest", False)},
    "siglip2": {"lovr": ("max_length", True), "original": ("max_length", False)},
}
_DEFAULT_RULE = ("longest", False)

#: families whose original script ran ``AutoProcessor.from_pretrained(path)`` without ``use_fast`` under
#: transformers 4 (before 4.52 that loaded the slow, PIL-based image processor; the SigLIP2 script asked for
#: ``use_fast=True`` itself): under ``original`` their frames go through transformers 5's PIL backend, the
#: slow processor's successor, instead of the torchvision one transformers 5 loads by default
PIL_PROCESSOR_FAMILIES = ("siglip", "metaclip")
#: families whose original script cast the processor's outputs to bfloat16 (``v.cuda().to(torch.bfloat16)``)
#: whatever the weights' dtype (SigLIP2 kept fp32 weights, so its model saw bf16-rounded pixels cast back):
#: under ``original`` their pixel values are rounded through bfloat16 before the model casts them to its dtype
BF16_PIXEL_FAMILIES = ("siglip", "siglip2", "metaclip")


def _features(out: Any) -> Any:
    """transformers 5 returns a ModelOutput (projected features in ``pooler_output``); 4.x a tensor."""
    import torch

    if torch.is_tensor(out):
        return out
    for key in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(out, key, None)
        if value is not None:
            return value
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    raise TypeError(f"cannot find features in {type(out).__name__}")


def to_model(inputs: Any, model: Any) -> dict[str, Any]:
    """Processor outputs on the model's device; floating tensors (pixels) in the model's dtype."""
    import torch

    out = {}
    for k, v in dict(inputs).items():
        if torch.is_tensor(v):
            v = v.to(model.device, dtype=model.dtype) if v.is_floating_point() else v.to(model.device)
        out[k] = v
    return out


def without_lowercase(tokenizer: Any) -> Any:
    """A copy of a tokenizers-backed tokenizer whose normaliser no longer lower-cases (unchanged otherwise).

    transformers 5 loads SigLIP2 checkpoints with ``Siglip2Tokenizer`` (Gemma + a Lowercase normaliser); the
    original LoVR script ran under transformers 4 (GemmaTokenizerFast, case kept), so ``--protocol original``
    needs the case back."""
    import copy

    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer
    data = json.loads(backend.to_str())

    def strip(node: Any) -> Any:
        if not isinstance(node, dict) or node.get("type") == "Lowercase":
            return None
        if node.get("type") == "Sequence":
            kept = [n for n in (strip(x) for x in node.get("normalizers", [])) if n is not None]
            return {**node, "normalizers": kept} if kept else None
        return node

    new = strip(data.get("normalizer"))
    if new == data.get("normalizer"):
        return tokenizer
    data["normalizer"] = new
    out = copy.deepcopy(tokenizer)
    out._tokenizer = Tokenizer.from_str(json.dumps(data))
    return out


@EMBEDDERS.register("transformers")
class TransformersEmbedder(LazyEmbedder):
    """Dual-encoder embeddings through ``AutoModel`` + ``AutoProcessor``.

    Args:
        model_path: Hub id or local folder (required).
        device / dtype: as for the transformers captioner (``"auto"``: cuda:LOCAL_RANK or cpu; bf16/fp32).
        revision, trust_remote_code: passed to ``from_pretrained`` (remote code only when asked for).
        batch_size: texts or frames per forward pass.
        text_mode: default for :meth:`embed_text` (``"truncate"`` or ``"chunk-mean"``).
        max_text_tokens: override the text length limit (default: from the model config / tokenizer).
        text_padding: ``"max_length"`` or ``"longest"``; default from :data:`TEXT_RULES` (model type and
            protocol): ``"max_length"`` for SigLIP/SigLIP2 under ``lovr``, ``"longest"`` otherwise.
        protocol: ``"lovr"`` (default) or ``"original"`` (the text handling of the family's original LoVR
            script, see :data:`TEXT_RULES`).
        lowercase: lower-case texts before tokenising (default from :data:`TEXT_RULES`: SigLIP2 under
            ``lovr``, as big_vision trained it).
        text_attention_mask: pass the tokenizer's attention mask to the text tower (default True: what the
            model's own forward gets from its processor). ``False`` leaves the padding unmasked, as big_vision
            and open_clip run SigLIP; an explicit choice, never a silent one.
        family: the row of the family table (lovr_hf.backends.embedders.families) by name; default: found from ``model_path``.
            Under ``original`` it picks the original script's preprocessing: the ``clip`` family cleans text
            and resizes pixels as OpenAI's ``clip`` package does (:mod:`openai_clip_original`); ``siglip`` and
            ``metaclip`` use transformers' PIL image processor (see :data:`PIL_PROCESSOR_FAMILIES`).
    """

    name = "transformers"
    #: what ``--protocol original`` computes, by revision (2: clip.tokenize's cleaning and clip.load's pixels for
    #: the clip family; transformers 4's image processors and bf16 pixels for SigLIP / SigLIP2 / MetaCLIP).
    #: Meant for the embeddings' fingerprint under ``original`` so embeddings of an earlier revision are redone
    #: (lovr_hf.evaluation.models.protocol_payload has to read it)
    original_revision = 2

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        dtype: str | None = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 64,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        text_padding: str | None = None,
        protocol: str = "lovr",
        lowercase: bool | None = None,
        text_attention_mask: bool = True,
        family: str | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if text_padding not in (None, "max_length", "longest"):
            raise ValueError(f"text_padding must be 'max_length' or 'longest', got {text_padding!r}")
        self.protocol = protocol
        self.lowercase = lowercase
        self.text_attention_mask = bool(text_attention_mask)
        self.family = family
        self._family_name: str | None = None
        self._pil_processor: Any = None
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.trust_remote_code = trust_remote_code
        self.text_padding = text_padding
        self.last_stats: dict[str, float] = {}
        self._affixes: tuple[list[int], list[int]] | None = None

    _LOADED = ("_model", "_processor", "_tok", "_pil_processor")  # never pickled into workers

    def model_id(self) -> str:
        return model_ref(self.model_path, self.revision)

    # -- loading -------------------------------------------------------------------------------------

    def load(self) -> tuple[Any, Any]:
        """Load once per process and device (module cache), then reuse."""
        if self._model is not None:
            return self._model, self._processor
        device, dtype = device_and_dtype(self.device, self.dtype)
        key = (self.model_path, self.revision, device, str(dtype), self.trust_remote_code)
        self._model, self._processor = self.shared(key, lambda: self._load_uncached(device, dtype))
        return self._model, self._processor

    def _load_uncached(self, device: str, dtype: Any) -> tuple[Any, Any]:
        from transformers import AutoProcessor

        t0 = time.perf_counter()
        model = self._model_class().from_pretrained(
            self.model_path,
            revision=self.revision,
            dtype=dtype,
            trust_remote_code=self.trust_remote_code,
        )
        model = model.to(device).eval()
        try:
            processor = AutoProcessor.from_pretrained(
                self.model_path, revision=self.revision, trust_remote_code=self.trust_remote_code
            )
        except ImportError as e:  # SigLIP's SiglipTokenizer: sentencepiece + protobuf
            if "sentencepiece" in str(e).lower() or "protobuf" in str(e).lower():
                raise ImportError(f"{self.model_path}: its tokenizer needs sentencepiece and protobuf: "
                                  "pip install 'lovr_hf[siglip]'") from e
            raise
        self._check_model(model)
        logger.info(
            "loaded embedder %s on %s in %.1fs", model_label(self.model_id()), device, time.perf_counter() - t0
        )
        return model, processor

    # -- hooks for family adapters built on this one (BLIP, X-CLIP): which class, which features -------

    def _model_class(self) -> Any:
        from transformers import AutoModel

        return AutoModel

    def _check_model(self, model: Any) -> None:
        for method in ("get_text_features", "get_image_features"):
            if not hasattr(model, method):
                raise TypeError(f"{self.model_path}: {type(model).__name__} has no {method}()")

    def _text_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        """Projected (unnormalised) text features of one tokenised batch."""
        return _features(model.get_text_features(**inputs))

    def _image_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        """Projected (unnormalised) image features of one processed batch of frames."""
        return _features(model.get_image_features(**inputs))

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer (under ``original`` for SigLIP2: without transformers 5's lower-casing)."""
        if getattr(self, "_tok", None) is None:
            model, processor = self.load()
            tok = getattr(processor, "tokenizer", processor)
            if self.protocol == "original" and model.config.model_type == "siglip2":
                tok = without_lowercase(tok)
            if self._openai_clip():
                tok = raw_tokenizer(tok)  # texts arrive cleaned by clean_caption (clip.tokenize's pipeline)
            self._tok = tok
        return self._tok

    def _rule(self) -> tuple[str, bool]:
        """(padding, lower-case) of :data:`TEXT_RULES`: by model type, except under ``original``, where the
        family's script decides. The fixed-resolution SigLIP2 checkpoints the paper ran are model type
        ``siglip``, but their script padded to ``max_length`` where SigLIP's padded to the longest."""
        model, _ = self.load()
        key = model.config.model_type
        if self.protocol == "original" and self._family_row() in TEXT_RULES:
            key = self._family_row()
        return TEXT_RULES.get(key, {}).get(self.protocol, _DEFAULT_RULE)

    def _lowercase(self) -> bool:
        return self._rule()[1] if self.lowercase is None else bool(self.lowercase)

    def _prepare(self, texts: list[str]) -> list[str]:
        if self._openai_clip():
            return [clean_caption(t) for t in texts]
        return [t.lower() for t in texts] if self._lowercase() else texts

    # -- the original script's preprocessing, per family (``--protocol original``) ---------------------

    def _family_row(self) -> str:
        """The family name of this model (``family`` as given, else looked up from ``model_path``)."""
        if getattr(self, "_family_name", None) is None:
            from lovr_hf.backends.embedders.families import family_or_default

            self._family_name = family_or_default(self.model_path, getattr(self, "family", None)).name
        return self._family_name  # type: ignore[return-value]

    def _openai_clip(self) -> bool:
        """Under ``original``, the clip family ran OpenAI's ``clip`` package: its text cleaning and pixels."""
        if self.protocol != "original":
            return False
        model, _ = self.load()
        return model.config.model_type == "clip" and self._family_row() == "clip"

    def _frame_processor(self) -> Any:
        """The image processor frames go through: the processor's own, or under ``original`` the one the
        family's original script instantiated (:data:`PIL_PROCESSOR_FAMILIES`)."""
        _, processor = self.load()
        if self.protocol == "original" and self._family_row() in PIL_PROCESSOR_FAMILIES:
            if getattr(self, "_pil_processor", None) is None:
                from transformers import AutoImageProcessor

                self._pil_processor = AutoImageProcessor.from_pretrained(
                    self.model_path, revision=self.revision, backend="pil",
                    trust_remote_code=self.trust_remote_code)
            return self._pil_processor
        return getattr(processor, "image_processor", processor)

    @property
    def max_text_tokens(self) -> int | None:
        """Text length limit in tokens, special tokens included (CLIP 77, SigLIP 64)."""
        model, _ = self.load()
        limits = []
        text_config = getattr(model.config, "text_config", model.config)
        n_pos = getattr(text_config, "max_position_embeddings", None)
        if isinstance(n_pos, int) and n_pos > 0:
            limits.append(n_pos)
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        return text_limit(self._limit, min(limits) if limits else None, self.model_id())

    def _padding(self) -> str:
        return self.text_padding or self._rule()[0]

    # -- text ----------------------------------------------------------------------------------------

    def _special_affixes(self) -> tuple[list[int], list[int]]:
        """Token ids the tokenizer puts before / after the content (e.g. CLIP ``[bos]``/``[eos]``)."""
        if getattr(self, "_affixes", None) is None:
            tok = self.tokenizer
            probe = "a photo"
            full = list(tok(probe).input_ids)
            content = list(tok(probe, add_special_tokens=False).input_ids)
            for p in range(len(full) - len(content) + 1):
                if full[p : p + len(content)] == content:
                    self._affixes = (full[:p], full[p + len(content) :])
                    break
            else:  # unusual template: no affixes rather than wrong ones
                logger.warning("cannot locate special tokens of %s; chunks get none", model_label(self.model_id()))
                self._affixes = ([], [])
        return self._affixes

    def text_chunk_ids(self, text: str) -> list[list[int]]:
        """Token ids of ``text`` split into chunks that fit the model, each wrapped in the special tokens.

        The content ids of the whole text are cut every ``max_text_tokens - specials`` tokens (no
        re-tokenisation, so no token is lost or changed at a boundary).
        """
        tok = self.tokenizer
        prefix, suffix = self._special_affixes()
        ids = list(tok(self._prepare([text])[0], add_special_tokens=False, verbose=False).input_ids)
        limit = self.max_text_tokens
        room = max(1, limit - len(prefix) - len(suffix)) if limit else max(1, len(ids))
        return [prefix + ids[i : i + room] + suffix for i in range(0, max(1, len(ids)), room)]

    def _encode_ids(self, batch_ids: list[list[int]]) -> np.ndarray:
        """Text features for already tokenised inputs (each within the limit), in batches."""
        import torch

        model, _ = self.load()
        tok = self.tokenizer
        padding = self._padding()
        limit = self.max_text_tokens

        def encode(batch: list[list[int]]) -> Any:
            enc = tok.pad({"input_ids": batch}, padding=padding,
                          max_length=limit if padding == "max_length" else None, return_tensors="pt")
            # the model's own forward gets what its processor returns: input_ids and, where the tokenizer
            # makes one, the attention mask (SigLIP included; leaving it out changed SigLIP text embeddings
            # by up to 0.5 in cosine against the model's forward)
            inputs = {"input_ids": enc["input_ids"].to(model.device)}
            if self.text_attention_mask and "attention_mask" in enc:
                inputs["attention_mask"] = enc["attention_mask"].to(model.device)
            with torch.inference_mode():
                return self._text_features(model, inputs)

        return encode_batches(batch_ids, self.batch_size, encode, lambda: self.dim)

    def _truncated_ids(self, texts: list[str]) -> list[list[int]]:
        """The original behaviour: cut at the model limit, keeping the special tokens (e.g. CLIP's eos)."""
        limit = self.max_text_tokens
        enc = self.tokenizer(self._prepare(texts), truncation=limit is not None, max_length=limit, verbose=False)
        return [list(x) for x in enc["input_ids"]]

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        return self._encode_ids(self._truncated_ids(texts))

    def embed_text(self, texts: Sequence[str], text_mode: str | None = None) -> np.ndarray:
        """[n, d] float32, L2-normalised. ``chunk-mean``: mean of the chunk embeddings, re-normalised."""
        mode = check_text_mode(text_mode or self.text_mode)
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        t0 = time.perf_counter()
        if mode == "truncate":
            result = self._encode_texts(texts)
        else:
            result = chunk_mean(texts, self.text_chunk_ids, self._encode_ids)
        self.last_stats = {"text_s": time.perf_counter() - t0}
        return result

    # -- frames --------------------------------------------------------------------------------------

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3] -> [n, d] float32, L2-normalised (the model's own image preprocessing; under
        ``original`` the family's original one: :meth:`_openai_clip`, :meth:`_frame_processor`)."""
        import torch

        frames = check_frames(frames)
        model, _ = self.load()
        openai_clip = self._openai_clip()
        image_processor = None if openai_clip else self._frame_processor()
        n_px = int(model.config.vision_config.image_size) if openai_clip else 0
        bf16_pixels = self.protocol == "original" and self._family_row() in BF16_PIXEL_FAMILIES
        t0 = time.perf_counter()

        def encode(batch: list[np.ndarray]) -> Any:
            if openai_clip:  # clip.load's own transform (PIL bicubic, centre crop, OpenAI mean/std)
                kwargs = to_model({"pixel_values": openai_clip_pixels(batch, n_px)}, model)
            else:  # all processor outputs go in: SigLIP2 also needs pixel_attention_mask and spatial_shapes
                inputs = dict(image_processor(images=batch, return_tensors="pt"))
                if bf16_pixels:
                    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16).float()
                kwargs = to_model(inputs, model)
            with torch.inference_mode():
                return self._image_features(model, kwargs)

        out = encode_batches(frames, self.batch_size, encode, lambda: self.dim)
        self.last_stats = {"frames_s": time.perf_counter() - t0}
        return out
