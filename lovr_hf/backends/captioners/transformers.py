"""Captioning with any transformers video VLM, batched, left-padded.

Any ``AutoModelForImageTextToText`` checkpoint whose processor has a video processor and whose chat
template takes a video part: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (videos of any frame counts in one batch:
their processors flatten the patches), and families whose processors stack or pad frames, such as
SmolVLM2 and LLaVA-OneVision (a batch is then run as groups of clips with equal frame counts, so that
no clip is padded with frames it does not have and each prompt states its own frame count).

The model is loaded lazily, once per process and device (a module-level cache), and is never pickled:
``__getstate__`` drops it, so ``datasets.map`` can hash/ship the captioner cheaply and each worker or
``accelerate`` process loads its own copy on its own device.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import CAPTIONERS, Captioner, GenerationParams
from lovr_hf.backends.captioners.common import DEFAULT_MODEL, ORIGINAL_DOWNSCALE, OutOfMemory, per_clip
from lovr_hf.backends.captioners.qwen_vision import merge_factor
from lovr_hf.backends.devices import resolve_device, resolve_dtype
from lovr_hf.backends.model_cache import load_once
from lovr_hf.model_labels import model_label

logger = logging.getLogger(__name__)

def is_oom(exc: BaseException) -> bool:
    """True for accelerator/host out-of-memory errors (torch raises several kinds)."""
    import torch

    oom_types = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)
    if isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def downscale_frames(frames: np.ndarray, size: tuple[int, int] = ORIGINAL_DOWNSCALE) -> np.ndarray:
    """Shrink uint8 frames [n, H, W, 3] to fit inside ``size`` = (width, height), keeping aspect ratio.

    Frames already inside the box are returned unchanged (never upscaled). Antialiased bilinear resize,
    like the original's 426x240 helper, to cut visual tokens and decode/transfer cost.
    """
    import torch

    max_w, max_h = size
    h, w = frames.shape[1:3]
    scale = min(max_w / w, max_h / h)
    if scale >= 1.0:
        return frames
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(
        x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@CAPTIONERS.register("transformers")
class TransformersCaptioner(Captioner):
    """Video VLM through ``AutoModelForImageTextToText`` + ``AutoProcessor`` (chat template, video frames).

    Args:
        model_path: Hub id or local folder (default ``Qwen/Qwen2.5-VL-7B-Instruct``).
        device: ``"auto"`` (cuda:LOCAL_RANK, else cpu), ``"cpu"``, ``"cuda:1"``...
        dtype: ``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"``.
        attn_implementation: e.g. ``"sdpa"``, ``"flash_attention_2"``, ``"eager"`` (None = library default).
        revision: Hub revision (commit/branch/tag), recorded in :meth:`model_id` for fingerprints.
        trust_remote_code: only when the user asks for it.
        min_pixels / max_pixels: per-frame pixel budget for the video processor (None = processor default).
        downscale: ``(width, height)`` box frames are shrunk into before processing (the original used
            426x240), or None.
        video_fps: frame rate of the frames handed in (as sampled), used by models whose positions follow
            time (Qwen2.5-VL, Qwen3-VL); ``params.extra["video_fps"]`` (a number or one per clip) overrides
            it per call. The LoVR rule samples about one frame per second, hence the default 1.0.
        cap_pixels_per_frame: Qwen2-VL-family reference behaviour (bound a video's total pixels); passed
            only to video processors that know the option.
        device_map: passed to ``from_pretrained`` instead of moving the model to ``device`` (large models
            split over several GPUs).
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str | None = None,
        *,
        device: str = "auto",
        dtype: str | None = "auto",
        attn_implementation: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        downscale: tuple[int, int] | None = None,
        video_fps: float | None = 1.0,
        cap_pixels_per_frame: bool | None = True,
        device_map: str | dict[str, Any] | None = None,
    ) -> None:
        self.model_path = model_path or DEFAULT_MODEL
        self.device = device
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.downscale = tuple(downscale) if downscale else None
        self.video_fps = video_fps
        self.cap_pixels_per_frame = cap_pixels_per_frame
        self.device_map = device_map
        self.last_stats: dict[str, Any] = {}
        self.last_prompt_text: str | None = None
        self._model: Any = None
        self._processor: Any = None

    # -- identity / pickling -------------------------------------------------------------------------

    def model_id(self) -> str:
        return f"{self.model_path}@{self.revision}" if self.revision else self.model_path

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None  # never ship weights to workers; each process loads its own copy
        state["_processor"] = None
        state["last_stats"] = {}
        return state

    # -- loading -------------------------------------------------------------------------------------

    def load(self) -> tuple[Any, Any]:
        """Load (or fetch from the per-process cache) the model and processor; returns both."""
        if self._model is not None:
            return self._model, self._processor
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        key = ("captioner", self.model_path, self.revision, device, str(dtype), self.attn_implementation,
               self.trust_remote_code, repr(self.device_map))
        self._model, self._processor = load_once(key, lambda: self._load_uncached(device, dtype))
        return self._model, self._processor

    def _load_uncached(self, device: str, dtype: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": self.trust_remote_code}
        if self.revision:
            kwargs["revision"] = self.revision
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.device_map is not None:
            kwargs["device_map"] = self.device_map
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, **kwargs)
        if self.device_map is None:
            model = model.to(device)
        model.eval()
        processor = AutoProcessor.from_pretrained(
            self.model_path, revision=self.revision, trust_remote_code=self.trust_remote_code
        )
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "video_processor", None) is None:
            raise ValueError(
                f"{self.model_path}: processor has no tokenizer/video processor; not a video VLM"
            )
        tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        logger.info(
            "loaded captioner %s on %s (%s) in %.1fs",
            model_label(self.model_id()),
            device,
            dtype,
            time.perf_counter() - t0,
        )
        return model, processor

    # -- captioning ----------------------------------------------------------------------------------

    def build_messages(self, prompt: dict[str, str]) -> list[dict[str, Any]]:
        """System + user turn with the video before the instruction (the original prompt layout)."""
        messages: list[dict[str, Any]] = []
        if prompt.get("system"):
            messages.append({"role": "system", "content": [{"type": "text", "text": prompt["system"]}]})
        messages.append(
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt.get("user", "")}]}
        )
        return messages

    @staticmethod
    def frame_groups(videos: Sequence[np.ndarray], processor: Any) -> list[list[int]]:
        """Clips that go through one ``generate`` call: all of them for Qwen-VL processors (ragged videos
        batch natively), else groups of equal frame counts (stacking/padding processors)."""
        if merge_factor(processor) is not None:
            return [list(range(len(videos)))]
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(videos):
            groups.setdefault(len(v), []).append(i)
        return list(groups.values())

    def _video_kwargs(self, batch: Sequence[np.ndarray], params: GenerationParams, processor: Any) -> dict:
        vp = processor.video_processor
        kwargs: dict[str, Any] = {"do_sample_frames": False}  # frames are already sampled by the LoVR rule
        if (self.min_pixels is not None or self.max_pixels is not None) and merge_factor(processor) is None:
            raise ValueError(f"min_pixels/max_pixels are Qwen-VL pixel budgets; {type(processor).__name__} sizes "
                             "frames its own way (see its video processor's size)")
        if self.min_pixels is not None or self.max_pixels is not None:
            size = dict(vp.size) if getattr(vp, "size", None) else {}
            if self.min_pixels is not None:
                size["shortest_edge"] = self.min_pixels
            if self.max_pixels is not None:
                size["longest_edge"] = self.max_pixels
            kwargs["size"] = size
        if self.cap_pixels_per_frame is not None and hasattr(type(vp), "cap_pixels_per_frame"):
            kwargs["cap_pixels_per_frame"] = self.cap_pixels_per_frame
        fps = params.extra.get("video_fps", self.video_fps)
        if fps is not None:  # (None in params.extra: no rate known, the processor's default applies)
            fps_list = per_clip(fps, len(batch))
            kwargs["video_metadata"] = [
                {"fps": float(f), "total_num_frames": len(v), "frames_indices": list(range(len(v)))}
                for f, v in zip(fps_list, batch, strict=True)
            ]
        return kwargs

    def _generate_kwargs(self, params: GenerationParams, tokenizer: Any, model: Any) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.do_sample,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if params.do_sample:
            # top_k off: only the original's knobs shape sampling, whatever a checkpoint's
            # generation_config sets (the original vLLM run had no top-k)
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:  # greedy: neutralise sampling knobs a checkpoint's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        kwargs.update(params.extra.get("generate_kwargs", {}))
        return kwargs

    def caption(
        self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams
    ) -> list[str]:
        """One caption per clip of ``batch`` (uint8 [n, H, W, 3] each); raises :class:`OutOfMemory`."""
        if not batch:
            return []
        model, processor = self.load()
        videos = [np.asarray(v) for v in batch]
        for v in videos:
            if v.ndim != 4 or v.shape[-1] != 3 or v.shape[0] == 0:
                raise ValueError(f"expected frames [n>0, H, W, 3], got shape {v.shape}")
        if self.downscale:
            videos = [downscale_frames(v, self.downscale) for v in videos]
        text = processor.apply_chat_template(
            self.build_messages(prompt), tokenize=False, add_generation_prompt=True
        )
        self.last_prompt_text = text
        fps = params.extra.get("video_fps", self.video_fps)
        fps_list = per_clip(fps, len(videos))
        texts: list[str] = [""] * len(videos)
        counts: list[int] = [0] * len(videos)
        stats = {"tokens_in": 0, "preprocess_s": 0.0, "generate_s": 0.0}
        for group in self.frame_groups(videos, processor):
            sub = [videos[i] for i in group]
            sub_fps = [fps_list[i] for i in group] if fps is not None else None  # None: the processor's default
            sub_params = dataclasses.replace(params, extra={**params.extra, "video_fps": sub_fps})
            for i, (t, c) in zip(group, self._generate(sub, text, sub_params, model, processor, stats)):
                texts[i], counts[i] = t, c
        self.last_stats = {"clips": len(videos), "tokens_in": int(stats["tokens_in"]), "tokens_out": int(sum(counts)),
                           "tokens_out_per_clip": counts, "preprocess_s": stats["preprocess_s"],
                           "generate_s": stats["generate_s"]}
        return texts

    def _generate(self, videos: list[np.ndarray], text: str, params: GenerationParams, model: Any, processor: Any,
                  stats: dict[str, float]) -> list[tuple[str, int]]:
        """One processor call and one ``generate`` for ``videos``: (caption, tokens generated) per clip."""
        import torch

        tokenizer = processor.tokenizer
        t0 = time.perf_counter()
        try:
            inputs = processor(
                text=[text] * len(videos),
                videos=videos,
                padding=True,
                padding_side="left",
                return_tensors="pt",
                videos_kwargs=self._video_kwargs(videos, params, processor),
            )
            inputs = inputs.to(model.device)
            for k, v in inputs.items():  # pixels follow the model's dtype (bf16 on GPU); timings stay fp32
                if k.startswith("pixel_values") and torch.is_tensor(v) and v.is_floating_point():
                    inputs[k] = v.to(model.dtype)
            t1 = time.perf_counter()
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                out = model.generate(**inputs, **self._generate_kwargs(params, tokenizer, model))
        except Exception as exc:
            if is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                sizes = [tuple(v.shape) for v in videos]
                raise OutOfMemory(
                    f"out of memory captioning {len(videos)} clip(s) of shapes {sizes}"
                ) from exc
            raise
        t2 = time.perf_counter()
        prompt_len = inputs["input_ids"].shape[1]
        generated = out[:, prompt_len:].cpu()
        stop_ids = self._stop_ids(model, tokenizer)
        counts = [_count_until_stop(row.tolist(), stop_ids) for row in generated]
        texts = [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
        stats["tokens_in"] += int(inputs["attention_mask"].sum())
        stats["preprocess_s"] += t1 - t0
        stats["generate_s"] += t2 - t1
        return list(zip(texts, counts))

    @staticmethod
    def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        eos = getattr(model.generation_config, "eos_token_id", None)
        for value in (eos, tokenizer.eos_token_id, tokenizer.pad_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(x) for x in value)
        return ids


def _count_until_stop(tokens: list[int], stop_ids: set[int]) -> int:
    """Generated tokens up to and including the first stop token (the rest is padding)."""
    for i, t in enumerate(tokens):
        if t in stop_ids:
            return i + 1
    return len(tokens)
