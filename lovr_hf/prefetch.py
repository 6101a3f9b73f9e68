"""Decode ahead of the model: a thread pool that runs a few units ahead of the one being processed.

PyAV and decord release the GIL while decoding, so threads overlap decoding with generation/encoding
in the same process (the model never pickles, nothing forks). Shared by the caption and embed stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Prefetcher:
    """Decodes clips in a thread pool, running ``depth`` clips ahead of the one being captioned."""

    def __init__(self, order: list[str], load: Callable[[str], Any], workers: int, depth: int) -> None:
        self.order = order
        self.pos = {k: i for i, k in enumerate(order)}
        self.load = load
        self.depth = depth
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") if workers > 0 else None
        self.futures: dict[str, Future[Any]] = {}
        self.wait_s = 0.0

    def get(self, keys: list[str]) -> list[Any]:
        if self.pool is None:
            t0 = time.perf_counter()
            out = [self.load(k) for k in keys]
            self.wait_s += time.perf_counter() - t0
            return out
        for k in keys:
            self._submit(k)
        last = max((self.pos.get(k, -1) for k in keys), default=-1)
        for k in self.order[last + 1 : last + 1 + self.depth]:
            self._submit(k)
        t0 = time.perf_counter()
        out = [self.futures.pop(k).result() for k in keys]
        self.wait_s += time.perf_counter() - t0
        return out

    def _submit(self, key: str) -> None:
        if key not in self.futures:
            assert self.pool is not None
            self.futures[key] = self.pool.submit(self.load, key)
