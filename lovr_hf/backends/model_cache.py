"""One loaded copy of each model per process, shared by stages, retries and threads.

Backends are cheap, picklable objects that load weights lazily; several of them (a stage's captioner and
its quality-refinement retries, the text and video embed stages, the merge and theme LLM calls) ask for
the same weights in one process. ``load_once`` hands them the same objects instead of loading twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_LOADED: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def load_once(key: tuple[Any, ...], loader: Callable[[], T]) -> T:
    """``loader()`` the first time ``key`` is asked for in this process, the same object afterwards.

    ``key`` must hold everything that changes the loaded objects (kind, model, revision, device, dtype, ...).
    Loading runs under one lock, so two threads asking at once load once; a loader that raises caches
    nothing.
    """
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = loader()
        return _LOADED[key]


def release(match: Callable[[tuple[Any, ...]], bool] | None = None) -> int:
    """Forget the cached objects whose key ``match`` accepts (all by default); returns how many.

    For a process that runs several models one after the other (``lovr eval --model A --model B``): once
    nothing else holds a model, releasing it here lets its memory go (CUDA's cache is emptied too)."""
    with _LOCK:
        keys = [k for k in _LOADED if match is None or match(k)]
        for k in keys:
            del _LOADED[k]
    if keys:
        import gc
        import sys

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return len(keys)


def release_kinds(*kinds: str) -> int:
    """:func:`release` of every cached object of these kinds (the first element of its key: ``captioner``,
    ``causal_lm``, ``embedder``), logged: what a multi-stage or multi-model run calls between its parts."""
    n = release(lambda k: bool(k) and k[0] in kinds)
    if n:
        logging.getLogger(__name__).info("released %d loaded model(s) (%s) from memory", n, ", ".join(kinds))
    return n
