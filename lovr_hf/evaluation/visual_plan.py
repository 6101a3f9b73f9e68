"""Which frames the visual stage feeds a model, and the plan for one video: readable clips, sampled frames,
one read per source file; plus the running pools (mean, oracle frame) the stage accumulates into.

The rules (recorded on every embedding row as ``frame_rule``) are documented in :mod:`lovr_hf.evaluation.embed_video`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.backends.base import Embedder
from lovr_hf.evaluation.models import EmbedConfig, resolved_interval
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stats.vectors import l2_normalize
from lovr_hf.video.decode_plan import FrameRequest, SourceRead, error_text, group_by_source
from lovr_hf.video.frames import interval_indices, uniform_indices, video_interval_indices
from lovr_hf.video.reader import probe

logger = logging.getLogger(__name__)

#: clip ids listed by name in a video row's ``error`` before "+N more"
MAX_LISTED = 20


def has_native_video(backend: Embedder | type[Embedder]) -> bool:
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
        return f"oracle:{base}" if self.oracle else base  # "oracle:" first: how scoring spots an oracle run


def frame_rule(cls: type[Embedder], config: EmbedConfig, instance: Embedder | None = None) -> FrameRule:
    """The rule for embedder class ``cls`` under ``config``.

    What kind of model it is comes from the class (so a wrapper around the instance -- e.g. the channel
    swap of ``--protocol original`` -- cannot change it); a video tower's frame count from the built
    ``instance`` when given (adapters read it from the model's config). ``--num-frames N`` overrides a
    video tower's own count (recorded as ``native:N``); a class implementing ``embed_video`` without
    declaring ``video_frames`` gets the configured sampling (``native+interval:K``).
    """
    if cls.video_input == "files":
        return FrameRule("files")
    interval = resolved_interval(config)
    if has_native_video(cls):
        n = config.num_frames or (instance if instance is not None else cls).video_frames
        return FrameRule("native", None if n else interval, int(n) if n else None)
    oracle = config.protocol == "original" and cls.original_oracle_frame
    return FrameRule("pool", interval, config.num_frames or None, oracle)


# ---------------------------------------------------------------------------------------------------------
# the per-video plan and the pools
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
    def build(cls, video_id: str, clips: Sequence[dict[str, Any]], rule: FrameRule, root: str | None) -> VideoPlan:
        ordered = sorted(clips, key=lambda c: c[schema.SLICE_NUM])
        errors: dict[int, str] = {}
        refs: dict[int, FrameRequest] = {}
        for c, clip in enumerate(ordered):
            try:
                ref = FrameRequest.from_row(clip[schema.CLIP_ID], clip, (), root)
                if ref.num_frames <= 0:
                    raise ValueError("clip has no frames")
                ref.check(probe(ref.path).num_frames)  # unreadable: skipped before the stride is laid out
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


class RunningMean:
    """Running mean of L2-normalised vectors in float64: equal to ``l2_normalize(frames.mean(0))`` within float32
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

    def merge(self, other: RunningMean) -> None:
        if other.total is not None:
            self.total = other.total.copy() if self.total is None else self.total + other.total
            self.n += other.n

    def vector(self) -> np.ndarray:
        assert self.total is not None and self.n
        return l2_normalize((self.total / self.n).astype(np.float32))


class OracleChoice:
    """Running arg-max of cosine similarity to one gold vector: the oracle frame of MM-Embed's original
    script (``lovr_hf.backends.embedders.mm_embed.oracle_frame``: highest cosine, first one on ties), kept
    chunk by chunk instead of over all frames at once."""

    __slots__ = ("gold", "sim", "vec")

    def __init__(self, gold: np.ndarray) -> None:
        self.gold = l2_normalize(np.asarray(gold, dtype=np.float32).reshape(-1))
        self.sim = -np.inf
        self.vec: np.ndarray | None = None

    def add(self, vecs: np.ndarray) -> None:
        if not len(vecs):
            return
        sims = vecs @ self.gold
        i = int(np.argmax(sims))
        if sims[i] > self.sim:
            self.sim, self.vec = float(sims[i]), vecs[i].copy()

    def merge(self, other: OracleChoice) -> None:
        if other.vec is not None and other.sim > self.sim:
            self.sim, self.vec = other.sim, other.vec


def left_out_note(skipped: Sequence[str]) -> str | None:
    """The ``error`` of a video row that pooled its readable clips only (None when none was left out)."""
    if not skipped:
        return None
    more = f" (+{len(skipped) - MAX_LISTED} more)" if len(skipped) > MAX_LISTED else ""
    return f"left out {len(skipped)} unreadable clip(s): {', '.join(skipped[:MAX_LISTED])}{more}"


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
