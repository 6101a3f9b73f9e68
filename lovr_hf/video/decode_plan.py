"""One decode plan per source video: decode it sequentially once, convert only the frames a consumer needs,
directly at the size the consumer asks for, and hand them over as they are ready.

Why: on GPU machines the model is fast and CPU decoding is what it waits for. Reading clip by clip (open,
seek to the key frame before the clip, decode, convert every frame at full size, shrink later) decodes the
frames between a key frame and a clip start once per clip and converts pixels nobody looks at. Here the
frames every consumer of a batch needs from one file are merged into one sorted list of file frame
indices (:class:`SourceRead`); one decoder walks forward through the file (seeking only where the key frame
before the next wanted frame is far ahead, i.e. where seeking skips decoding: sparse clips of long videos)
and swscale converts each wanted frame to RGB at the consumer's size in one step.

The consumer says how big it wants its frames with a :class:`FrameSize` (an ``decode_size`` attribute on a
captioner or embedder, see :func:`size_request`): an exact size, a shorter side, or a pixel budget.

Two consumers use this module:

* the caption stage, through :class:`ClipDecoder` (clip rows + per-clip frame indices -> each clip's frames,
  clips grouped by source video, decoded ahead under a byte budget) -- see docs/_caption_decode.patch;
* the visual embedding stage (:mod:`lovr_hf.evaluation.embed_video`), which streams :func:`read_source` chunks into
  the model and pools them as running means.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lovr_hf.video.prefetch import StreamPool, resolve_workers
from lovr_hf.video.reader import ClipRef, iter_targets, probe

logger = logging.getLogger(__name__)

#: frames per hand-over from a decode thread (small: frames reach the model soon; large: fewer wake-ups)
CHUNK_FRAMES = 16


# ---------------------------------------------------------------------------------------------------------
# sizes
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrameSize:
    """The frame size a consumer wants, resolved per source from its display size.

    * ``width`` and ``height``: exactly that size (aspect ratio not kept);
    * ``short_side``: aspect kept, the shorter side becomes ``short_side``;
    * ``max_pixels``: aspect kept, shrunk until ``width * height <= max_pixels`` (a VLM's pixel budget).

    Frames are never enlarged (a model upsamples better than swscale guesses); ``multiple`` rounds both sides
    down to a multiple (e.g. 28 for Qwen2-VL patches, keeping the pixel budget); ``interpolation`` is a
    swscale method name (PyAV's ``Interpolation``: ``BILINEAR``, ``BICUBIC``, ``AREA``, ...; None = PyAV's
    default).
    """

    width: int | None = None
    height: int | None = None
    short_side: int | None = None
    max_pixels: int | None = None
    multiple: int = 1
    interpolation: str | None = None

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        for name in ("width", "height", "short_side", "max_pixels"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")

    def resolve(self, width: int, height: int) -> tuple[int, int] | None:
        """``(w, h)`` to convert a ``width x height`` (display) frame to, or None for its own size."""
        if self.width is not None and self.height is not None:
            size = (int(self.width), int(self.height))
            return None if size == (width, height) else size
        scale, budget_bound = 1.0, False
        if self.short_side is not None:
            scale = min(scale, self.short_side / max(1, min(width, height)))
        if self.max_pixels is not None and width * height > self.max_pixels:
            s = math.sqrt(self.max_pixels / (width * height))
            budget_bound = s < scale
            scale = min(scale, s)
        m = self.multiple
        w, h = width * scale, height * scale
        if budget_bound:  # round down: stay inside the pixel budget
            w, h = math.floor(w / m) * m, math.floor(h / m) * m
        else:
            w, h = round(w / m) * m, round(h / m) * m
            if w > width or h > height:  # rounding up to the multiple would enlarge: round down instead
                w, h = math.floor(width * scale / m) * m, math.floor(height * scale / m) * m
        w, h = max(m, int(w)), max(m, int(h))
        return None if (w, h) == (width, height) else (w, h)


#: what a consumer may declare as ``decode_size``: a FrameSize, or any object with ``resolve(width, height)``
SizeRule = Any


def size_request(consumer: Any) -> SizeRule | None:
    """The size rule a model asks for through its ``decode_size`` attribute: None (its own size), a
    :class:`FrameSize`, ``(width, height)``, a mapping of :class:`FrameSize` fields, or any object with
    ``resolve(width, height) -> (w, h) | None`` (e.g. a VLM's own resize rule)."""
    value = getattr(consumer, "decode_size", None)
    if value is None or isinstance(value, FrameSize) or hasattr(value, "resolve"):
        return value
    if isinstance(value, Mapping):
        return FrameSize(**value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return FrameSize(width=int(value[0]), height=int(value[1]))
    raise TypeError(f"decode_size must be None, a FrameSize, (width, height) or a dict, got {value!r}")


def resolved_size(rule: SizeRule | None, path: str) -> tuple[int, int] | None:
    """The ``(w, h)`` ``rule`` gives for the display size of ``path`` (None: its own size)."""
    if rule is None:
        return None
    info = probe(path)
    wh = rule.resolve(info.width, info.height)
    return None if wh is None else (int(wh[0]), int(wh[1]))


# ---------------------------------------------------------------------------------------------------------
# requests and the per-source plan
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrameRequest:
    """Frames ``indices`` (clip-local: any order, repeats allowed) of the clip ``[frame_offset,
    frame_offset + num_frames)`` of ``path``; ``key`` names the clip for the consumer."""

    key: Hashable
    path: str
    frame_offset: int
    num_frames: int
    indices: tuple[int, ...]

    @classmethod
    def from_row(cls, key: Hashable, row: Mapping[str, Any], indices: Sequence[int],
                 root: str | os.PathLike[str] | None = None) -> FrameRequest:
        ref = ClipRef.from_row(row, root)  # relative paths stay inside the repo (ValueError otherwise)
        return cls(key, ref.path, ref.frame_offset, ref.num_frames, tuple(int(i) for i in indices))

    def check(self, file_frames: int) -> None:
        """Raise ``IndexError`` when the clip or one of its indices lies outside the file."""
        if self.frame_offset < 0 or self.num_frames < 0 or self.frame_offset + self.num_frames > file_frames:
            raise IndexError(f"{self.path}: clip range [{self.frame_offset}, {self.frame_offset + self.num_frames})"
                             f" outside the file's {file_frames} frames")
        bad = [i for i in self.indices if not 0 <= i < self.num_frames]
        if bad:
            raise IndexError(f"{self.path}: frame indices {bad[:5]} outside the clip's [0, {self.num_frames})")


@dataclasses.dataclass
class SourceRead:
    """Everything a batch needs from one file: sorted unique file frames and who uses each.

    ``uses`` are sorted by target position: use ``u`` puts frame ``targets[use_pos[u]]`` into slot
    ``use_slot[u]`` of request ``use_req[u]`` (a position in ``requests``, the caller's request list).
    """

    path: str
    requests: list[int]
    targets: np.ndarray
    use_pos: np.ndarray
    use_req: np.ndarray
    use_slot: np.ndarray

    @classmethod
    def build(cls, path: str, requests: Sequence[FrameRequest], positions: Sequence[int]) -> SourceRead:
        glob, req, slot = [], [], []
        for r in positions:
            q = requests[r]
            glob.extend(q.frame_offset + i for i in q.indices)
            req.extend([r] * len(q.indices))
            slot.extend(range(len(q.indices)))
        g = np.asarray(glob, dtype=np.int64)
        targets, inv = np.unique(g, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        return cls(path, list(positions), targets, inv[order].astype(np.int64),
                   np.asarray(req, dtype=np.int64)[order], np.asarray(slot, dtype=np.int64)[order])

    def uses_between(self, p0: int, p1: int) -> slice:
        """The uses of target positions ``[p0, p1)``."""
        a, b = np.searchsorted(self.use_pos, [p0, p1])
        return slice(int(a), int(b))

    def last_pos(self, request: int) -> int:
        """Target position after which request ``request`` is complete (-1: it needs nothing)."""
        hit = np.flatnonzero(self.use_req == request)
        return int(self.use_pos[hit[-1]]) if len(hit) else -1


def group_by_source(requests: Sequence[FrameRequest]) -> list[SourceRead]:
    """Consecutive requests on the same file share one :class:`SourceRead` (clips come sorted by video)."""
    groups: list[tuple[str, list[int]]] = []
    for r, q in enumerate(requests):
        if groups and groups[-1][0] == q.path:
            groups[-1][1].append(r)
        else:
            groups.append((q.path, [r]))
    return [SourceRead.build(path, requests, pos) for path, pos in groups]


@dataclasses.dataclass
class Chunk:
    """Decoded frames of target positions ``[p0, p1)`` of a :class:`SourceRead`."""

    p0: int
    p1: int
    frames: np.ndarray  # uint8 [p1 - p0, H, W, 3]
    seconds: float  # decode + convert time spent producing this chunk


def read_source(read: SourceRead, size: SizeRule | None = None, chunk_frames: int = CHUNK_FRAMES,
                start: int = 0) -> Iterator[Chunk]:
    """Decode the targets of ``read`` from position ``start`` in one pass and yield them in chunks.

    Raises :class:`lovr_hf.video.frame_index.VideoError` (unreadable file) or ``IndexError``; chunks yielded before
    an error are valid.
    """
    t0 = time.perf_counter()
    wh = resolved_size(size, read.path)
    interp = size.interpolation if size is not None else None
    targets = read.targets[start:].tolist()
    buf: list[np.ndarray] = []
    p0 = start
    for _t, rgb in iter_targets(read.path, targets, size=wh, interpolation=interp):
        buf.append(rgb)
        if len(buf) >= chunk_frames:
            t1 = time.perf_counter()
            yield Chunk(p0, p0 + len(buf), np.stack(buf), t1 - t0)
            p0 += len(buf)
            buf = []
            t0 = time.perf_counter()
    if buf:
        yield Chunk(p0, p0 + len(buf), np.stack(buf), time.perf_counter() - t0)


def error_text(exc: BaseException) -> str:
    """The stored reason for a clip that could not be read, classified by the one failure rule
    (:func:`lovr_hf.failures.input_failure`): a bug keeps its ``bug:`` marker and an environment fault its
    errno, so that :func:`lovr_hf.failures.reason_status` makes them ``failed`` rather than bad input."""
    from lovr_hf.failures import input_failure

    return f"cannot decode clip: {input_failure(exc).message}"


# ---------------------------------------------------------------------------------------------------------
# whole clips (the caption stage's shape)
# ---------------------------------------------------------------------------------------------------------

#: one clip's outcome: (frames uint8 [n, H, W, 3] in the order of its indices, error text, decode seconds)
ClipResult = tuple["np.ndarray | None", "str | None", float]


def clip_results(read: SourceRead, requests: Sequence[FrameRequest], size: SizeRule | None = None,
                 chunk_frames: int = CHUNK_FRAMES) -> Iterator[tuple[Hashable, ClipResult]]:
    """Each request of ``read`` with its frames, as soon as its last frame is decoded (never raises: an
    unreadable file or a clip outside its file becomes that clip's error)."""
    pending = list(read.requests)
    t_start = time.perf_counter()
    try:
        info = probe(read.path)
    except Exception as exc:
        for r in pending:
            yield requests[r].key, (None, error_text(exc), time.perf_counter() - t_start)
        return
    good: list[int] = []
    for r in pending:
        try:
            requests[r].check(info.num_frames)
            good.append(r)
        except IndexError as exc:
            yield requests[r].key, (None, error_text(exc), 0.0)
    if len(good) != len(pending):
        read = SourceRead.build(read.path, requests, good)
    last = {r: read.last_pos(r) for r in good}
    bufs: dict[int, np.ndarray] = {}
    secs = 0.0  # decode time since the last clip was handed over
    done = 0  # target positions delivered so far
    order = sorted(good, key=lambda r: last[r])
    nxt = 0
    while nxt < len(order) and last[order[nxt]] < 0:  # nothing to decode for this clip
        yield requests[order[nxt]].key, (_empty(info, size, read.path), None, 0.0)
        nxt += 1
    try:
        for ch in read_source(read, size, chunk_frames):
            secs += ch.seconds
            sl = read.uses_between(ch.p0, ch.p1)
            for u in range(sl.start, sl.stop):
                r = int(read.use_req[u])
                buf = bufs.get(r)
                if buf is None:
                    n = len(requests[r].indices)
                    buf = bufs[r] = np.empty((n, *ch.frames.shape[1:]), dtype=np.uint8)
                buf[read.use_slot[u]] = ch.frames[read.use_pos[u] - ch.p0]
            done = ch.p1
            ready = []
            while nxt < len(order) and last[order[nxt]] < done:
                ready.append(order[nxt])
                nxt += 1
            for r in ready:
                yield requests[r].key, (bufs.pop(r), None, secs / len(ready))
            if ready:
                secs = 0.0
    except Exception as exc:
        msg = error_text(exc)
        for r in order[nxt:]:
            bufs.pop(r, None)
            yield requests[r].key, (None, msg, 0.0)


def _empty(info: Any, size: SizeRule | None, path: str) -> np.ndarray:
    wh = resolved_size(size, path) or (info.width, info.height)
    return np.zeros((0, wh[1], wh[0], 3), dtype=np.uint8)


class ClipDecoder:
    """Frames of clip rows, decoded ahead of the consumer: one sequential pass per source video, only the
    frames asked for, at the consumer's size, under a byte budget.

    ``rows``: clip rows in the order they will be asked for (``path``, ``frame_offset``, ``num_frames``);
    ``indices``: per key, the clip-local frame indices (a mapping, or a function of the row). Consecutive
    rows on the same file are decoded by one task; ``workers`` tasks run at once (``0``: inline, no thread;
    ``None``: sized to the machine), at most ``depth`` tasks ahead of the last one read, and frames decoded
    but not yet taken stay under ``max_bytes``.

    ``get(keys)`` returns one ``(frames | None, error | None, seconds)`` per key -- the shape the caption
    stage's per-clip decode returns -- and never raises for a bad clip. A key asked for twice is decoded
    again on its own. ``wait_s`` sums the time ``get`` waited for decoding.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        indices: Mapping[Hashable, Sequence[int]] | Callable[[Mapping[str, Any]], Sequence[int]],
        *,
        root: str | os.PathLike[str] | None = None,
        size: SizeRule | None = None,
        workers: int | str | None = None,
        max_bytes: int | None = None,
        depth: int | None = None,
        key: str = "clip_id",
        chunk_frames: int = CHUNK_FRAMES,
    ) -> None:
        self.size = size
        self.root = root
        self.chunk_frames = chunk_frames
        self.requests: list[FrameRequest] = []
        self.errors: dict[Hashable, str] = {}  # rows that cannot even be planned (bad paths)
        for row in rows:
            k = row[key]
            idx = indices(row) if callable(indices) else indices.get(k, ())
            try:
                self.requests.append(FrameRequest.from_row(k, row, idx, root))
            except (ValueError, KeyError, TypeError) as exc:
                self.errors[k] = error_text(exc)
        self.rows = {row[key]: row for row in rows}
        self.indices = indices
        self.reads = group_by_source(self.requests)
        self.group_of: dict[Hashable, int] = {}
        for g, read in enumerate(self.reads):
            for r in read.requests:
                self.group_of[self.requests[r].key] = g
        n = resolve_workers(workers)
        self.pool = StreamPool(n, max_bytes, depth if depth is not None else 64) if n > 0 else None
        for g in range(len(self.reads)):
            if self.pool is not None:
                self.pool.add(g, self._task(g))
        self.key = key
        self._streams: dict[int, Iterator[tuple[Hashable, ClipResult]]] = {}
        self._ready: dict[Hashable, ClipResult] = {}
        self._delivered: set[Hashable] = set()
        self.wait_s = 0.0

    def add(self, row: Mapping[str, Any], indices: Sequence[int]) -> None:
        """Plan one more clip after the others (e.g. a row a worker process was handed without a plan)."""
        k = row[self.key]
        self.rows[k] = row
        if not callable(self.indices):
            self.indices = {**self.indices, k: list(indices)}
        try:
            req = FrameRequest.from_row(k, row, indices, self.root)
        except (ValueError, KeyError, TypeError) as exc:
            self.errors[k] = error_text(exc)
            return
        self.requests.append(req)
        g = len(self.reads)
        self.reads.append(SourceRead.build(req.path, self.requests, [len(self.requests) - 1]))
        self.group_of[k] = g
        if self.pool is not None:
            self.pool.add(g, self._task(g))

    def __contains__(self, key: Hashable) -> bool:
        return key in self.group_of or key in self.errors

    def _task(self, g: int) -> Callable[[], Iterator[tuple[tuple[Hashable, ClipResult], int]]]:
        def make() -> Iterator[tuple[tuple[Hashable, ClipResult], int]]:
            for k, res in clip_results(self.reads[g], self.requests, self.size, self.chunk_frames):
                yield (k, res), (res[0].nbytes if res[0] is not None else 0)
        return make

    def _stream(self, g: int) -> Iterator[tuple[Hashable, ClipResult]]:
        if g not in self._streams:
            if self.pool is not None:
                self._streams[g] = self.pool.items(g)
            else:
                self._streams[g] = clip_results(self.reads[g], self.requests, self.size, self.chunk_frames)
        return self._streams[g]

    def get(self, keys: Sequence[Hashable]) -> list[ClipResult]:
        t0 = time.perf_counter()
        out = [self._one(k) for k in keys]
        self.wait_s += time.perf_counter() - t0
        return out

    def _one(self, k: Hashable) -> ClipResult:
        if k in self.errors:
            return None, self.errors[k], 0.0
        if k in self._ready:
            self._delivered.add(k)
            return self._ready.pop(k)
        g = self.group_of.get(k)
        if g is None or k in self._delivered:
            return self._alone(k)
        stream = self._stream(g)
        try:
            for k2, res in stream:
                if k2 == k:
                    self._delivered.add(k)
                    return res
                self._ready[k2] = res
        except Exception as exc:  # a bug, not a bad clip (those are results): fail the rest of the group
            from lovr_hf.failures import message

            msg = f"decode task failed: {message(exc)}"  # bug-marked: the command exits non-zero
            for r in self.reads[g].requests:
                k2 = self.requests[r].key
                if k2 not in self._delivered and k2 not in self._ready:
                    self._ready[k2] = (None, msg, 0.0)
            self._streams[g] = iter(())
            if k in self._ready:
                self._delivered.add(k)
                return self._ready.pop(k)
        return self._alone(k)

    def _alone(self, k: Hashable) -> ClipResult:
        """Decode one clip right now (asked for twice, or not in the rows given at construction)."""
        row = self.rows.get(k)
        if row is None:
            return None, f"cannot decode clip: {k!r} is not one of the planned rows", 0.0
        idx = self.indices(row) if callable(self.indices) else self.indices.get(k, ())
        try:
            req = FrameRequest.from_row(k, row, idx, self.root)
        except (ValueError, KeyError, TypeError) as exc:
            return None, error_text(exc), 0.0
        read = SourceRead.build(req.path, [req], [0])
        for _, res in clip_results(read, [req], self.size, self.chunk_frames):
            return res
        return None, "cannot decode clip: nothing decoded", 0.0

    def __iter__(self) -> Iterator[tuple[Hashable, ClipResult]]:
        """Every planned clip, in row order."""
        for q in self.requests:
            yield q.key, self._one(q.key)
        for k, msg in self.errors.items():
            yield k, (None, msg, 0.0)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


__all__ = [
    "CHUNK_FRAMES",
    "Chunk",
    "ClipDecoder",
    "FrameRequest",
    "FrameSize",
    "SourceRead",
    "clip_results",
    "group_by_source",
    "read_source",
    "size_request",
]
