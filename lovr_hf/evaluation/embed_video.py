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
  gets one group per clip (its file) and one per video (its clip files in order); clips without a file of
  their own are cut to temporary frame-exact files first (:mod:`lovr_hf.evaluation.embed_files`).
* ``oracle:interval:K``: under ``--protocol original`` an embedder declaring ``original_oracle_frame``
  (MM-Embed) gets what its original script computed -- the clip (video) embedding is the frame embedding
  most similar to the clip's (video's) gold caption embedding, read from the caption rows of the same
  embeddings config (the text stage runs first). An ORACLE: it looks at the answer. Rows without a gold
  caption fall back to mean pooling and say ``interval:K``.

Decoding follows one plan per video (:mod:`lovr_hf.video.decode_plan`): the frames its clip and video rows need
from each source file are decoded in one sequential pass, converted at the size the embedder declares
(``decode_size``), and handed to the model chunk by chunk while decoding goes on; a pool of decode threads
(:class:`lovr_hf.video.prefetch.StreamPool`) works on the next videos under a byte budget.

An unreadable clip is skipped inside its video (as the original did): its row is ``error`` with the real
error, and the video row pools the readable clips -- its stride runs over them -- with status ``ok`` and
``error`` naming the clips left out. A video without any readable clip is an ``error`` row. A clip whose
file fails in the middle of decoding is left out of the video the same way (the stride of the later clips
is kept as planned). A model failure is ``failed`` for the clip and for its video.

The rules and the per-video plan live in :mod:`lovr_hf.evaluation.visual_plan`, the files path in :mod:`lovr_hf.evaluation.embed_files`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.evaluation.embed_files import FilesInput
from lovr_hf.evaluation.embed_stage import VISUAL_KINDS, EmbedStage
from lovr_hf.evaluation.models import EmbedConfig, check_embedder, resolved_interval
from lovr_hf.evaluation.visual_plan import (
    FrameRule,
    OracleChoice,
    RunningMean,
    VideoPlan,
    frame_rule,
    left_out_note,
    load_gold,
)
from lovr_hf.failures import message as failure_message
from lovr_hf.failures import reason_status
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stats.vectors import l2_normalize
from lovr_hf.video.decode_plan import error_text, read_source, size_request
from lovr_hf.video.prefetch import DEFAULT_PREFETCH_BYTES, StreamPool, resolve_workers

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _ClipState:
    """What the consumer accumulates for one readable clip while its frames stream in."""

    clip_mean: RunningMean = dataclasses.field(default_factory=RunningMean)
    video_mean: RunningMean = dataclasses.field(default_factory=RunningMean)
    clip_best: OracleChoice | None = None
    video_best: OracleChoice | None = None
    frames: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # native: slot -> frame
    vec: np.ndarray | None = None  # native: the clip's embedding, made as soon as the clip is complete
    problem: tuple[str, str] | None = None  # (status, error)
    left: int = 0  # slots not yet delivered


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------


class VideoEmbedStage(FilesInput, EmbedStage):
    """Videos (with their ordered clips) -> one ``clip`` row per clip and one ``video`` row per video."""

    input_key = schema.VIDEO_ID
    kinds = VISUAL_KINDS
    version = "2"  # 2: unreadable clips skipped inside their video; frame_rule and protocol on every row

    def __init__(self, config: EmbedConfig, slug: str, repo_root: str) -> None:
        super().__init__(config, slug)
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

    def fingerprint_extra(self) -> dict[str, Any]:
        p = super().fingerprint_extra()
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
        return l2_normalize(out)

    def _native(self, frames: np.ndarray) -> np.ndarray:
        """A video tower on ``frames``; an ``embed_video`` that returns None pools frame embeddings."""
        assert self._backend is not None
        v = self._backend.embed_video(frames)
        if v is None:
            return l2_normalize(self._frame_embeddings(frames).mean(axis=0))
        v = np.asarray(v, dtype=np.float32).reshape(-1)
        if not np.isfinite(v).all():
            raise ValueError("embed_video returned NaN/inf")
        return l2_normalize(v)

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
                st.clip_best = OracleChoice(g) if g is not None else None
                gv = gold.get(("video_caption", plan.video_id))
                st.video_best = OracleChoice(gv) if gv is not None else None
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
                    st.problem = st.problem or (schema.FAILED, failure_message(exc))
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
            st.problem = (schema.FAILED, failure_message(exc))
        st.frames = {k: f for k, f in st.frames.items() if plan.is_video[j][k]}

    def _on_error(self, plan: VideoPlan, states: dict[int, _ClipState], s: int, done: int, msg: str) -> None:
        """A source failed after ``done`` of its targets: every clip still missing frames is unreadable."""
        read = plan.reads[s]
        for r in read.requests:
            c = plan.readable[r]
            st = states[c]
            if st.left > 0 and st.problem is None:
                st.problem = (reason_status(msg), msg)  # a bug or a full disk is not a bad clip

    def _rows(self, plan: VideoPlan, states: dict[int, _ClipState]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        vid = plan.video_id
        video_mean, video_best = RunningMean(), None
        video_frames: list[np.ndarray] = []
        skipped: list[str] = []
        failed: tuple[str, str] | None = None
        n_video = 0
        for c, clip in enumerate(plan.clips):
            cid = clip[schema.CLIP_ID]
            st = states.get(c)
            if st is None:  # unreadable before decoding (bad input, unless the reason records a bug or a fault)
                rows.append(self._row("clip", cid, vid, None, 0, reason_status(plan.errors[c]), plan.errors[c]))
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
                rows.append(self._row("clip", cid, vid, None, 0, schema.FAILED, failure_message(exc)))
                failed = failed or (schema.FAILED, f"clip {cid}: {failure_message(exc)}")
                continue
            rows.append(self._row("clip", cid, vid, vec, nc, rule=rule))
            n_video += nv
            video_mean.merge(st.video_mean)
            if st.video_best is not None:
                video_best = video_best or OracleChoice(st.video_best.gold)
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
        note = left_out_note(skipped)
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
            rows.append(self._row("video", vid, vid, None, 0, schema.FAILED, failure_message(exc)))
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

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        for vid, clips in zip(batch[schema.VIDEO_ID], batch["clips"]):
            rows.extend(self._embed_video(vid, clips))
        return {self.outputs[0]: rows}


# ---------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------


#: a video's unit of visual embedding carries these clip fields, so its digest changes when a clip's
#: source range or file content changes (a re-cut file under the same name and length included)
_CLIP_FIELDS = (schema.CLIP_ID, schema.VIDEO_ID, schema.SLICE_NUM, "path", "frame_offset", "num_frames",
                "start_frame", "end_frame", "file_sha256")


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
    return VideoEmbedStage(config, slug, str(repo.root)), ds
