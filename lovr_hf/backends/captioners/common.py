"""What every captioner backend shares: the exceptions the caption stage tells apart, per-clip options.

:class:`OutOfMemory`: the batch did not fit; the stage retries with fewer clips, then fewer frames.
:class:`PartialBatchError`: some clips of a batch failed for their own reasons (a request that failed
after its retries, a refused clip) while others were captioned; it carries both, aligned with the batch,
so the stage records each clip's own error and keeps the others' captions without asking again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: the default captioner of the original LoVR pipeline (also the name a vLLM server of it answers to)
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
#: the original LoVR captioner's downscale helper size (width, height)
ORIGINAL_DOWNSCALE = (426, 240)


class OutOfMemory(RuntimeError):
    """A batch did not fit in accelerator memory; the caller may retry with fewer frames or clips."""


class PartialBatchError(RuntimeError):
    """Per-clip outcome of a batch in which at least one clip failed.

    ``texts[i]`` is clip i's caption ("" when it failed), ``errors[i]`` its failure (None when it was
    captioned). Raised rather than returning "" so that no caller mistakes a failure for an empty caption.
    """

    def __init__(self, texts: Sequence[str], errors: Sequence[str | None]) -> None:
        if len(texts) != len(errors):
            raise ValueError("texts and errors must be aligned")
        self.texts = list(texts)
        self.errors = list(errors)
        failed = [e for e in self.errors if e is not None]
        first = failed[0] if failed else "none"
        super().__init__(f"{len(failed)} of {len(self.errors)} clips failed; first: {first}")

    @property
    def all_failed(self) -> bool:
        return all(e is not None for e in self.errors)


def per_clip(value: Any, n: int, name: str = "video_fps") -> list[Any]:
    """A per-clip option (one value for all clips, or a list/tuple of one per clip) as a list of ``n``."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for {n} clips")
    return values
