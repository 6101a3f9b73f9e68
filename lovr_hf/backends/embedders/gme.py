"""GME (``Alibaba-NLP/gme-Qwen2-VL-2B/7B-Instruct``) on transformers' own Qwen2-VL, with GME's pooling and prompt.

GME's published inference code (``gme_inference.py`` / ``modeling_gme_qwen2vl.py`` on the Hub, remote code
pinned to transformers < 4.52) is reproduced here on the maintained classes, so no remote code runs:

- one prompt per item, ``<|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{input}<|im_end|>\\n
  <|im_start|>assistant\\n<|endoftext|>``; ``input`` is the text, or ``<|vision_start|><|image_pad|>
  <|vision_end|>`` for an image; the instruction is GME's default ``"You are a helpful assistant."`` unless a
  query instruction is set (the original LoVR script set none: ``get_text_embeddings(texts=...)`` /
  ``get_image_embeddings(images=...)``);
- the processor pads on the right and truncates the prompt at ``max_length`` tokens (config, 1800); images are
  resized as GME's ``fetch_image`` does (``smart_resize`` to multiples of 28) and then held between
  ``min_image_tokens`` and ``max_image_tokens`` (256 and 1280) merged tokens;
- GME's forward embeds the tokens, writes the vision tower's merged patch features over the image
  placeholders and runs the decoder with *plain 1-D positions* (it called the decoder without position ids,
  so the 3-D M-RoPE index of Qwen2-VL generation is not used); the embedding is the final-norm hidden state of
  the last non-padding token, L2-normalised.

Frames are embedded one image each; the visual stage mean-pools them (the original: mean of GME's normalised
frame embeddings, re-normalised). The checkpoint loads into ``Qwen2VLForConditionalGeneration`` (transformers
maps GME's ``visual.*`` / ``model.*`` keys; the unused LM head stays uninitialised).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    PieceTextEmbedder,
    check_frames,
    device_and_dtype,
    encode_batches,
    hf_pieces,
    model_ref,
    text_limit,
)
from lovr_hf.backends.embedders.families import FRAMES, Family, register_family
from lovr_hf.backends.embedders.transformers import to_model
from lovr_hf.model_labels import model_label
from lovr_hf.stats.vectors import l2_normalize

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Alibaba-NLP/gme-Qwen2-VL-7B-Instruct"
DEFAULT_INSTRUCTION = "You are a helpful assistant."
IMAGE_INPUT = "<|vision_start|><|image_pad|><|vision_end|>"
IMAGE_FACTOR = 28  # GME fetch_image: 14-pixel patches merged 2x2
FETCH_MIN_PIXELS = 4 * 28 * 28
FETCH_MAX_PIXELS = 16384 * 28 * 28


def gme_prompt(content: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """GME's chat prompt for one item (text, or :data:`IMAGE_INPUT` for an image)."""
    return (f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
            "<|im_start|>assistant\n<|endoftext|>")


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = FETCH_MIN_PIXELS,
                 max_pixels: int = FETCH_MAX_PIXELS) -> tuple[int, int]:
    """Qwen2-VL's resize rule (sides multiples of ``factor``, area within the bounds, aspect kept)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def fetch_image(frame: np.ndarray) -> Any:
    """A frame as GME's ``fetch_image`` hands it to the processor: RGB PIL image resized by :func:`smart_resize`."""
    from PIL import Image

    image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
    h, w = smart_resize(image.height, image.width)
    return image.resize((w, h))


