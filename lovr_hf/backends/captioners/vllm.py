"""Captioning through vLLM's offline engine (what the original LoVR captioner used), same prompt and sampling.

vLLM is an optional extra (``pip install lovr_hf[vllm]``): this module imports without it, so the name
``vllm`` is always listed, and using the backend without vLLM raises an ImportError that says how to
install it. The prompt is rendered with the model's own chat template (``AutoProcessor``), exactly as
the transformers backend does. Each clip goes in as the original's request: ``multi_modal_data={"video":
frames}`` with the frames resized to ``qwen_vl_utils``' pixel budget (float [T, C, H, W], bicubic) and
``mm_processor_kwargs={"fps": [sampled fps]}`` (see :mod:`lovr_hf.backends.captioners.qwen_vision`), so Qwen-VL
models see the same pixels and the same time positions as in the original run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import CAPTIONERS, Captioner, GenerationParams
from lovr_hf.backends.captioners.common import DEFAULT_MODEL, OutOfMemory, per_clip
from lovr_hf.backends.captioners.qwen_vision import merge_factor, resize_video
from lovr_hf.backends.captioners.transformers import downscale_frames, is_oom
from lovr_hf.backends.model_cache import load_once
from lovr_hf.model_labels import model_label

PIXEL_BUDGETS = ("auto", "qwen", "none")

logger = logging.getLogger(__name__)

def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the vllm captioner needs vLLM: pip install 'lovr_hf[vllm]'") from exc
    return vllm


@CAPTIONERS.register("vllm")
class VLLMCaptioner(Captioner):
    """Video VLM through ``vllm.LLM`` (continuous batching, tensor parallelism).

    Args:
        model_path: Hub id or local folder (default ``Qwen/Qwen2.5-VL-7B-Instruct``).
        tensor_parallel_size: GPUs one engine shards the model over (the original's flag).
        dtype: vLLM dtype string (``"auto"``, ``"bfloat16"``, ``"float16"``).
        revision, trust_remote_code: passed to vLLM and to the processor (remote code only when asked).
        max_model_len: context length (must hold 64 frames of visual tokens plus 1024 new tokens).
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        pixel_budget: ``"qwen"`` resizes each clip as ``qwen_vl_utils`` did (per-frame budget from the frame
            count, multiples of patch x merge), ``"none"`` hands the decoded frames over as they are,
            ``"auto"`` (default) = ``"qwen"`` for Qwen2/2.5/3-VL processors, else ``"none"``.
        min_pixels / max_pixels / total_pixels: the per-clip budget overrides of ``qwen_vl_utils``
            (``min_pixels``/``max_pixels`` also go to the engine's processor so that it keeps the frames).
        downscale: ``(width, height)`` box frames are shrunk into first (the original's 426x240), or None.
        sampling_kwargs: further ``vllm.SamplingParams`` arguments.
        engine_kwargs: any further ``vllm.LLM`` keyword arguments.
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str | None = None,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_model_len: int | None = 32768,
        gpu_memory_utilization: float = 0.9,
        pixel_budget: str = "auto",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        total_pixels: int | None = None,
        downscale: tuple[int, int] | None = None,
        sampling_kwargs: dict[str, Any] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if pixel_budget not in PIXEL_BUDGETS:
            raise ValueError(f"pixel_budget must be one of {PIXEL_BUDGETS}, got {pixel_budget!r}")
        self.model_path = model_path or DEFAULT_MODEL
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.dtype = dtype
        self.revision = revision
        self.trust_remote_code = trust_remote_code
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.pixel_budget = pixel_budget
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.total_pixels = total_pixels
        self.downscale = tuple(downscale) if downscale else None
        self.sampling_extra = dict(sampling_kwargs or {})
        self.engine_kwargs = dict(engine_kwargs or {})
        self.last_stats: dict[str, Any] = {}
        self.last_prompt_text: str | None = None
        self._llm: Any = None
        self._processor: Any = None

    def model_id(self) -> str:
        return f"{self.model_path}@{self.revision}" if self.revision else self.model_path

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_llm"] = None  # an engine (and its GPU workers) never travels
        state["_processor"] = None
        state["last_stats"] = {}
        return state

    def mm_processor_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.min_pixels is not None:
            kwargs["min_pixels"] = self.min_pixels
        if self.max_pixels is not None:
            kwargs["max_pixels"] = self.max_pixels
        return kwargs

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.LLM`` (kept separate so they can be inspected and tested)."""
        args: dict[str, Any] = {
            "model": self.model_path,
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "trust_remote_code": self.trust_remote_code,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": 0, "video": 1},
        }
        if self.revision:
            args["revision"] = self.revision
        if self.max_model_len:
            args["max_model_len"] = self.max_model_len
        if self.mm_processor_kwargs():
            args["mm_processor_kwargs"] = self.mm_processor_kwargs()
        args.update(self.engine_kwargs)
        return args

    def load(self) -> tuple[Any, Any]:
        """Start (once per process) the vLLM engine and the processor used for the chat template."""
        if self._llm is not None:
            return self._llm, self._processor
        key = ("captioner", "vllm", *sorted((k, repr(v)) for k, v in self.engine_args().items()))

        def start() -> tuple[Any, Any]:
            vllm = _import_vllm()
            from transformers import AutoProcessor

            t0 = time.perf_counter()
            llm = vllm.LLM(**self.engine_args())
            processor = AutoProcessor.from_pretrained(
                self.model_path, revision=self.revision, trust_remote_code=self.trust_remote_code
            )
            logger.info("started vLLM engine for %s in %.1fs", model_label(self.model_id()), time.perf_counter() - t0)
            return llm, processor

        # the process-wide model cache: `lovr run` releases it after captioning (GPU memory for the next stages)
        self._llm, self._processor = load_once(key, start)
        return self._llm, self._processor

    def prompt_text(self, prompt: dict[str, str], processor: Any) -> str:
        """The chat-templated prompt with one video placeholder (same layout as the transformers backend)."""
        messages: list[dict[str, Any]] = []
        if prompt.get("system"):
            messages.append({"role": "system", "content": [{"type": "text", "text": prompt["system"]}]})
        messages.append(
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt.get("user", "")}]}
        )
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @staticmethod
    def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
        """``vllm.SamplingParams`` arguments; greedy (temperature 0) when ``do_sample`` is off."""
        kwargs: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "repetition_penalty": params.repetition_penalty,
            "temperature": params.temperature if params.do_sample else 0.0,
            "top_p": params.top_p if params.do_sample else 1.0,
            "top_k": -1,  # disabled, as in the original run (not the checkpoint's generation_config)
            "stop_token_ids": [],  # the original's: only the tokenizer's end of sequence stops
        }
        if params.seed is not None:
            kwargs["seed"] = params.seed
        kwargs.update(params.extra.get("sampling_kwargs", {}))
        return kwargs

    def budget_factor(self, processor: Any) -> int | None:
        """Token side in pixels when the qwen_vl_utils budget applies to this model, else None."""
        if self.pixel_budget == "none":
            return None
        factor = merge_factor(processor)
        if factor is None and self.pixel_budget == "qwen":
            raise ValueError(f"pixel_budget='qwen' needs a Qwen-VL processor, {self.model_path} has "
                             f"{type(processor).__name__}")
        return factor

    def video_input(self, frames: np.ndarray, factor: int | None) -> Any:
        """What one clip's ``multi_modal_data["video"]`` is: the budget-resized float frames, or the frames."""
        if self.downscale:
            frames = downscale_frames(frames, self.downscale)
        if factor is None:
            return frames
        return resize_video(frames, factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels,
                            total_pixels=self.total_pixels)

    def requests(self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams,
                 processor: Any) -> list[dict[str, Any]]:
        """The ``llm.generate`` inputs, one per clip, as the original built them."""
        text = self.prompt_text(prompt, processor)
        self.last_prompt_text = text
        factor = self.budget_factor(processor)
        fps_list = per_clip(params.extra.get("video_fps"), len(batch))
        out = []
        for frames, f in zip(batch, fps_list, strict=True):
            frames = np.asarray(frames)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
                raise ValueError(f"expected frames [n>0, H, W, 3], got shape {frames.shape}")
            req: dict[str, Any] = {"prompt": text, "multi_modal_data": {"video": self.video_input(frames, factor)}}
            if f is not None:
                req["mm_processor_kwargs"] = {"fps": [float(f)]}
            out.append(req)
        return out

    def caption(
        self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams
    ) -> list[str]:
        if not batch:
            return []
        vllm = _import_vllm()
        llm, processor = self.load()
        requests = self.requests(batch, prompt, params, processor)
        sampling = vllm.SamplingParams(**{**self.sampling_kwargs(params), **self.sampling_extra})
        t0 = time.perf_counter()
        try:
            outputs = llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        except Exception as exc:
            if is_oom(exc):
                raise OutOfMemory(f"vLLM out of memory on {len(requests)} clip(s)") from exc
            raise
        texts = [o.outputs[0].text.strip() for o in outputs]
        counts = [len(o.outputs[0].token_ids) for o in outputs]
        self.last_stats = {
            "clips": len(requests),
            "tokens_in": int(sum(len(o.prompt_token_ids or []) for o in outputs)),
            "tokens_out": int(sum(counts)),
            "tokens_out_per_clip": counts,
            "preprocess_s": 0.0,
            "generate_s": time.perf_counter() - t0,
        }
        return texts
