"""Visual embedding stage: clips and full videos -> ``clip`` and ``video`` rows of ``embeddings-<model_slug>``.

The unit is a VIDEO (its ordered ``ok`` clips), producing one ``clip`` row per clip and one ``video`` row,
so resume is per video. Which frames a clip and a video get is the family's rule, recorded on every row
(``frame_rule``):

* ``interval:K`` (frame-based families, the original LoVR evaluation): every ``K`` frames of each clip from
  its first frame (original default 30; 10 for CLIP); the full video samples the concatenation of its clips
  every ``K`` frames, the stride running on across clip boundaries (the original's ``start_offset``).
  ``uniform:N`` with ``--num-frames N``. A clip / video embedding is the mean of the L2-normalised frame
  embeddings, re-normalised, accumulated as a running sum so memory does not grow with video length.
* ``native:N`` (video towers, ``Embedder.video_frames = N``): N uniform frames per clip and N over the full
  video (the concatenated clips), each fed to ``embed_video``.
* ``files`` (``Embedder.video_input = "files"``, e.g. LanguageBind): no decoding here; ``embed_video_files``
  gets one group per clip (its file) and one per video (its clip files in order). A clip without a file of
  its own -- a virtual clip, or a stream-copied one whose file starts before the clip -- is first cut to a
  temporary frame-exact file (:func:`lovr_hf.clipper.cut_clips`, ``exact``), deleted afterwards.
* ``interval:K+oracle``: under ``--protocol original`` an embedder declaring ``original_oracle_frame``
  (MM-Embed) gets what its original script computed -- the clip (video) embedding is the frame embedding
  most similar to the clip's (video's) gold caption embedding, read from the caption rows of the same
  embeddings config (the text stage runs first). An ORACLE: it looks at the answer. Rows without a gold
  caption fall back to mean pooling and say ``interval:K``.

Decoding follows one plan per video (:mod:`lovr_hf.decode_plan`): the frames its clip and video rows need
from each source file are decoded in one sequential pass, converted at the size the embedder declares
(``decode_size``), and handed to the model chunk by chunk while decoding goes on; a pool of decode threads
(:class:`lovr_hf.prefetch.StreamPool`) works on the next videos under a byte budget.

An unreadable clip is skipped inside its video (as the original did): its row is ``error`` with the real
error, and the video row pools the readable clips -- its stride runs over them -- with status ``ok`` and
``error`` naming the clips left out. A video without any readable clip is an ``error`` row. A clip whose
file fails in the middle of decoding is left out of the video the same way (the stride of the later clips
is kept as planned). A model failure is ``failed`` for the clip and for its video.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.backends.base import Embedder
from lovr_hf.decode_plan import (
    FrameRequest,
    SourceRead,
    error_text,
    group_by_source,
    read_source,
    size_request,
)
from lovr_hf.embed import VISUAL_KINDS, _EmbedStage, l2n
from lovr_hf.frames import interval_indices, uniform_indices, video_interval_indices
from lovr_hf.models import EmbedConfig, check_embedder, resolved_interval
from lovr_hf.prefetch import DEFAULT_PREFETCH_BYTES, StreamPool, resolve_workers
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video import probe

logger = logging.getLogger(__name__)

#: clip ids listed by name in a video row's ``error`` before "+N more"
MAX_LISTED = 20


def _has_native_video(backend: Embedder | type[Embedder]) -> bool:
    cls = backend if isinstance(backend, type) else type(backend)
    return cls.embed_video is not Embedder.embed_video


# ---------------------------------------------------------------------------------------------------------
# frame sampling
# ---------------------------------------------------------------------------------------------------------


def sample_video(
    frame_counts: Sequence[int], *, interval: int | None = None, num_frames: int | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Per clip: (indices pooled into the clip embedding, indices pooled into the video embedding).

    Indices are local to each clip. ``interval``: every ``interval`` frames of each clip from frame 0; the
    video samples the concatenated clips every ``interval`` frames (stride continuous across clips).
    ``num_frames``: ``uniform_indices`` over each clip, and over the concatenated video.
    """
    counts = [max(0, int(n)) for n in frame_counts]
    if num_frames:
        clip_sel = [uniform_indices(n, num_frames) for n in counts]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
        video_sel: list[list[int]] = [[] for _ in counts]
        for g in uniform_indices(sum(counts), num_frames):
            c = bisect.bisect_right(starts, g) - 1
            video_sel[c].append(g - starts[c])
        return clip_sel, video_sel
    if not interval:
        raise ValueError("give interval or num_frames")
    return [interval_indices(n, interval) for n in counts], video_interval_indices(counts, interval)


