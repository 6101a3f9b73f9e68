"""Which captioner a :class:`~lovr_hf.caption.config.CaptionConfig` builds, and the flags each backend refuses.

Every caption setting is fingerprinted, so a flag the chosen backend would silently ignore would make a
"different" run that computes the same captions (or, worse, look like it had an effect). Each built-in
backend therefore lists the settings it cannot use; a set one is refused before any work starts.
"""

from __future__ import annotations

import logging
from typing import Any

from lovr_hf.backends.base import CAPTIONERS, SCORERS, Captioner, QualityScorer
from lovr_hf.backends.captioners.common import ORIGINAL_DOWNSCALE
from lovr_hf.caption.config import CaptionConfig

logger = logging.getLogger(__name__)

#: flags a built-in backend cannot use: (config field, neutral value, flag, why). A set flag is refused,
#: since it would change the fingerprint without changing the captions.
_UNUSED: dict[str, tuple[tuple[str, Any, str, str], ...]] = {
    "transformers": (
        ("tensor_parallel_size", 1, "--tensor-parallel-size", "is a vLLM option (use device_map for big models)"),
        ("api_model", None, "--api-model", "is for --backend openai"),
        ("api_server", "openai", "--api-server", "is for --backend openai"),
    ),
    "vllm": (
        ("attn_implementation", None, "--attn-implementation", "is a transformers option (vLLM picks its own "
                                                               "attention backend)"),
        ("generate_kwargs", {}, "generate_kwargs", "are transformers generate() options (pass vLLM sampling "
                                                   "options as --backend-option sampling_kwargs={...})"),
        ("device", "auto", "--device", "is not a vLLM option (vLLM uses the visible GPUs: CUDA_VISIBLE_DEVICES)"),
        ("api_model", None, "--api-model", "is for --backend openai"),
        ("api_server", "openai", "--api-server", "is for --backend openai"),
    ),
    "openai": (
        ("dtype", "auto", "--dtype", "is chosen by the server"),
        ("attn_implementation", None, "--attn-implementation", "is chosen by the server"),
        ("revision", None, "--revision", "is chosen by the server (name the model with --api-model)"),
        ("trust_remote_code", False, "--trust-remote-code", "is chosen by the server"),
        ("tensor_parallel_size", 1, "--tensor-parallel-size", "is chosen by the server"),
        ("device", "auto", "--device", "is chosen by the server"),
        ("generate_kwargs", {}, "generate_kwargs", "are transformers generate() options (pass request fields as "
                                                   "--backend-option extra_body={...})"),
    ),
}


def check_backend_flags(cfg: CaptionConfig) -> None:
    """Refuse settings the chosen built-in backend would ignore (they are fingerprinted)."""
    bad = [f"{flag} {why}" for field, neutral, flag, why in _UNUSED.get(cfg.backend, ())
           if getattr(cfg, field) is not None and getattr(cfg, field) != neutral]
    if bad:
        raise ValueError(f"--backend {cfg.backend} does not use: " + "; ".join(bad))
    if cfg.backend == "openai":
        from lovr_hf.backends.openai_client import API_SERVERS

        if cfg.api_server not in API_SERVERS:
            raise ValueError(f"--api-server must be one of {', '.join(API_SERVERS)}, got {cfg.api_server!r}")
        if cfg.api_server == "openai" and cfg.repetition_penalty not in (None, 1.0):
            logger.info("the official Chat Completions API has no repetition_penalty: %s is not sent "
                        "(--api-server vllm sends it to a vLLM server)", cfg.repetition_penalty)


def make_captioner(cfg: CaptionConfig) -> Captioner:
    """Backend from the config (only the options that backend understands are passed)."""
    check_backend_flags(cfg)
    opts: dict[str, Any] = dict(cfg.backend_options)
    downscale = ORIGINAL_DOWNSCALE if cfg.downscale else None
    if cfg.backend == "transformers":
        opts.update(model_path=cfg.model_path, device=cfg.device, dtype=cfg.dtype, revision=cfg.revision,
                    attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
                    downscale=downscale)
    elif cfg.backend == "vllm":
        opts.update(model_path=cfg.model_path, tensor_parallel_size=cfg.tensor_parallel_size, dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code, revision=cfg.revision, downscale=downscale)
    elif cfg.backend == "openai":
        opts.update(api_model=cfg.api_model or cfg.model_path, api_base=cfg.api_base,
                    num_workers=cfg.api_concurrency, api_server=cfg.api_server, downscale=downscale)
    elif ":" in cfg.backend:
        opts.setdefault("model_path", cfg.model_path)
    return CAPTIONERS.create(cfg.backend, **opts)


def make_scorer(cfg: CaptionConfig) -> QualityScorer:
    if cfg.scorer == "llm":
        return SCORERS.create("llm", llm_spec=cfg.scorer_model or "openai")
    return SCORERS.create(cfg.scorer)
