"""Where a local model runs and in which dtype: one rule for captioners, LLMs and embedders.

Every backend that loads torch weights resolves ``--device auto`` / ``--dtype auto`` here, so that one
machine gets the same placement whichever stage loads a model (one GPU per ``accelerate`` rank).
"""

from __future__ import annotations

import os
from typing import Any


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"`` -> ``cuda:<LOCAL_RANK>`` when CUDA is available (one GPU per process), else ``cpu``."""
    import torch

    if device not in (None, "", "auto"):
        return str(device)
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return f"cuda:{local_rank % max(1, torch.cuda.device_count())}"
    return "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """``"auto"`` -> bfloat16 on a GPU that supports it (float16 otherwise), float32 on CPU."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    aliases = {
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "fp32": "float32",
        "float": "float32",
    }
    value = getattr(torch, aliases.get(name, name), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value
