"""What a caption run computes: :class:`CaptionConfig`, shared by the stage, the backend factory and the
original JSONL mode (its own module so that none of them imports another to reach it).

Every field that changes a caption is fingerprinted; ``RUNTIME`` fields (batching, decoding, device) are not.
The sampling and frame defaults come from one source each: :class:`lovr_hf.backends.base.GenerationParams`
(the original captioner's sampling) and :mod:`lovr_hf.video.frames` (its frame rule).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from lovr_hf.backends.base import GenerationParams
from lovr_hf.backends.captioners.common import DEFAULT_MODEL
from lovr_hf.prompts import caption_prompt, load_prompt_set
from lovr_hf.video.frames import CAPTION_MAX_FRAMES, CAPTION_MIN_FRAMES
from lovr_hf.video.prefetch import DEFAULT_PREFETCH_BYTES


@dataclasses.dataclass
class CaptionConfig:
    """Everything that changes a caption is fingerprinted; ``RUNTIME`` fields are not."""

    backend: str = "transformers"  # transformers | vllm | openai | dummy | module:Class
    model_path: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1  # vllm
    api_base: str | None = None  # openai: also OPENAI_BASE_URL
    api_model: str | None = None
    api_server: str = "openai"  # openai: the server kind (openai = official fields only | vllm = vLLM serve)
    prompt_file: str | None = None  # JSON/YAML {"system": ..., "user": ...} or a text file = user prompt
    # sampling and frame counts of the original captioner: one source each (GenerationParams, frames.py)
    temperature: float = GenerationParams.temperature
    top_p: float = GenerationParams.top_p
    repetition_penalty: float = GenerationParams.repetition_penalty
    max_new_tokens: int = GenerationParams.max_new_tokens
    do_sample: bool = GenerationParams.do_sample
    seed: int | None = None
    min_frames: int = CAPTION_MIN_FRAMES
    max_frames: int = CAPTION_MAX_FRAMES
    downscale: bool = False  # the original's 426x240 helper
    min_quality: float | None = None  # quality threshold θ (0-10); None = original single pass
    scorer: str = "heuristic"  # heuristic | llm
    scorer_model: str | None = None  # llm judge: an LLM backend spec, e.g. "openai:gpt-4o-mini"
    max_attempts: int = 3
    generate_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra model.generate() options
    # runtime only
    batch_size: int = 8
    decode_workers: int | None = None  # None: sized to the machine (lovr_hf.video.prefetch.auto_workers)
    prefetch_batches: int = 2
    prefetch_bytes: int = DEFAULT_PREFETCH_BYTES
    device: str = "auto"
    api_concurrency: int = 8
    decode_backend: str = "auto"
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    RUNTIME: ClassVar[tuple[str, ...]] = (
        "batch_size", "decode_workers", "prefetch_batches", "prefetch_bytes", "device", "api_concurrency",
        "decode_backend", "api_base",
    )

    def prompts(self) -> dict[str, str]:
        base = caption_prompt()
        return load_prompt_set(self.prompt_file, base) if self.prompt_file else base

    def params(self) -> GenerationParams:
        extra = {"generate_kwargs": dict(self.generate_kwargs)} if self.generate_kwargs else {}
        return GenerationParams(self.temperature, self.top_p, self.repetition_penalty, self.max_new_tokens,
                                self.do_sample, self.seed, extra)
