"""Shared fixtures. Everything runs offline: models are built locally, videos are generated."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



@contextlib.contextmanager
def killed_on_call(monkeypatch: pytest.MonkeyPatch, cls: type, n: int = 2, method: str = "process") -> Iterator[None]:
    """Make ``cls.method`` raise KeyboardInterrupt (a simulated kill) on its ``n``-th call; expect the
    run inside the block to die of it; restore the real method afterwards."""
    real = getattr(cls, method)
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, dying)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(cls, method, real)


EVAL_FPS = 10  # frame rate of ``eval_source``


@pytest.fixture(scope="session")
def eval_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated video with five scenes of 45, 20, 50, 60 and 55 frames at 10 fps: the source of the
    clips in the embedding and evaluation tests (tests/test_embed.py ``make_repo`` lays them out)."""
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec

    p = tmp_path_factory.mktemp("eval_src") / "src.mp4"
    make_video(p, [SceneSpec(45), SceneSpec(20), SceneSpec(50), SceneSpec(60), SceneSpec(55)], 64, 48, EVAL_FPS,
               seed=4)
    return p


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny random CLIP and SigLIP folders, built once per session."""
    from lovr_hf.tiny import build_tiny_clip, build_tiny_siglip

    root = tmp_path_factory.getbasetemp() / "tiny_models"  # shared with the other tiny-model tests
    return {"clip": build_tiny_clip(root / "clip"), "siglip": build_tiny_siglip(root / "siglip")}


@pytest.fixture(scope="session")
def scene_frames(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Real decoded frames for the embedder tests: 3 from each of two visually different scenes."""
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec
    from lovr_hf.video.reader import read_frames

    path = tmp_path_factory.mktemp("embed_video") / "scenes.mp4"
    make_video(path, [SceneSpec(12), SceneSpec(12)], width=96, height=64, fps=24, seed=2)
    return read_frames(path, [0, 5, 10, 12, 17, 22])
