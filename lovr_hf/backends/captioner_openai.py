"""``openai`` Captioner: clip frames as base64 JPEG images to any OpenAI-compatible VLM endpoint.

Works with vLLM serve / TGI / llama.cpp server hosting a Qwen-VL model, or with hosted multimodal APIs.
All frames of a clip go in one user message (images first, then the text prompt, the order of the
original captioner's video-then-text message), one request per clip, ``num_workers`` in flight.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence

import numpy as np

from lovr_hf.backends.base import CAPTIONERS, Captioner, GenerationParams
from lovr_hf.backends.openai_client import ClientStats, OpenAIChatClient
from lovr_hf.prompts import caption_prompt

logger = logging.getLogger(__name__)

DEFAULT_API_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"  # the name a vLLM server of the default model uses


def encode_jpeg(frame: np.ndarray, quality: int = 90, max_side: int | None = None) -> str:
    """One uint8 [H, W, 3] frame as a ``data:image/jpeg;base64,...`` URL (downscaled to ``max_side``)."""
    from PIL import Image

    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}")
    img = Image.fromarray(frame, "RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@CAPTIONERS.register("openai")
class OpenAICaptioner(Captioner):
    """Caption clips through an OpenAI-compatible multimodal chat endpoint.

    A clip whose request fails after all retries gets an empty caption (callers treat empty output as a
    failure of that clip) and its reason in ``last_errors`` (aligned with the last batch); only when
    every clip of a batch fails does :meth:`caption` raise, with the first reason, since then the
    endpoint itself is the problem. ``image_detail`` ("low"/"high"/"auto") is sent when set.
    """

    name = "openai"

    def __init__(
        self,
        api_model: str = DEFAULT_API_MODEL,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        num_workers: int = 8,
        jpeg_quality: int = 90,
        max_side: int | None = None,
        image_detail: str | None = None,
        **client_kwargs: object,
    ) -> None:
        self.api_model = api_model
        self.jpeg_quality = jpeg_quality
        self.max_side = max_side
        self.image_detail = image_detail
        self.client = OpenAIChatClient(api_model, api_base, api_key, timeout=timeout, max_retries=max_retries,
                                       num_workers=num_workers, **client_kwargs)  # type: ignore[arg-type]
        self.last_errors: list[str | None] = []

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    def model_id(self) -> str:
        return f"openai:{self.api_model}"

    def messages_for(self, frames: np.ndarray, prompt: dict[str, str]) -> list[dict[str, object]]:
        """The chat messages of one clip: optional system prompt, then all frames and the text prompt."""
        parts: list[dict[str, object]] = []
        for frame in frames:
            image_url: dict[str, str] = {"url": encode_jpeg(frame, self.jpeg_quality, self.max_side)}
            if self.image_detail:
                image_url["detail"] = self.image_detail
            parts.append({"type": "image_url", "image_url": image_url})
        parts.append({"type": "text", "text": prompt.get("user", "")})
        messages: list[dict[str, object]] = []
        if prompt.get("system"):
            messages.append({"role": "system", "content": prompt["system"]})
        messages.append({"role": "user", "content": parts})
        return messages

    def caption(self, batch: Sequence[np.ndarray], prompt: dict[str, str] | None = None,
                params: GenerationParams | None = None) -> list[str]:
        prompt = prompt or caption_prompt()
        params = params or GenerationParams()

        def one(frames: np.ndarray) -> str:
            if len(frames) == 0:
                raise ValueError("clip without frames")
            return self.client.complete(self.messages_for(np.asarray(frames), prompt), params)

        results = self.client.map(one, batch)
        texts: list[str] = []
        errors: list[str | None] = []
        for r in results:
            if isinstance(r, BaseException):
                texts.append("")
                errors.append(f"{type(r).__name__}: {r}")
            else:
                texts.append(r.strip())
                errors.append(None)
        self.last_errors = errors
        if batch and all(e is not None for e in errors):
            raise RuntimeError(f"all {len(batch)} clips of the batch failed; first: {errors[0]}")
        for i, e in enumerate(errors):
            if e is not None:
                logger.warning("clip %d of the batch failed: %s", i, e)
        return texts

    def close(self) -> None:
        self.client.close()
