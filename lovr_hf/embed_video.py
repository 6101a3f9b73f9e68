"""Visual embedding stage: clips and full videos -> ``clip`` and ``video`` rows of ``embeddings-<model_slug>``.

The unit is a VIDEO (its ordered ``ok`` clips), producing one ``clip`` row per clip and one ``video`` row,
so resume is per video. Frames follow the original LoVR evaluation: every ``interval`` frames of each clip
from its first frame (original default 30; 10 for CLIP), while the full video samples the concatenation of
its clips every ``interval`` frames (the stride runs on across clip boundaries: the original's
``start_offset``); or ``num_frames`` frames uniformly per clip and per video. Each frame is decoded and
embedded once even when both the clip and the video use it. A clip / video embedding is the mean of its
L2-normalised frame embeddings, re-normalised; an embedder whose ``embed_video`` returns a vector (a native
video tower) is used for clips and videos instead.

Decoding runs in a thread pool ahead of the encoder, in pieces of at most ``frames_per_read`` frames (a
ten-minute static scene at interval 10 would otherwise hold thousands of full-size frames at once).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.backends.base import Embedder
from lovr_hf.embed import VISUAL_KINDS, _EmbedStage, l2n
from lovr_hf.frames import interval_indices, uniform_indices, video_interval_indices
from lovr_hf.models import EmbedConfig, resolved_interval
from lovr_hf.prefetch import Prefetcher
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video import read_clip_frames

_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: str) -> threading.Lock:
    """One lock per file: lovr_hf.video caches one decord reader per file, and a decord VideoReader used
    from two threads at once can deadlock (seen with two pieces of one clip decoding together)."""
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


def _has_native_video(backend: Embedder) -> bool:
    return type(backend).embed_video is not Embedder.embed_video


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


@dataclasses.dataclass
class VideoPlan:
    """What to decode for one video: per clip the sorted union of clip and video indices, in pieces."""

    video_id: str
    clips: list[dict[str, Any]]
    clip_sel: list[list[int]]
    video_sel: list[list[int]]
    reads: list[list[int]]
    pieces: list[list[tuple[str, int, int, int]]]  # per clip: (video_id, clip index, start, end) of reads

    @classmethod
    def build(cls, video_id: str, clips: list[dict[str, Any]], interval: int | None, num_frames: int | None,
              frames_per_read: int) -> VideoPlan:
        clip_sel, video_sel = sample_video([c["num_frames"] or 0 for c in clips], interval=interval,
                                           num_frames=num_frames)
        reads = [sorted(set(a) | set(b)) for a, b in zip(clip_sel, video_sel)]
        step = max(1, frames_per_read)
        pieces = [[(video_id, c, i, min(i + step, len(r))) for i in range(0, len(r), step)]
                  for c, r in enumerate(reads)]
        return cls(video_id, clips, clip_sel, video_sel, reads, pieces)



class VideoEmbedStage(_EmbedStage):
    """Videos (with their ordered clips) -> one ``clip`` row per clip and one ``video`` row per video."""

    input_key = schema.VIDEO_ID
    kinds = VISUAL_KINDS

    def __init__(self, config: EmbedConfig, slug: str, repo_root: str,
                 input_keys: Iterable[str] | None = None) -> None:
        super().__init__(config, slug, input_keys)
        self.name = "embed-video"  # type: ignore[misc]
        self.repo_root = repo_root
        self.interval = resolved_interval(config)
        self.batch_size = max(1, int(config.videos_per_commit))
        self.plans: dict[str, VideoPlan] = {}
        self.order: list[tuple[str, int, int, int]] = []
        self._prefetch: Prefetcher | None = None
        self._native = False

    def fingerprint_payload(self) -> dict[str, Any]:
        p = super().fingerprint_payload()
        p.update(interval=self.interval, num_frames=self.config.num_frames or None)
        return p

    def _plan(self, video_id: str, clips: list[dict[str, Any]]) -> VideoPlan:
        plan = self.plans.get(video_id)
        if plan is None:
            ordered = sorted(clips, key=lambda c: c[schema.SLICE_NUM])
            plan = VideoPlan.build(video_id, ordered, self.interval, self.config.num_frames,
                                   self.config.frames_per_read)
            self.plans[video_id] = plan
        return plan

    def prepare(self, todo: Dataset) -> None:
        self.plans = {}
        self.order = []
        for row in todo:
            plan = self._plan(row[schema.VIDEO_ID], row["clips"])
            self.order.extend(p for pieces in plan.pieces for p in pieces)

    def setup(self) -> None:
        super().setup()
        assert self._backend is not None
        self._native = _has_native_video(self._backend)
        cfg = self.config
        self._prefetch = Prefetcher(self.order, self._decode, cfg.decode_workers, max(1, cfg.prefetch_reads))

    def _decode(self, key: tuple[str, int, int, int]) -> tuple[np.ndarray | None, str | None, float]:
        """(frames, error, seconds) of one piece; never raises (a bad clip becomes an error row)."""
        vid, c, a, b = key
        t0 = time.perf_counter()
        plan = self.plans[vid]
        clip = plan.clips[c]
        lock = _file_lock(str(clip["path"])) if self.config.decode_backend != "pyav" else None
        try:
            if lock is None:
                frames = read_clip_frames(clip, plan.reads[c][a:b], root=self.repo_root, backend="pyav")
            else:
                with lock:
                    frames = read_clip_frames(clip, plan.reads[c][a:b], root=self.repo_root,
                                              backend=self.config.decode_backend)
        except Exception as exc:
            return None, f"cannot decode clip: {type(exc).__name__}: {exc}", time.perf_counter() - t0
        return frames, None, time.perf_counter() - t0

    def _frame_embeddings(self, frames: np.ndarray) -> np.ndarray:
        assert self._backend is not None
        out = np.asarray(self._backend.embed_frames(frames), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(frames):
            raise ValueError(f"embed_frames returned shape {out.shape} for {len(frames)} frames")
        if not np.isfinite(out).all():
            raise ValueError("embed_frames returned NaN/inf")
        return l2n(out)

    def _pool(self, frames: np.ndarray | None, emb: np.ndarray | None) -> np.ndarray:
        """Native video tower when the embedder has one, else mean of normalised frames, re-normalised."""
        assert self._backend is not None
        if self._native and frames is not None:
            v = self._backend.embed_video(frames)
            if v is not None:
                return l2n(np.asarray(v, dtype=np.float32).reshape(-1))
            emb = self._frame_embeddings(frames)
        assert emb is not None
        return l2n(emb.mean(axis=0))

    def _row(self, kind: str, item: str, vid: str, vec: np.ndarray | None, n: int, status: str = schema.OK,
             error: str | None = None) -> dict[str, Any]:
        return {"model": self.model_id(), "kind": kind, "item_id": item, schema.VIDEO_ID: vid,
                "embedding": None if vec is None else vec.tolist(), "num_frames": n, "text_mode": None,
                "interval": self.interval, "uniform_frames": self.config.num_frames or None,
                schema.STATUS: status, schema.ERROR_COL: error}

    def _embed_video(self, plan: VideoPlan) -> list[dict[str, Any]]:
        assert self._prefetch is not None
        rows: list[dict[str, Any]] = []
        video_parts: list[np.ndarray] = []  # frame embeddings (or frames, native) pooled into the video
        video_problem: tuple[str, str] | None = None
        for c, clip in enumerate(plan.clips):
            cid = clip[schema.CLIP_ID]
            reads = plan.reads[c]
            clip_set, video_set = set(plan.clip_sel[c]), set(plan.video_sel[c])
            parts: list[np.ndarray] = []
            problem: tuple[str, str] | None = None if reads else (schema.ERROR, "clip has no frames")
            for key in plan.pieces[c]:  # drain every piece, even after an error (frees prefetched frames)
                frames, reason, secs = self._prefetch.get([key])[0]
                idx = reads[key[2] : key[3]]
                share_c = sum(i in clip_set for i in idx) / max(1, len(idx))
                share_v = sum(i in video_set for i in idx) / max(1, len(idx))
                self._add("decode_s", secs)
                self._add("clip_decode_s", secs * share_c)
                self._add("video_decode_s", secs * share_v)
                if problem is not None:
                    continue
                if frames is None:
                    problem = (schema.ERROR, reason or "cannot decode")
                    continue
                self._add("frames_read", len(idx))
                if self._native:
                    parts.append(frames)
                    continue
                t0 = time.perf_counter()
                try:
                    parts.append(self._frame_embeddings(frames))
                except Exception as exc:
                    problem = (schema.FAILED, f"{type(exc).__name__}: {exc}")
                secs = time.perf_counter() - t0
                self._add("encode_s", secs)
                self._add("clip_encode_s", secs * share_c)
                self._add("video_encode_s", secs * share_v)
            if problem is None:
                pos = {f: i for i, f in enumerate(reads)}
                data = np.concatenate(parts)
                sel = [pos[i] for i in plan.clip_sel[c]]
                t0 = time.perf_counter()
                try:
                    vec = self._pool(data[sel] if self._native else None, None if self._native else data[sel])
                except Exception as exc:
                    problem = (schema.FAILED, f"{type(exc).__name__}: {exc}")
                if self._native:
                    secs = time.perf_counter() - t0
                    self._add("encode_s", secs)
                    self._add("clip_encode_s", secs)
                video_parts.append(data[[pos[i] for i in plan.video_sel[c]]])
            if problem is None:
                rows.append(self._row("clip", cid, plan.video_id, vec, len(sel)))
            else:
                rows.append(self._row("clip", cid, plan.video_id, None, 0, *problem))
                if video_problem is None or problem[0] == schema.FAILED:
                    video_problem = (problem[0], f"clip {cid}: {problem[1]}")
        self._add("clips", len(plan.clips))
        self._add("clip_frames", sum(len(s) for s in plan.clip_sel))
        self._add("video_frames", sum(len(s) for s in plan.video_sel))
        self._add("videos", 1)
        n_video = sum(len(s) for s in plan.video_sel)
        if video_problem is None and n_video == 0:
            video_problem = (schema.ERROR, "video has no frames")
        if video_problem is not None:
            rows.append(self._row("video", plan.video_id, plan.video_id, None, 0, *video_problem))
            return rows
        t0 = time.perf_counter()
        data = np.concatenate(video_parts)
        try:
            vec = self._pool(data if self._native else None, None if self._native else data)
            rows.append(self._row("video", plan.video_id, plan.video_id, vec, n_video))
        except Exception as exc:
            rows.append(self._row("video", plan.video_id, plan.video_id, None, 0, schema.FAILED,
                                  f"{type(exc).__name__}: {exc}"))
        secs = time.perf_counter() - t0
        self._add("encode_s", secs)
        self._add("video_encode_s", secs)
        return rows

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        for vid, clips in zip(batch[schema.VIDEO_ID], batch["clips"]):
            rows.extend(self._embed_video(self._plan(vid, clips)))
        return {self.outputs[0]: rows}


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