@EMBEDDERS.register("gme")
class GmeEmbedder(PieceTextEmbedder):
    """GME-Qwen2-VL embeddings (see the module docstring for the exact protocol).

    Args:
        model_path: Hub id or local folder of a GME checkpoint.
        instruction: system instruction of TEXT prompts (default GME's default, as the original LoVR run);
            images always get the default, as GME does for corpus items.
        max_length: prompt token limit (default the config's ``max_length``, 1800).
    """

    name = "gme"
    _LOADED = ("_model", "_processor")

    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str | None = "auto",
        revision: str | None = None,
        batch_size: int = 8,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        instruction: str | None = None,
        max_length: int | None = None,
    ) -> None:
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.instruction = instruction or DEFAULT_INSTRUCTION
        self._max_length = max_length

    def model_id(self) -> str:
        return model_ref(self.model_path, self.revision)

    # -- loading -------------------------------------------------------------------------------------

    def load(self) -> tuple[Any, Any]:
        if self._model is None:
            device, dtype = device_and_dtype(self.device, self.dtype)
            key = (self.model_path, self.revision, device, str(dtype))
            self._model, self._processor = self.shared(key, lambda: self._load_uncached(device, dtype))
        return self._model, self._processor

    def _load_uncached(self, device: str, dtype: Any) -> tuple[Any, Any]:
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        t0 = time.perf_counter()
        model = Qwen2VLForConditionalGeneration.from_pretrained(self.model_path, revision=self.revision,
                                                                dtype=dtype)
        model = model.to(device).eval()
        processor = AutoProcessor.from_pretrained(self.model_path, revision=self.revision)
        cfg = model.config
        min_px = int(getattr(cfg, "min_image_tokens", 256)) * 28 * 28
        max_px = int(getattr(cfg, "max_image_tokens", 1280)) * 28 * 28
        image_processor = processor.image_processor
        image_processor.size = {"shortest_edge": min_px, "longest_edge": max_px}
        for attr, value in (("min_pixels", min_px), ("max_pixels", max_px)):
            if hasattr(image_processor, attr):
                setattr(image_processor, attr, value)
        processor.tokenizer.padding_side = "right"  # GME pools at sum(mask) - 1
        logger.info("loaded GME %s on %s in %.1fs", model_label(self.model_id()), device, time.perf_counter() - t0)
        return model, processor

    @property
    def max_length(self) -> int:
        if self._max_length:
            return int(self._max_length)
        model, _ = self.load()
        return int(getattr(model.config, "max_length", 1800) or 1800)

    @property
    def max_text_tokens(self) -> int | None:
        """Caption tokens that fit one prompt (``max_length`` minus GME's template), or the explicit
        ``max_text_tokens`` (at most that: a longer piece would be cut by the prompt limit)."""
        _, processor = self.load()
        template = len(processor.tokenizer(gme_prompt("", self.instruction)).input_ids)
        return text_limit(self._limit, max(1, self.max_length - template), f"{self.model_id()} prompts")

    # -- forward -------------------------------------------------------------------------------------

    def _embed(self, prompts: list[str], images: list[Any] | None) -> np.ndarray:
        """GME's forward on one batch: placeholders <- vision features, decoder on 1-D positions, last token."""
        import torch

        model, processor = self.load()
        inputs = processor(text=prompts, images=images, padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt")
        inputs = to_model(inputs, model)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        base = model.model
        with torch.inference_mode():
            embeds = base.get_input_embeddings()(ids)
            if images:
                feats = base.get_image_features(pixel_values=inputs["pixel_values"],
                                                image_grid_thw=inputs["image_grid_thw"]).pooler_output
                feats = torch.cat(list(feats), dim=0) if isinstance(feats, (tuple, list)) else feats
                slots = ids == model.config.image_token_id
                if int(slots.sum()) != feats.shape[0]:
                    raise ValueError(f"{int(slots.sum())} image tokens for {feats.shape[0]} image features "
                                     "(a prompt was truncated into its image?)")
                embeds = embeds.masked_scatter(slots.unsqueeze(-1), feats.to(embeds.dtype))
            n, length = ids.shape
            positions = torch.arange(length, device=ids.device).view(1, 1, -1).expand(3, n, -1)
            hidden = base.language_model(inputs_embeds=embeds, attention_mask=mask,
                                         position_ids=positions).last_hidden_state
            last = mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(n, device=hidden.device), last]
        return l2_normalize(pooled.float().cpu().numpy())

    # -- text (truncate: the processor cuts the whole prompt at max_length, as GME does) ----------------

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        return encode_batches(texts, self.batch_size,
                              lambda b: self._embed([gme_prompt(t, self.instruction) for t in b], None),
                              lambda: self.dim)

    def _text_pieces(self, text: str) -> list[str]:
        _, processor = self.load()
        return hf_pieces(processor.tokenizer, int(self.max_text_tokens or 1))(text)

    # -- frames --------------------------------------------------------------------------------------

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        prompt = gme_prompt(IMAGE_INPUT)  # corpus items: always GME's default instruction
        return encode_batches(frames, self.batch_size,
                              lambda b: self._embed([prompt] * len(b), [fetch_image(f) for f in b]),
                              lambda: self.dim)


register_family(Family(
    name="gme", backend="gme", patterns=(r"gme-qwen2-vl", r"(^|/)gme[-_]"), priority=2,
    video_input=FRAMES, original_interval=None, interval=30, original_bgr=True,
    text="GME chat prompt, default instruction 'You are a helpful assistant.', prompt truncated at 1800 "
         "tokens (config max_length)",
    pooling="last non-padding token's final hidden state (decoder on 1-D positions), L2-normalised; frames: "
            "mean of normalised frame embeddings, re-normalised",
    precision="original float16; lovr_hf: the --dtype (auto: bf16 on GPU)", original_dtype="float16",
    hub_ids=(DEFAULT_MODEL, "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"),
    notes="images: smart_resize to multiples of 28, then 256..1280 merged tokens (min/max_image_tokens); "
          "transformers Qwen2-VL, no remote code",
))
