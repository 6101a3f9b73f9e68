"""Plug-in embedders (``--backend _embed_helpers:Class``) that declare the visual stage's contracts -- a video
tower, a files reader, the oracle frame choice, a decode size -- and record what the stage handed them.

They build on the dummy embedder, so their vectors are real functions of the pixels they get."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.standins.testing import DummyEmbedder
from lovr_hf.video.reader import iter_frames


class NativeTower(DummyEmbedder):
    """A video tower on 3 frames: ``embed_video`` = dummy features of the frames' pixel mean."""

    video_frames = 3

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.videos: list[np.ndarray] = []

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        self.videos.append(np.array(frames))
        return self.embed_frames(frames.mean(axis=0, keepdims=True).astype(np.uint8))[0]


class FilesModel(DummyEmbedder):
    """Reads clip files itself (``video_input = "files"``): a group = the mean dummy embedding of every frame
    of its files, decoded here; records the groups and each file's frames while the files exist."""

    video_input = "files"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.groups: list[list[str]] = []
        self.file_frames: dict[str, np.ndarray] = {}

    def embed_video_files(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
        out = []
        for g in groups:
            self.groups.append(list(g))
            frames = []
            for path in g:
                if path not in self.file_frames:
                    self.file_frames[path] = np.stack([f for _, f in iter_frames(path)])
                frames.append(self.file_frames[path])
            out.append(self.embed_frames(np.concatenate(frames)).mean(axis=0))
        return np.stack(out)


class OracleModel(DummyEmbedder):
    """Declares the MM-Embed contract: under ``--protocol original`` the stage picks the oracle frame."""

    original_oracle_frame = True


class SmallFrames(DummyEmbedder):
    """Asks for 32x24 frames (``decode_size``) and records the shapes it gets."""

    decode_size = (32, 24)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.shapes: set[tuple[int, ...]] = set()

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        self.shapes.add(tuple(np.asarray(frames).shape[1:]))
        return super().embed_frames(frames)


class BrokenTower(NativeTower):
    """A video tower whose forward always fails (a model failure, not a bad clip)."""

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        raise RuntimeError("tower exploded")
