"""Shared fixtures. Everything runs offline: models are built locally, videos are generated."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
