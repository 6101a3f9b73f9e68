"""One writer per repo stage at a time: an OS file lock per (stage, chunk), with who holds it.

Two ``lovr segment`` runs started together on one repo used to interleave: one emptied the other's
staging folder and a valid video ended as a permanent ``error`` row; two caption runs did all the work
twice. :func:`writer_lock` serialises them: the second writer waits (it then finds the work committed and
skips it) or, with ``LOVR_LOCK_TIMEOUT`` seconds set and spent, stops with
``repo is busy: pid P on HOST runs STAGE since TIME``.

The lock is an ``flock`` (the ``filelock`` library) on ``<repo>/.lovr/locks/<stage>-<rank>-of-<n>.lock``:
the kernel releases it when its process dies (kill -9 included), so a dead writer's lock never blocks a
rerun; the holder file next to it (pid, host, stage, since) is only informative and rewritten by every
new holder. Chunks of one run (``--num-chunks/--chunk-idx``, accelerate ranks) lock their own rank, so
they still run side by side, on one machine or several sharing the folder; a stage's gather holds its own
lock (:func:`gather_locked`), and every card or index write is serialised by the repo lock
(:meth:`lovr_hf.repo.BenchmarkRepo.lock`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from lovr_hf.integrity import RepoError

logger = logging.getLogger(__name__)

LOCK_DIR = "locks"
TIMEOUT_ENV = "LOVR_LOCK_TIMEOUT"  # seconds a second writer waits before "repo is busy" (default: forever)
_POLL_S = 0.2
_held: dict[str, tuple[FileLock, int]] = {}  # path -> (lock, depth): re-entrant within one process
_guard = threading.Lock()
T = TypeVar("T")


class RepoBusyError(RepoError):
    """Another process holds the writer lock of this repo stage."""


def _holder(info: Path) -> str:
    try:
        d = json.loads(info.read_text())
        return f"pid {d['pid']} on {d['host']} runs {d['stage']} since {d['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (no holder record)"


def _timeout(default: float | None) -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if raw not in (None, ""):
        try:
            return float(raw)
        except ValueError:
            pass
    return -1 if default is None else default


@contextlib.contextmanager
def writer_lock(work_root: str | os.PathLike[str], stage: str, rank: int = 0, world_size: int = 1,
                timeout: float | None = None) -> Iterator[None]:
    """Hold the writer lock of ``stage`` (this rank) in the repo whose work folder is ``work_root``.

    Waits for a holder to finish (logging who it is), up to ``timeout`` seconds (``LOVR_LOCK_TIMEOUT``
    overrides; negative: forever), then raises :class:`RepoBusyError`. Re-entrant within a process.
    """
    folder = Path(work_root) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{stage}-{rank}-of-{world_size}"
    path = str(folder / f"{name}.lock")
    info = folder / f"{name}.json"
    with _guard:
        lock, depth = _held.get(path, (None, 0))
        if lock is not None:
            _held[path] = (lock, depth + 1)
    if lock is not None:  # this process already holds it (a stage calling gather inside apply)
        try:
            yield
        finally:
            with _guard:
                lk, d = _held[path]
                _held[path] = (lk, d - 1)
        return
    lock = FileLock(path)
    wait = _timeout(timeout)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.warning("repo is busy: %s; waiting for it to finish (%s)", _holder(info),
                       "forever" if wait < 0 else f"up to {wait:g} s")
        try:
            lock.acquire(timeout=wait, poll_interval=_POLL_S)
        except Timeout:
            raise RepoBusyError(f"repo is busy: {_holder(info)} ({Path(work_root).parent}); wait for it to "
                                f"finish, or set {TIMEOUT_ENV}=-1 to wait") from None
    try:
        with contextlib.suppress(OSError):
            info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                                        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        with _guard:
            _held[path] = (lock, 1)
        yield
    finally:
        with _guard:
            _held.pop(path, None)
        with contextlib.suppress(OSError):
            info.unlink()
        lock.release()


def held_locks(work_root: str | os.PathLike[str]) -> list[str]:
    """Holders of the writer locks of a repo right now (for ``lovr doctor``)."""
    out = []
    for p in sorted((Path(work_root) / LOCK_DIR).glob("*.lock")):
        lk = FileLock(str(p))
        try:
            lk.acquire(timeout=0)
        except Timeout:
            out.append(f"{p.stem}: {_holder(p.with_suffix('.json'))}")
        else:
            lk.release()
    return out


@contextlib.contextmanager
def writers_held(work_root: str | os.PathLike[str], stages: Iterable[str]) -> Iterator[list[str]]:
    """Hold, without waiting, the writer locks of ``stages`` (one process and the gather of each) and every
    other writer lock the repo has (ranks, chunks), for a repair that must not run beside a writer
    (``lovr doctor --fix``). Yields the holders found busy: then nothing is held and the caller repairs
    nothing; an empty list means every lock is held here until the block ends."""
    folder = Path(work_root) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names = {p.stem for p in folder.glob("*.lock")}
    names |= {f"{s}{part}-0-of-1" for s in stages for part in ("", "-gather")}
    held: list[FileLock] = []
    busy: list[str] = []
    try:
        for name in sorted(names):
            lock = FileLock(str(folder / f"{name}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                busy.append(f"{name}: {_holder(folder / f'{name}.json')}")
                continue
            held.append(lock)
        if busy:
            for lock in held:
                lock.release()
            held = []
        yield busy
    finally:
        for lock in held:
            lock.release()


def gather_locked(gather: Callable[..., T]) -> Callable[..., T]:
    """Decorate a stage's ``gather(self, repo, ...)`` so that one process at a time gathers that stage into
    the repo: the gather reads the old tables and the work index, then writes the new ones and removes
    superseded files, and two chunks (or ranks) finishing together must not interleave that. Re-entrant
    (a subclass's gather calling ``super().gather`` holds it once)."""

    @functools.wraps(gather)
    def locked(self: Any, repo: Any, *args: Any, **kwargs: Any) -> T:
        with writer_lock(repo.work_root, f"{self.name}-gather"):
            return gather(self, repo, *args, **kwargs)

    return locked
