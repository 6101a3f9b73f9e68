"""Decode ahead of the model, bounded in bytes: the caption and embedding stages never wait on decoding
and never hold more decoded frames than a budget.

PyAV releases the GIL while it decodes and while swscale converts, so threads overlap decoding with the
model in the same process (the model is never pickled, nothing forks); measured against processes in
docs/benchmarks.md ("Decoding"). :class:`StreamPool` runs ordered tasks that each *stream* items (frames of
one source video, in decode order); the consumer reads a task's items as they are produced, so frames
reach the model while the rest of the video is still decoding, and a long video never has to fit in memory.

It bounds the bytes of results that are decoded but not yet taken by ``max_bytes``
(:data:`DEFAULT_PREFETCH_BYTES` unless given): work ahead stops when the budget is full. The item being
waited for is always admitted (the consumer can always make progress), so the true peak is the budget plus
one item per worker.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from lovr_hf.engine.cpu_budget import cpu_count

#: decoded-but-not-consumed bytes allowed by default: 2 GiB is ~340 RGB frames at 1920x1080 (6.2 MB each),
#: ~5 clips of 64 full-HD frames, and leaves room for a 7B model's activations and the OS on a 24 GB machine.
DEFAULT_PREFETCH_BYTES = 2 << 30
#: most decode workers the automatic rule picks (each decoder also runs FFmpeg's own frame threads)
MAX_AUTO_WORKERS = 8


def auto_workers(cpus: int | None = None) -> int:
    """Decode workers for this machine: half the CPUs (each FFmpeg decoder adds frame threads of its own),
    at least 2 so that one video decodes while the next is opened and indexed, at most
    :data:`MAX_AUTO_WORKERS`."""
    n = cpu_count() if cpus is None else max(1, int(cpus))
    return max(2, min(MAX_AUTO_WORKERS, n // 2))


def resolve_workers(value: int | str | None) -> int:
    """``None``/``"auto"``/negative -> :func:`auto_workers`; ``0`` -> decode inline (no threads)."""
    if value is None or value == "auto":
        return auto_workers()
    n = int(value)
    return auto_workers() if n < 0 else n


# ---------------------------------------------------------------------------------------------------------
# streaming tasks
# ---------------------------------------------------------------------------------------------------------

_END = object()


class _Task:
    __slots__ = ("make", "queue", "started", "finished", "error", "waiting", "taken")

    def __init__(self, make: Callable[[], Iterator[tuple[Any, int]]]) -> None:
        self.make = make
        self.queue: deque[tuple[Any, int]] = deque()
        self.started = False
        self.finished = False
        self.error: BaseException | None = None
        self.waiting = 0  # consumers blocked on this task
        self.taken = False  # the consumer read past its end


class StreamPool:
    """Ordered streaming tasks run by worker threads, ahead of the consumer, under a byte budget.

    ``add(key, make)`` registers a task: ``make()`` returns an iterator of ``(item, nbytes)`` and runs in a
    worker thread. ``items(key)`` yields the task's items in order as they are produced (it starts the
    task if no worker has yet). Tasks after the last one read are started ahead, in order, while fewer
    than ``workers`` run, at most ``depth`` ahead, and while the produced-but-unread bytes are under
    ``max_bytes``; a running task pauses when an item would overflow the budget, unless the consumer is
    waiting for that very item (so it never deadlocks) or nothing is buffered at all: the peak is the
    budget plus one item.
    An exception in a task is re-raised by ``items`` after the items produced before it.
    """

    def __init__(self, workers: int, max_bytes: int | None = None, depth: int | None = None) -> None:
        self.workers = max(1, int(workers))
        self.max_bytes = DEFAULT_PREFETCH_BYTES if max_bytes is None else int(max_bytes)
        self.depth = max(1, int(depth)) if depth is not None else 2 * self.workers
        self._tasks: dict[Hashable, _Task] = {}
        self._order: list[Hashable] = []
        self._pos: dict[Hashable, int] = {}
        self._read: set[Hashable] = set()  # tasks read (or abandoned) by the consumer
        self._cond = threading.Condition()
        self._buffered = 0
        self._running = 0
        self._stop = False
        self._cursor = -1  # position of the last task the consumer read from
        self.wait_s = 0.0
        self.peak_bytes = 0
        weakref.finalize(self, StreamPool._shutdown, self._cond, self._tasks)

    # ---- registration ----------------------------------------------------------------------------------
    def add(self, key: Hashable, make: Callable[[], Iterator[tuple[Any, int]]]) -> None:
        with self._cond:
            if key in self._tasks or key in self._read:
                raise KeyError(f"task {key!r} already added")
            self._tasks[key] = _Task(make)
            self._pos[key] = len(self._order)
            self._order.append(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._tasks or key in self._read

    def was_read(self, key: Hashable) -> bool:
        return key in self._read

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    # ---- consuming -------------------------------------------------------------------------------------
    def items(self, key: Hashable) -> Iterator[Any]:
        """The items of task ``key`` in order (each task can be read once)."""
        with self._cond:
            task = self._tasks.get(key)
            if task is None or task.taken:
                if key in self._read:
                    raise RuntimeError(f"task {key!r} was already read")
                raise KeyError(f"no task {key!r}")
            self._cursor = max(self._cursor, self._pos[key])
            if not task.started:
                self._start(key, task)
            self._fill()
        try:
            while True:
                with self._cond:
                    t0 = time.perf_counter()
                    task.waiting += 1
                    self._cond.notify_all()  # a paused producer of this task may go on now
                    while not task.queue and not self._stop:
                        self._cond.wait()
                    task.waiting -= 1
                    self.wait_s += time.perf_counter() - t0
                    if self._stop:
                        raise RuntimeError("the decode pool was closed")
                    item, size = task.queue.popleft()
                    self._buffered -= size
                    self._cond.notify_all()
                    if item is _END:
                        task.taken = True
                        self._forget(key)
                        self._fill()
                        if task.error is not None:
                            raise task.error
                        return
                yield item
        finally:
            with self._cond:
                if not task.taken:  # the consumer stopped early: drop what is buffered, stop the producer
                    task.taken = True
                    self._buffered -= sum(s for _, s in task.queue)
                    task.queue.clear()
                    self._forget(key)
                    self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop = True
        StreamPool._shutdown(self._cond, self._tasks)

    @staticmethod
    def _shutdown(cond: threading.Condition, tasks: dict[Hashable, _Task]) -> None:
        with cond:
            for t in tasks.values():
                t.taken = True
                t.queue.clear()
            cond.notify_all()

    # ---- scheduling (under the lock) -------------------------------------------------------------------
    def _forget(self, key: Hashable) -> None:
        self._tasks.pop(key, None)
        self._read.add(key)

    def _fill(self) -> None:
        """Start tasks after the consumer's position while workers, depth and budget allow."""
        start = self._cursor + 1
        for key in self._order[start : start + self.depth]:
            if self._running >= self.workers or self._buffered >= self.max_bytes:
                return
            task = self._tasks.get(key)
            if task is not None and not task.started:
                self._start(key, task)

    def _start(self, key: Hashable, task: _Task) -> None:
        task.started = True
        self._running += 1
        threading.Thread(target=self._run, args=(key, task), name=f"decode-{key}", daemon=True).start()

    # ---- producing (worker threads) --------------------------------------------------------------------
    def _put(self, task: _Task, item: Any, size: int) -> bool:
        with self._cond:
            # over budget, wait -- unless nothing is buffered, or the consumer is blocked on this very task
            # and has taken everything it produced (then this item is what it waits for)
            while (not task.taken and not self._stop and self._buffered > 0
                   and self._buffered + size > self.max_bytes and not (task.waiting and not task.queue)):
                self._cond.wait()
            if task.taken or self._stop:
                return False
            task.queue.append((item, size))
            self._buffered += size
            self.peak_bytes = max(self.peak_bytes, self._buffered)
            self._cond.notify_all()
            return True

    def _run(self, key: Hashable, task: _Task) -> None:
        it: Iterator[tuple[Any, int]] | None = None
        try:
            it = iter(task.make())
            for item, size in it:
                if not self._put(task, item, int(size)):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it after the items before it
            task.error = exc
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            with self._cond:
                task.finished = True
                self._running -= 1
                if not task.taken:
                    task.queue.append((_END, 0))
                self._cond.notify_all()
                self._fill()
