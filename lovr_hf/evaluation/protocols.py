"""The evaluation protocols, and the channel swap the ``original`` protocol applies to frames.

``lovr`` (default): the original LoVR evaluation's effective behaviour with its accidents fixed (RGB
frames, failed clips reported). ``original``: what the original per-family scripts computed, accidents
included, so published numbers can be reproduced; docs/evaluation.md lists every difference.

Every released frame-based script of the original feeds ``Image.fromarray(frame[:, :, ::-1])`` on
decord's RGB frames (its comment says "BGR -> RGB", but decord already returns RGB), so the published
numbers were computed on R/B-swapped frames. Under ``original`` the embedder of such a family is wrapped
in :class:`ChannelSwapEmbedder`, which swaps the channels of every frame before the model sees them:
the stages (decoding, sampling, pooling) stay exactly as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import Embedder


def swap_channels(frames: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB <-> BGR, contiguous (a negative-stride view would not go through ``torch.from_numpy``)."""
    arr = np.asarray(frames)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames [..., H, W, 3], got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., ::-1])


def _from_inner(attr: str) -> Any:
    """A read-only attribute answered by the wrapped embedder: the Embedder ABC declares each capability with a
    default, which :meth:`ChannelSwapEmbedder.__getattr__` would never be asked for."""
    return property(lambda self: getattr(self._inner, attr), doc=f"the wrapped embedder's ``{attr}``")


class ChannelSwapEmbedder(Embedder):
    """An embedder whose frames arrive R/B-swapped (the original scripts' ``frame[:, :, ::-1]``).

    Delegates everything else to the wrapped embedder (text, files, ids, limits, adapter-specific helpers
    such as ``text_chunk_ids``). Use :func:`wrap_channel_swap`: it picks :class:`_ChannelSwapVideoEmbedder`
    for embedders with a native video tower, so the stage's "does it have ``embed_video``?" test still
    reads the wrapped embedder's truth.
    """

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner

    @property
    def inner(self) -> Embedder:
        return self._inner

    # -- what the stages read from the Embedder interface: the wrapped embedder's values -----------------
    name = _from_inner("name")
    max_text_tokens = _from_inner("max_text_tokens")
    video_input = _from_inner("video_input")
    video_frames = _from_inner("video_frames")
    decode_size = _from_inner("decode_size")
    requires_remote_code = _from_inner("requires_remote_code")
    original_oracle_frame = _from_inner("original_oracle_frame")
    original_revision = _from_inner("original_revision")

    def text_chunk_ids(self, text: str) -> list[list[int]] | None:
        return self._inner.text_chunk_ids(text)

    def model_id(self) -> str:
        return self._inner.model_id()

    def load(self) -> Any:  # declared on Backend, so __getattr__ would never be asked: delegate explicitly
        return self._inner.load()

    def check_server(self, what: str = "model") -> None:
        self._inner.check_server(what)

    def embed_text(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> np.ndarray:
        return self._inner.embed_text(texts, *args, **kwargs)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        return self._inner.embed_frames(swap_channels(frames))

    def embed_video_files(self, groups: Sequence[Sequence[str]]) -> np.ndarray | None:
        return self._inner.embed_video_files(groups)  # files are decoded by the model's own code: untouched

    # -- anything else (dim, family-specific hooks) -------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":  # unpickling looks these up before _inner exists
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"ChannelSwapEmbedder({self._inner!r})"


class _ChannelSwapVideoEmbedder(ChannelSwapEmbedder):
    """:class:`ChannelSwapEmbedder` for an embedder with a native video tower (``embed_video``)."""

    def embed_video(self, frames: np.ndarray) -> np.ndarray | None:
        return self._inner.embed_video(swap_channels(frames))


def has_native_video(embedder: Embedder) -> bool:
    """The stage's test: the class overrides :meth:`Embedder.embed_video`."""
    return type(embedder).embed_video is not Embedder.embed_video


def wrap_channel_swap(embedder: Embedder) -> ChannelSwapEmbedder:
    """Wrap ``embedder`` so every frame it receives is R/B-swapped (idempotent for an already wrapped one)."""
    if isinstance(embedder, ChannelSwapEmbedder):
        return embedder
    cls = _ChannelSwapVideoEmbedder if has_native_video(embedder) else ChannelSwapEmbedder
    return cls(embedder)