@dataclasses.dataclass(frozen=True)
class FrameRule:
    """How the visual stage feeds one embedder (see the module docstring); ``text`` goes on every row."""

    kind: str  # "pool" | "native" | "files"
    interval: int | None = None
    num_frames: int | None = None
    oracle: bool = False

    @property
    def text(self) -> str:
        if self.kind == "files":
            return "files"
        if self.kind == "native":
            return f"native:{self.num_frames}" if self.num_frames else f"native+interval:{self.interval}"
        base = f"uniform:{self.num_frames}" if self.num_frames else f"interval:{self.interval}"
        return base + ("+oracle" if self.oracle else "")


def frame_rule(cls: type[Embedder], config: EmbedConfig, instance: Embedder | None = None) -> FrameRule:
    """The rule for embedder class ``cls`` under ``config``.

    What kind of model it is comes from the class (so a wrapper around the instance -- e.g. the channel
    swap of ``--protocol original`` -- cannot change it); a video tower's frame count from the built
    ``instance`` when given (adapters read it from the model's config). ``--num-frames N`` overrides a
    video tower's own count (recorded as ``native:N``); a class implementing ``embed_video`` without
    declaring ``video_frames`` gets the configured sampling (``native+interval:K``).
    """
    if getattr(cls, "video_input", "frames") == "files":
        return FrameRule("files")
    interval = resolved_interval(config)
    if _has_native_video(cls):
        n = config.num_frames or getattr(instance if instance is not None else cls, "video_frames", None)
        return FrameRule("native", None if n else interval, int(n) if n else None)
    oracle = config.protocol == "original" and bool(getattr(cls, "original_oracle_frame", False))
    return FrameRule("pool", interval, config.num_frames or None, oracle)


# ---------------------------------------------------------------------------------------------------------
# the per-video plan
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VideoPlan:
    """What to decode for one video: its readable clips, their sampled frames and one read per source.

    ``clip_sel[c]`` / ``video_sel[c]`` (clip-local indices) exist for readable clips only; ``requests[j]``
    asks for the sorted union of both for readable clip ``readable[j]``; the two masks say which slot of
    a request feeds the clip row and which the video row.
    """

    video_id: str
    clips: list[dict[str, Any]]
    errors: dict[int, str]
    readable: list[int]
    clip_sel: dict[int, list[int]]
    video_sel: dict[int, list[int]]
    requests: list[FrameRequest]
    is_clip: list[np.ndarray]
    is_video: list[np.ndarray]
    reads: list[SourceRead]

    @classmethod
    def build(cls, video_id: str, clips: Sequence[dict[str, Any]], rule: FrameRule, root: str | None,
              check: bool = True) -> VideoPlan:
        ordered = sorted(clips, key=lambda c: c[schema.SLICE_NUM])
        errors: dict[int, str] = {}
        refs: dict[int, FrameRequest] = {}
        for c, clip in enumerate(ordered):
            try:
                ref = FrameRequest.from_row(clip[schema.CLIP_ID], clip, (), root)
                if ref.num_frames <= 0:
                    raise ValueError("clip has no frames")
                if check:  # unreadable files are skipped inside the video, before its stride is laid out
                    ref.check(probe(ref.path).num_frames)
                refs[c] = ref
            except Exception as exc:
                errors[c] = error_text(exc)
        readable = sorted(refs)
        counts = [refs[c].num_frames for c in readable]
        if rule.kind == "files":
            sel_c: list[list[int]] = [[] for _ in readable]
            sel_v: list[list[int]] = [[] for _ in readable]
        elif rule.num_frames:
            sel_c, sel_v = sample_video(counts, num_frames=rule.num_frames)
        else:
            sel_c, sel_v = sample_video(counts, interval=rule.interval)
        requests, is_clip, is_video = [], [], []
        for c, a, b in zip(readable, sel_c, sel_v):
            union = sorted(set(a) | set(b))
            requests.append(dataclasses.replace(refs[c], indices=tuple(union)))
            sa, sb = set(a), set(b)
            is_clip.append(np.array([i in sa for i in union], dtype=bool))
            is_video.append(np.array([i in sb for i in union], dtype=bool))
        reads = group_by_source(requests)
        return cls(video_id, list(ordered), errors, readable, dict(zip(readable, sel_c)),
                   dict(zip(readable, sel_v)), requests, is_clip, is_video, reads)


