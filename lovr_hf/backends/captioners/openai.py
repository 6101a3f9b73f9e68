"""``openai`` Captioner: clip frames as base64 JPEG to any OpenAI-compatible VLM endpoint.

One request per clip, ``num_workers`` in flight; all frames of a clip go in one user message before the
text prompt (the order of the original captioner's video-then-text message). How the frames travel
depends on the server kind (``api_server``):

* ``"openai"`` (default; the official API and servers that follow it strictly): one ``image_url`` part
  per frame, and only standard request fields, so the request is valid on api.openai.com.
* ``"vllm"`` (``vllm serve`` hosting a Qwen-VL model, as the original ran it offline): the clip is one
  ``video_url`` part (``data:video/jpeg;base64,<frame>,<frame>...``, vLLM's inline video of JPEG frames),
  so the model sees a video, not separate images; the per-clip sampled fps goes in ``mm_processor_kwargs``
  (as ``qwen_vl_utils`` passed it), and ``repetition_penalty`` / ``top_k`` as the original sampled.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence

import numpy as np

from lovr_hf.backends.base import CAPTIONERS, Captioner, GenerationParams
from lovr_hf.backends.captioners.common import DEFAULT_MODEL, PartialBatchError, per_clip
from lovr_hf.backends.openai_client import API_SERVERS, ClientStats, OpenAIChatClient
from lovr_hf.prompts import caption_prompt

logger = logging.getLogger(__name__)


def jpeg_base64(frame: np.ndarray, quality: int = 90, max_side: int | None = None) -> str:
    """One uint8 [H, W, 3] frame as base64 JPEG (downscaled so its longer side is at most ``max_side``)."""
    from PIL import Image

    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] frame, got {frame.dtype} {frame.shape}")
    img = Image.fromarray(frame, "RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def encode_jpeg(frame: np.ndarray, quality: int = 90, max_side: int | None = None) -> str:
    """One uint8 [H, W, 3] frame as a ``data:image/jpeg;base64,...`` URL (downscaled to ``max_side``)."""
    return "data:image/jpeg;base64," + jpeg_base64(frame, quality, max_side)


def encode_video_jpeg(frames: np.ndarray, quality: int = 90, max_side: int | None = None) -> str:
    """Frames [n, H, W, 3] as vLLM's inline video URL ``data:video/jpeg;base64,<frame>,<frame>...``."""
    return "data:video/jpeg;base64," + ",".join(jpeg_base64(f, quality, max_side) for f in frames)


@CAPTIONERS.register("openai")
class OpenAICaptioner(Captioner):
    """Caption clips through an OpenAI-compatible multimodal chat endpoint.

    When any clip of a batch fails after its retries, :meth:`caption` raises :class:`PartialBatchError`
    with every clip's caption or error (HTTP status and the server's message), so the stage records the
    real reason per clip and keeps the others; ``last_errors`` holds the same errors. ``api_server``:
    ``"openai"`` or ``"vllm"`` (see the module docstring). ``extra_body``: request fields sent as given
    (the user's explicit choice, any server). ``image_detail`` ("low"/"high"/"auto") is sent when set
    (image parts only). ``downscale``: a (width, height) box frames are shrunk into before encoding.
    """

    name = "openai"

    def __init__(
        self,
        api_model: str = DEFAULT_MODEL,  # the name a vLLM server of the default model uses
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 3,
        num_workers: int = 8,
        jpeg_quality: int = 90,
        max_side: int | None = None,
        image_detail: str | None = None,
        api_server: str = "openai",
        downscale: tuple[int, int] | None = None,
        **client_kwargs: object,
    ) -> None:
        if api_server not in API_SERVERS:
            raise ValueError(f"unknown api_server {api_server!r}; known: {', '.join(API_SERVERS)}")
        if image_detail not in (None, "low", "high", "auto"):
            raise ValueError(f"image_detail must be low, high or auto, got {image_detail!r}")
        self.api_model = api_model
        self.api_server = api_server
        self.jpeg_quality = jpeg_quality
        self.max_side = max_side
        self.image_detail = image_detail
        self.downscale = tuple(downscale) if downscale else None
        self.client = OpenAIChatClient(api_model, api_base, api_key, timeout=timeout, max_retries=max_retries,
                                       num_workers=num_workers, api_server=api_server,
                                       **client_kwargs)  # type: ignore[arg-type]
        self.last_errors: list[str | None] = []

    @property
    def stats(self) -> ClientStats:
        return self.client.stats

    def model_id(self) -> str:
        return f"openai:{self.api_model}"

    def check_server(self, what: str = "model") -> None:
        """The server answers and takes the key (one request before any row)."""
        self.client.check_endpoint(what)

    def messages_for(self, frames: np.ndarray, prompt: dict[str, str]) -> list[dict[str, object]]:
        """The chat messages of one clip: optional system prompt, then the frames and the text prompt."""
        if self.downscale:
            from lovr_hf.backends.captioners.transformers import downscale_frames

            frames = downscale_frames(frames, self.downscale)
        parts: list[dict[str, object]] = []
        if self.api_server == "vllm":
            parts.append({"type": "video_url",
                          "video_url": {"url": encode_video_jpeg(frames, self.jpeg_quality, self.max_side)}})
        else:
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
        fps = self._fps_list(params, len(batch))

        def one(item: tuple[np.ndarray, float | None]) -> str:
            frames, clip_fps = item
            if len(frames) == 0:
                raise ValueError("clip without frames")
            fields = {"mm_processor_kwargs": {"fps": [clip_fps]}} if clip_fps is not None else None
            return self.client.complete(self.messages_for(np.asarray(frames), prompt), params, fields)

        results = self.client.map(one, list(zip(batch, fps)))
        texts: list[str] = []
        errors: list[str | None] = []
        for r in results:
            if isinstance(r, BaseException):
                texts.append("")
                errors.append(str(r) if type(r).__name__ == "RequestFailed" else f"{type(r).__name__}: {r}")
            else:
                texts.append(r.strip())
                errors.append(None)
        self.last_errors = errors
        if any(e is not None for e in errors):
            raise PartialBatchError(texts, errors)
        return texts

    def _fps_list(self, params: GenerationParams, n: int) -> list[float | None]:
        """Per-clip sampled frame rate for a vLLM server (``params.extra["video_fps"]``); None otherwise."""
        fps = params.extra.get("video_fps") if self.api_server == "vllm" else None
        return [None if v is None else float(v) for v in per_clip(fps, n)]

    def close(self) -> None:
        self.client.close()
