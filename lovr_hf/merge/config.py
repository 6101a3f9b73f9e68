"""What a merge run computes (:class:`MergeConfig`) and the LLM it asks (:func:`make_llm`).

Shared by the three merge stages and the original JSONL mode; :func:`llm_identity` names the LLM in the
stages' fingerprints (a model or server change redoes the merge, a timeout or worker count does not).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from lovr_hf.backends.base import LLMS, ChatLLM, GenerationParams
from lovr_hf.backends.llms import DEFAULT_API_MODEL
from lovr_hf.merge.clusters import DEFAULT_CLUSTER_SIZE


@dataclasses.dataclass
class MergeConfig:
    llm: str = "openai"  # openai | transformers | dummy | module:Class
    api_model: str = DEFAULT_API_MODEL
    api_base: str | None = None  # also OPENAI_BASE_URL
    model_path: str | None = None  # transformers: Hub id, folder, .gguf, or "smollm2"
    gguf_file: str | None = None
    temperature: float = 0.5
    max_new_tokens: int = 1024
    video_max_new_tokens: int = 4096
    cluster_size: int = DEFAULT_CLUSTER_SIZE
    video_captions: bool = True
    integrate_mode: str = "sequential"  # sequential | hierarchical
    theme: bool = False
    max_context_tokens: int | None = None  # None: what the backend reports
    seed: int | None = None
    # runtime only
    num_workers: int = 8
    timeout: float = 300.0
    max_retries: int = 3
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    RUNTIME: ClassVar[tuple[str, ...]] = ("num_workers", "timeout", "max_retries", "api_base")

    def params(self, video: bool = False) -> GenerationParams:
        return GenerationParams(temperature=self.temperature, top_p=1.0, repetition_penalty=1.0,
                                max_new_tokens=self.video_max_new_tokens if video else self.max_new_tokens,
                                do_sample=self.temperature > 0, seed=self.seed)


def make_llm(cfg: MergeConfig) -> ChatLLM:
    opts: dict[str, Any] = dict(cfg.backend_options)
    if cfg.llm == "openai":
        opts.update(api_model=cfg.api_model, api_base=cfg.api_base, num_workers=cfg.num_workers,
                    timeout=cfg.timeout, max_retries=cfg.max_retries)
    elif cfg.llm == "transformers":
        opts.update(model_path=cfg.model_path, gguf_file=cfg.gguf_file)
    elif ":" in cfg.llm:
        opts.setdefault("model_path", cfg.model_path)
    return LLMS.create(cfg.llm, **opts)


def llm_identity(cfg: MergeConfig) -> str:
    if cfg.llm == "openai":
        return f"openai:{cfg.api_model}"
    if cfg.llm == "transformers":
        return f"transformers:{cfg.model_path}:{cfg.gguf_file or ''}"
    if ":" in cfg.llm:
        return f"{cfg.llm}:{cfg.model_path or ''}"
    return cfg.llm
