"""Files that adapters read: weight files, and the groups of video files of ``Embedder.embed_video_files``.

One reader for checkpoints so that no adapter ever unpickles: safetensors, or a ``.bin`` / ``.pt`` state dict
through ``torch.load(weights_only=True)`` (tensors only; the one ``torch.load`` of the project). One parser
for file groups so that every files-based adapter reads a clip given as a frame range the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def load_weights(path: str | Path) -> dict[str, Any]:
    """A state dict from ``.safetensors``, or from a ``.bin`` / ``.pt`` read with ``weights_only=True`` (tensors
    only: no pickled code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def segments_of(group: Sequence[Any]) -> list[tuple[str, int, int | None]]:
    """``(path, first frame, frame count or None = to the end)`` per item of a group: an item is a file path, or a
    mapping with ``path`` (+ ``frame_offset`` / ``num_frames``) for a clip that is a frame range of its source."""
    out = []
    for item in group:
        if isinstance(item, Mapping):
            n = item.get("num_frames")
            out.append((str(item["path"]), int(item.get("frame_offset") or 0), None if n is None else int(n)))
        else:
            out.append((str(item), 0, None))
    return out