class _Mean:
    """Running mean of L2-normalised vectors in float64: equal to ``l2n(frames.mean(0))`` within float32
    rounding, in O(d) memory whatever the number of frames."""

    __slots__ = ("total", "n")

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.n = 0

    def add(self, vecs: np.ndarray) -> None:
        if not len(vecs):
            return
        s = vecs.sum(axis=0, dtype=np.float64)
        self.total = s if self.total is None else self.total + s
        self.n += len(vecs)

    def merge(self, other: _Mean) -> None:
        if other.total is not None:
            self.total = other.total.copy() if self.total is None else self.total + other.total
            self.n += other.n

    def vector(self) -> np.ndarray:
        assert self.total is not None and self.n
        return l2n((self.total / self.n).astype(np.float32))


class _Best:
    """Running arg-max of cosine similarity to one gold vector: the oracle frame of MM-Embed's original
    script (``lovr_hf.backends.embedder_mm_embed.oracle_frame``: highest cosine, first one on ties), kept
    chunk by chunk instead of over all frames at once."""

    __slots__ = ("gold", "sim", "vec")

    def __init__(self, gold: np.ndarray) -> None:
        self.gold = l2n(np.asarray(gold, dtype=np.float32).reshape(-1))
        self.sim = -np.inf
        self.vec: np.ndarray | None = None

    def add(self, vecs: np.ndarray) -> None:
        if not len(vecs):
            return
        sims = vecs @ self.gold
        i = int(np.argmax(sims))
        if sims[i] > self.sim:
            self.sim, self.vec = float(sims[i]), vecs[i].copy()

    def merge(self, other: _Best) -> None:
        if other.vec is not None and other.sim > self.sim:
            self.sim, self.vec = other.sim, other.vec


@dataclasses.dataclass
class _ClipState:
    """What the consumer accumulates for one readable clip while its frames stream in."""

    clip_mean: _Mean = dataclasses.field(default_factory=_Mean)
    video_mean: _Mean = dataclasses.field(default_factory=_Mean)
    clip_best: _Best | None = None
    video_best: _Best | None = None
    frames: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # native: slot -> frame
    vec: np.ndarray | None = None  # native: the clip's embedding, made as soon as the clip is complete
    problem: tuple[str, str] | None = None  # (status, error)
    left: int = 0  # slots not yet delivered


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------


