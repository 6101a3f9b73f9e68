"""Files that adapters read: weight files, and the groups of video files of ``Embedder.embed_video_files``.

One reader for checkpoints so that no adapter unpickles on its own: safetensors; a ``.bin`` / ``.pt`` state dict
only with the user's explicit consent, through ``torch.load(weights_only=True)`` (tensors only; the one
``torch.load`` of the project). One parser
for file groups so that every files-based adapter reads a clip given as a frame range the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def load_weights(path: str | Path, *, allow_torch_format: bool = False) -> dict[str, Any]:
    """A state dict from ``.safetensors``; a ``.bin`` / ``.pt`` file (PyTorch's pickle-based format) only when
    the caller was explicitly allowed to (``allow_torch_format``: the user passed ``--trust-remote-code`` for
    a model that ships no safetensors), and then read with ``weights_only=True`` (PyTorch's restricted loader:
    tensors and plain containers only, no pickled code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if not allow_torch_format:
        raise ValueError(
            f"{path} is a PyTorch pickle-format checkpoint; lovr_hf reads safetensors only unless asked: pass "
            "--trust-remote-code (or convert it: safetensors.torch.save_file(state_dict, 'model.safetensors'))")
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