class VideoEmbedStage(_EmbedStage):
    """Videos (with their ordered clips) -> one ``clip`` row per clip and one ``video`` row per video."""

    input_key = schema.VIDEO_ID
    kinds = VISUAL_KINDS
    version = "2"  # 2: unreadable clips skipped inside their video; frame_rule and protocol on every row

    def __init__(self, config: EmbedConfig, slug: str, repo_root: str,
                 input_keys: Iterable[str] | None = None) -> None:
        super().__init__(config, slug, input_keys)
        self.name = "embed-video"  # type: ignore[misc]
        self.repo_root = repo_root
        self.interval = resolved_interval(config)
        self.batch_size = max(1, int(config.videos_per_commit))
        self.order: list[tuple[str, list[dict[str, Any]]]] = []
        self.embedder_class = check_embedder(config)
        self.class_rule = frame_rule(self.embedder_class, config)
        self._gold: tuple[Any, dict[tuple[str, str], np.ndarray], str] | None = None
        self._pool: StreamPool | None = None
        self._rule: FrameRule = self.class_rule
        self._size: Any = None

    def fingerprint_payload(self) -> dict[str, Any]:
        p = super().fingerprint_payload()
        rule = self.class_rule
        p.update(interval=self.interval, num_frames=self.config.num_frames or None, protocol=self.config.protocol,
                 frame_rule=rule.kind + ("+oracle" if rule.oracle else ""))
        if rule.oracle:
            p.update(gold=self.gold()[1])
        return p

    def gold(self) -> tuple[dict[tuple[str, str], np.ndarray], str]:
        """The gold caption embeddings the oracle compares frames with, and their digest: read when the
        stage runs (after the text stage), again whenever the embeddings config changed."""
        repo = BenchmarkRepo(self.repo_root)
        files = tuple(repo.config_files().get(self.outputs[0], ()))
        if self._gold is None or self._gold[0] != files:
            self._gold = (files, *load_gold(repo, self.slug))
        return self._gold[1], self._gold[2]

    def prepare(self, todo: Dataset) -> None:
        self.order = [(row[schema.VIDEO_ID], row["clips"]) for row in todo]

    def setup(self) -> None:
        super().setup()
        assert self._backend is not None
        self._rule = frame_rule(self.embedder_class, self.config, self._backend)
        self._size = size_request(self._backend)
        cfg = self.config
        workers = resolve_workers(cfg.decode_workers)
        budget = getattr(cfg, "prefetch_bytes", None) or DEFAULT_PREFETCH_BYTES
        if self._pool is not None:
            self._pool.close()
        self._pool = None
        if workers > 0 and self._rule.kind != "files":
            self._pool = StreamPool(workers, budget, depth=max(1, cfg.prefetch_reads))
            weakref.finalize(self, self._pool.close)
            for vid, clips in self.order:
                if vid not in self._pool:
                    self._pool.add(vid, self._task(vid, clips))

    # ---- decoding (worker threads) -------------------------------------------------------------------
    def _chunk_frames(self) -> int:
        return max(1, min(int(self.config.frames_per_read), int(self.config.batch_size)))

    def _task(self, vid: str, clips: list[dict[str, Any]]) -> Callable[[], Iterator[tuple[Any, int]]]:
        rule, size, root, chunk = self._rule, self._size, self.repo_root, self._chunk_frames()

        def make() -> Iterator[tuple[Any, int]]:
            t0 = time.perf_counter()
            plan = VideoPlan.build(vid, clips, rule, root)
            yield ("plan", plan, time.perf_counter() - t0), 0
            for s, read in enumerate(plan.reads):
                done = 0
                try:
                    for ch in read_source(read, size, chunk):
                        done = ch.p1
                        yield ("chunk", s, ch), ch.frames.nbytes
                except Exception as exc:
                    yield ("error", s, done, error_text(exc)), 0

        return make

    def _stream(self, vid: str, clips: list[dict[str, Any]]) -> Iterator[Any]:
        if self._pool is None or self._pool.was_read(vid):  # no pool, or the same video asked twice
            return (item for item, _ in self._task(vid, clips)())
        if vid not in self._pool:  # a row this process did not prepare (e.g. a datasets worker)
            self._pool.add(vid, self._task(vid, clips))
        return self._pool.items(vid)

    # ---- embedding -----------------------------------------------------------------------------------
    def _frame_embeddings(self, frames: np.ndarray) -> np.ndarray:
        assert self._backend is not None
        out = np.asarray(self._backend.embed_frames(frames), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(frames):
            raise ValueError(f"embed_frames returned shape {out.shape} for {len(frames)} frames")
        if not np.isfinite(out).all():
            raise ValueError("embed_frames returned NaN/inf")
        return l2n(out)

    def _native(self, frames: np.ndarray) -> np.ndarray:
        """A video tower on ``frames``; an ``embed_video`` that returns None pools frame embeddings."""
        assert self._backend is not None
        v = self._backend.embed_video(frames)
        if v is None:
            return l2n(self._frame_embeddings(frames).mean(axis=0))
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        if not np.isfinite(v).all():
            raise ValueError("embed_video returned NaN/inf")
        return l2n(v)

    def _row(self, kind: str, item: str, vid: str, vec: np.ndarray | None, n: int, status: str = schema.OK,
             error: str | None = None, rule: str | None = None) -> dict[str, Any]:
        r = self._rule
        return {"model": self.model_id(), "kind": kind, "item_id": item, schema.VIDEO_ID: vid,
                "embedding": None if vec is None else vec.tolist(), "num_frames": n, "text_mode": None,
                "interval": r.interval if r.kind != "files" and not r.num_frames else None,
                "uniform_frames": r.num_frames if r.kind != "files" else None,
                "frame_rule": rule or r.text, "protocol": self.config.protocol,
                schema.STATUS: status, schema.ERROR_COL: error}

    def _embed_video(self, vid: str, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._rule.kind == "files":
            return self._embed_files(vid, clips)
        stream = self._stream(vid, clips)
        try:
            first = next(stream)
            assert first[0] == "plan", first
            plan: VideoPlan = first[1]
            self._add("plan_s", first[2])
            states = self._states(plan)
            for item in stream:
                if item[0] == "chunk":
                    self._on_chunk(plan, states, item[1], item[2])
                else:
                    self._on_error(plan, states, item[1], item[2], item[3])
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return self._rows(plan, states)

    def _states(self, plan: VideoPlan) -> dict[int, _ClipState]:
        states: dict[int, _ClipState] = {}
        gold = self.gold()[0] if self._rule.oracle else {}
        for j, c in enumerate(plan.readable):
            st = _ClipState(left=len(plan.requests[j].indices))
            if self._rule.oracle:
                g = gold.get(("clip_caption", plan.clips[c][schema.CLIP_ID]))
                st.clip_best = _Best(g) if g is not None else None
                gv = gold.get(("video_caption", plan.video_id))
                st.video_best = _Best(gv) if gv is not None else None
            if not st.left:
                st.problem = (schema.ERROR, "clip has no sampled frames")
            states[c] = st
        return states

    def _on_chunk(self, plan: VideoPlan, states: dict[int, _ClipState], s: int, ch: Any) -> None:
        """Embed one decoded chunk (each frame once, even when its clip and its video both use it) and add
        it to the running means of the clips it belongs to; a native clip is embedded once complete."""
        read = plan.reads[s]
        sl = read.uses_between(ch.p0, ch.p1)
        req, slot, pos = read.use_req[sl], read.use_slot[sl], read.use_pos[sl] - ch.p0
        parts = []  # (clip position, slots, chunk rows, clip mask, video mask)
        for j in np.unique(req).tolist():
            m = req == j
            sj = slot[m]
            parts.append((j, sj, pos[m], plan.is_clip[j][sj], plan.is_video[j][sj]))
        n_clip = sum(int(ic.sum()) for *_, ic, _ in parts)
        n_video = sum(int(iv.sum()) for *_, iv in parts)
        total = max(1, n_clip + n_video)
        self._add("decode_s", ch.seconds)
        self._add("frames_read", len(ch.frames))
        self._add("clip_decode_s", ch.seconds * n_clip / total)
        self._add("video_decode_s", ch.seconds * n_video / total)
        emb = None
        if self._rule.kind == "pool":
            t0 = time.perf_counter()
            try:
                emb = self._frame_embeddings(ch.frames)
            except Exception as exc:
                for j, *_ in parts:
                    st = states[plan.readable[j]]
                    st.problem = st.problem or (schema.FAILED, f"{type(exc).__name__}: {exc}")
            secs = time.perf_counter() - t0
            self._add("encode_s", secs)
            self._add("clip_encode_s", secs * n_clip / total)
            self._add("video_encode_s", secs * n_video / total)
        for j, sj, pj, ic, iv in parts:
            st = states[plan.readable[j]]
            st.left -= len(sj)
            if st.problem is not None:
                continue
            if self._rule.kind == "native":
                for k, p in zip(sj.tolist(), pj.tolist()):
                    st.frames[k] = ch.frames[p]
                if st.left == 0:
                    self._finish_native(plan, j, st)
                continue
            assert emb is not None
            vecs = emb[pj]
            st.clip_mean.add(vecs[ic])
            st.video_mean.add(vecs[iv])
            if st.clip_best is not None:
                st.clip_best.add(vecs[ic])
            if st.video_best is not None:
                st.video_best.add(vecs[iv])

    def _finish_native(self, plan: VideoPlan, j: int, st: _ClipState) -> None:
        """Run the video tower on a complete clip now, keeping only the frames its video still needs."""
        n = len(plan.requests[j].indices)
        try:
            frames = np.stack([st.frames[k] for k in range(n) if plan.is_clip[j][k]])
            t0 = time.perf_counter()
            st.vec = self._native(frames)
            secs = time.perf_counter() - t0
            self._add("encode_s", secs)
            self._add("clip_encode_s", secs)
        except Exception as exc:
            st.problem = (schema.FAILED, f"{type(exc).__name__}: {exc}")
        st.frames = {k: f for k, f in st.frames.items() if plan.is_video[j][k]}

    def _on_error(self, plan: VideoPlan, states: dict[int, _ClipState], s: int, done: int, msg: str) -> None:
        """A source failed after ``done`` of its targets: every clip still missing frames is unreadable."""
        read = plan.reads[s]
        for r in read.requests:
            c = plan.readable[r]
            st = states[c]
            if st.left > 0 and st.problem is None:
                st.problem = (schema.ERROR, msg)

    def _rows(self, plan: VideoPlan, states: dict[int, _ClipState]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        vid = plan.video_id
        video_mean, video_best = _Mean(), None
        video_frames: list[np.ndarray] = []
        skipped: list[str] = []
        failed: tuple[str, str] | None = None
        n_video = 0
        for c, clip in enumerate(plan.clips):
            cid = clip[schema.CLIP_ID]
            st = states.get(c)
            if st is None:  # unreadable before decoding
                rows.append(self._row("clip", cid, vid, None, 0, schema.ERROR, plan.errors[c]))
                skipped.append(cid)
                continue
            if st.problem is None and st.left > 0:
                st.problem = (schema.ERROR, "cannot decode clip: the decoder stopped before its last frame")
            if st.problem is not None:
                rows.append(self._row("clip", cid, vid, None, 0, *st.problem))
                if st.problem[0] == schema.FAILED:
                    failed = failed or (schema.FAILED, f"clip {cid}: {st.problem[1]}")
                else:
                    skipped.append(cid)
                continue
            j = plan.readable.index(c)
            nc, nv = len(plan.clip_sel[c]), len(plan.video_sel[c])
            try:
                vec, rule = self._clip_vector(plan, j, st)
            except Exception as exc:
                rows.append(self._row("clip", cid, vid, None, 0, schema.FAILED, f"{type(exc).__name__}: {exc}"))
                failed = failed or (schema.FAILED, f"clip {cid}: {type(exc).__name__}: {exc}")
                continue
            rows.append(self._row("clip", cid, vid, vec, nc, rule=rule))
            n_video += nv
            video_mean.merge(st.video_mean)
            if st.video_best is not None:
                video_best = video_best or _Best(st.video_best.gold)
                video_best.merge(st.video_best)
            if self._rule.kind == "native":
                video_frames += [st.frames[k] for k in sorted(st.frames)]
            st.frames = {}
        self._add("clips", len(plan.clips))
        self._add("clip_frames", sum(len(s) for s in plan.clip_sel.values()))
        self._add("video_frames", sum(len(s) for s in plan.video_sel.values()))
        self._add("videos", 1)
        if failed is not None:
            rows.append(self._row("video", vid, vid, None, 0, *failed))
            return rows
        if len(skipped) == len(plan.clips):
            rows.append(self._row("video", vid, vid, None, 0, schema.ERROR,
                                  f"no readable clip ({len(skipped)} left out)"))
            return rows
        if n_video == 0:
            rows.append(self._row("video", vid, vid, None, 0, schema.ERROR, "video has no frames"))
            return rows
        note = None
        if skipped:
            listed = ", ".join(skipped[:MAX_LISTED]) + (f" (+{len(skipped) - MAX_LISTED} more)"
                                                        if len(skipped) > MAX_LISTED else "")
            note = f"left out {len(skipped)} unreadable clip(s): {listed}"
        t0 = time.perf_counter()
        try:
            if self._rule.kind == "native":
                vec, rule = self._native(np.stack(video_frames)), None
            elif video_best is not None and video_best.vec is not None:
                vec, rule = video_best.vec, self._rule.text
            else:
                vec, rule = video_mean.vector(), dataclasses.replace(self._rule, oracle=False).text
            rows.append(self._row("video", vid, vid, vec, n_video, error=note, rule=rule))
        except Exception as exc:
            rows.append(self._row("video", vid, vid, None, 0, schema.FAILED, f"{type(exc).__name__}: {exc}"))
        secs = time.perf_counter() - t0
        self._add("encode_s", secs)
        self._add("video_encode_s", secs)
        return rows

    def _clip_vector(self, plan: VideoPlan, j: int, st: _ClipState) -> tuple[np.ndarray, str]:
        if self._rule.kind == "native":
            assert st.vec is not None
            return st.vec, self._rule.text
        if st.clip_best is not None and st.clip_best.vec is not None:
            return st.clip_best.vec, self._rule.text
        return st.clip_mean.vector(), dataclasses.replace(self._rule, oracle=False).text

    # ---- files (video_input = "files") ---------------------------------------------------------------
    def _embed_files(self, vid: str, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        plan = VideoPlan.build(vid, clips, self._rule, self.repo_root)
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="lovr-clipfiles-") as tmp:
            files, cut_errors = _clip_files(plan, tmp)
            self._add("decode_s", time.perf_counter() - t0)
            ok = [c for c in plan.readable if c in files]
            groups = [[files[c]] for c in ok] + [[files[c] for c in ok]]
            t1 = time.perf_counter()
            vecs = self._files_vectors(groups) if ok else []
            self._add("encode_s", time.perf_counter() - t1)
        skipped, failed = [], None
        for c, clip in enumerate(plan.clips):
            cid = clip[schema.CLIP_ID]
            err = plan.errors.get(c) or cut_errors.get(c)
            if err is not None:
                rows.append(self._row("clip", cid, vid, None, 0, schema.ERROR, err))
                skipped.append(cid)
                continue
            vec = vecs[ok.index(c)]
            if isinstance(vec, str):
                rows.append(self._row("clip", cid, vid, None, 0, schema.FAILED, vec))
                failed = failed or f"clip {cid}: {vec}"
            else:
                rows.append(self._row("clip", cid, vid, vec, int(clip["num_frames"] or 0)))
        self._add("clips", len(plan.clips))
        self._add("videos", 1)
        if not ok:
            rows.append(self._row("video", vid, vid, None, 0, schema.ERROR, f"no readable clip ({len(skipped)} left out)"))
        elif failed is not None or isinstance(vecs[-1], str):
            rows.append(self._row("video", vid, vid, None, 0, schema.FAILED, failed or str(vecs[-1])))
        else:
            note = f"left out {len(skipped)} unreadable clip(s): {', '.join(skipped[:MAX_LISTED])}" if skipped else None
            n = sum(int(plan.clips[c]["num_frames"] or 0) for c in ok)
            rows.append(self._row("video", vid, vid, vecs[-1], n, error=note))
        return rows

    def _files_vectors(self, groups: list[list[str]]) -> list[np.ndarray | str]:
        """One vector (or an error text) per group: all groups in one call, one by one if that fails."""
        assert self._backend is not None

        def call(gs: list[list[str]]) -> np.ndarray:
            out = self._backend.embed_video_files(gs)  # type: ignore[union-attr]
            if out is None:
                raise TypeError(f"{type(self._backend).__name__}.embed_video_files returned None "
                                "(video_input = 'files' needs it)")
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(gs) or not np.isfinite(out).all():
                raise ValueError(f"embed_video_files returned shape {out.shape} (or NaN) for {len(gs)} groups")
            return l2n(out)

        try:
            return list(call(groups))
        except Exception as exc:
            if len(groups) == 1:
                return [f"{type(exc).__name__}: {exc}"]
            logger.warning("embed_video_files failed on %d groups (%s); one by one", len(groups), exc)
        out: list[np.ndarray | str] = []
        for g in groups:
            try:
                out.append(call([g])[0])
            except Exception as one:
                out.append(f"{type(one).__name__}: {one}")
        return out

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        for vid, clips in zip(batch[schema.VIDEO_ID], batch["clips"]):
            rows.extend(self._embed_video(vid, clips))
        return {self.outputs[0]: rows}


def _clip_files(plan: VideoPlan, tmp: str) -> tuple[dict[int, str], dict[int, str]]:
    """A file holding exactly each readable clip: its own file when it has one, else a temporary cut."""
    from lovr_hf.clipper import cut_clips

    files: dict[int, str] = {}
    errors: dict[int, str] = {}
    need: dict[str, list[int]] = {}
    for j, c in enumerate(plan.readable):
        q = plan.requests[j]
        if q.frame_offset == 0 and q.num_frames == probe(q.path).num_frames:
            files[c] = q.path
        else:
            need.setdefault(q.path, []).append(c)
    for k, (src, cs) in enumerate(need.items()):
        qs = {c: plan.requests[plan.readable.index(c)] for c in cs}
        cs = sorted(cs, key=lambda c: qs[c].frame_offset)
        ranges = [(qs[c].frame_offset, qs[c].frame_offset + qs[c].num_frames) for c in cs]
        try:
            if any(b[0] < a[1] for a, b in zip(ranges, ranges[1:])):
                raise ValueError("overlapping clip ranges cannot be cut in one pass")
            cut = cut_clips(src, ranges, os.path.join(tmp, str(k)), plan.video_id, mode="exact")
            for c, cf in zip(cs, cut):
                files[c] = cf.path
        except Exception as exc:
            for c in cs:
                errors[c] = f"cannot cut a clip file: {type(exc).__name__}: {exc}"
    return files, errors


# ---------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------


def load_gold(repo: BenchmarkRepo, slug: str) -> tuple[dict[tuple[str, str], np.ndarray], str]:
    """Gold caption embeddings (``clip_caption`` by clip id, ``video_caption`` by video id) of ``slug``'s
    config and a digest of them (the oracle's embeddings change when they do)."""
    config = schema.embeddings_config(slug)
    h = hashlib.sha256()
    gold: dict[tuple[str, str], np.ndarray] = {}
    if repo.has(config):
        t = repo.read_table(config)
        kinds = pa.array(["clip_caption", "video_caption"])
        t = t.filter(pc.and_(pc.is_in(t["kind"], value_set=kinds), pc.equal(t[schema.STATUS], schema.OK)))
        for kind, item, emb in zip(t["kind"].to_pylist(), t["item_id"].to_pylist(), t["embedding"].to_pylist()):
            v = np.asarray(emb, dtype=np.float32)
            gold[(kind, item)] = v
        for key in sorted(gold):
            h.update(f"{key[0]}\0{key[1]}\0".encode() + gold[key].tobytes())
    if not gold:
        logger.warning("oracle frame choice: no caption embeddings in %s yet (embed the captions first); "
                       "clips fall back to mean pooling", config)
    return gold, h.hexdigest()[:16]


_CLIP_FIELDS = (schema.CLIP_ID, schema.VIDEO_ID, schema.SLICE_NUM, "path", "frame_offset", "num_frames")


def video_inputs(repo: BenchmarkRepo) -> Dataset:
    """One row per video: ``video_id`` and its ``ok`` clips in slice order (the unit of visual embedding)."""
    t = repo.read_table(schema.CLIPS)
    t = t.filter(pc.equal(t[schema.STATUS], schema.OK)).select(list(_CLIP_FIELDS))
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in t.to_pylist():
        by_video.setdefault(row[schema.VIDEO_ID], []).append(row)
    vids = sorted(by_video)
    return Dataset.from_dict({
        schema.VIDEO_ID: vids,
        "clips": [sorted(by_video[v], key=lambda r: r[schema.SLICE_NUM]) for v in vids],
    })


def video_stage(repo: BenchmarkRepo, config: EmbedConfig, slug: str) -> tuple[VideoEmbedStage, Dataset]:
    ds = video_inputs(repo)
    return VideoEmbedStage(config, slug, str(repo.root), ds[schema.VIDEO_ID]), ds
