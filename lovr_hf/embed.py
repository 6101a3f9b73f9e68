"""Embedding stages: captions, clips and full videos -> the ``embeddings-<model_slug>`` config (Arrow float32).

Both stages run on the resumable map engine (:mod:`lovr_hf.stage`), so they shard over ``accelerate launch``
ranks or the original ``--num-chunks/--chunk-idx`` flags, commit batch by batch and resume after a kill.

* :class:`TextEmbedStage`: one per caption kind (``clip_caption``, ``video_caption``, ``theme_caption``);
  the unit is one caption row (``item_id`` = the clip or video it describes). Its fingerprint includes a
  hash of the caption texts, so re-captioned clips are embedded again instead of served stale.
* :class:`VideoEmbedStage`: the unit is a VIDEO (its ordered ``ok`` clips), producing one ``clip`` row per
  clip and one ``video`` row, so resume is per video. Frames follow the original LoVR evaluation: every
  ``interval`` frames of each clip from its first frame (original default 30; 10 for CLIP), while the
  full video samples the concatenation of its clips every ``interval`` frames (the stride runs on across
  clip boundaries: the original's ``start_offset``); or ``num_frames`` frames uniformly per clip and per
  video. Each frame is decoded and embedded once even when both the clip and the video use it. A clip /
  video embedding is the mean of its L2-normalised frame embeddings, re-normalised; an embedder whose
  ``embed_video`` returns a vector (a native video tower) is used for clips and videos instead.

Decoding runs in a thread pool ahead of the encoder, in pieces of at most ``frames_per_read`` frames (a
ten-minute static scene at interval 10 would otherwise hold thousands of full-size frames at once).
Per-batch timings (decode = I/O, encode) are committed with each batch and summed by :func:`cost_report`.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from filelock import FileLock

from lovr_hf import schema
from lovr_hf.backends.base import EMBEDDERS, Embedder
from lovr_hf.cli_common import RunControl
from lovr_hf.frames import interval_indices, uniform_indices, video_interval_indices
from lovr_hf.ids import check_id, safe_id, short_hash
from lovr_hf.prefetch import Prefetcher
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stage import DONE_FILE, Stage, StageResult, committed_batches, completed_keys, gather_table
from lovr_hf.video import read_clip_frames

logger = logging.getLogger(__name__)

#: caption kind -> the config its rows come from
TEXT_KINDS: dict[str, str] = {
    "clip_caption": schema.CLIP_CAPTIONS,
    "video_caption": schema.VIDEO_CAPTIONS,
    "theme_caption": schema.THEME_CAPTIONS,
}
VISUAL_KINDS = ("clip", "video")
ORIGINAL_INTERVAL = 30  # original evaluation default
CLIP_INTERVAL = 10  # the original CLIP script
TEXT_MODES = ("truncate", "chunk-mean")
_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module:Class (no '/', '-': never a Hub id)


@dataclasses.dataclass
class EmbedConfig:
    """What an embedding depends on (fingerprinted per stage) plus runtime knobs (``RUNTIME``, not)."""

    model: str = ""  # Hub id, local folder, open_clip spec, or module:Class
    backend: str = "auto"  # auto | transformers | dummy | open_clip | jina | module:Class
    revision: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    text_mode: str = "truncate"  # truncate (original) | chunk-mean
    max_text_tokens: int | None = None  # override the model's text limit
    interval: int | None = None  # None: 10 for CLIP models, 30 otherwise (original defaults)
    num_frames: int | None = None  # N uniform frames per clip and per video instead of --interval
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # runtime only
    batch_size: int = 64  # texts / frames per forward pass
    device: str = "auto"
    decode_workers: int = 2
    decode_backend: str = "auto"
    frames_per_read: int = 32  # frames decoded (and held) at once per clip piece
    prefetch_reads: int = 4  # pieces decoded ahead of the encoder
    text_rows_per_commit: int = 512
    videos_per_commit: int = 1

    RUNTIME: ClassVar[tuple[str, ...]] = (
        "batch_size", "device", "decode_workers", "decode_backend", "frames_per_read", "prefetch_reads",
        "text_rows_per_commit", "videos_per_commit",
    )


# ---------------------------------------------------------------------------------------------------------
# model resolution
# ---------------------------------------------------------------------------------------------------------


OPEN_CLIP_CONFIG = "open_clip_config.json"  # marks a local open_clip model folder (the Hub layout)


def resolve_backend(model: str, backend: str | None = "auto") -> str:
    """``auto``: ``module:Class`` given as the model -> that class; ``dummy``; jina-clip -> ``jina``;
    ``hf-hub:``/``open_clip:``/``local-dir:`` specs and local folders holding ``open_clip_config.json`` ->
    ``open_clip``; anything else -> ``transformers``."""
    if backend and backend != "auto":
        return backend
    if _PLUGIN.match(model):
        return model
    low = model.lower()
    if low == "dummy":
        return "dummy"
    if "jina-clip" in low:
        return "jina"
    if low.startswith(("hf-hub:", "open_clip:", "local-dir:")):
        return "open_clip"
    if os.path.isfile(os.path.join(os.path.expanduser(model), OPEN_CLIP_CONFIG)):
        return "open_clip"
    return "transformers"


def model_slug(model: str) -> str:
    """A folder-safe, stable name for a model (``[A-Za-z0-9_-]`` only; never escapes a folder).

    Hub ids keep their name (``openai/clip-vit-base-patch32`` -> ``openai__clip-vit-base-patch32``);
    local folders become ``<folder name>-<hash of the absolute path>`` (two folders named ``clip`` differ);
    anything else unsafe is slugged with a hash suffix (:func:`lovr_hf.ids.safe_id`).
    """
    text = model.strip()
    if not text:
        raise ValueError("empty model name")
    path = Path(text).expanduser()
    if not _PLUGIN.match(text) and path.exists():
        resolved = path.resolve()
        name = f"{resolved.name or 'model'}-{short_hash(str(resolved))}"
    else:
        name = text.replace("/", "__").replace(":", "__")
    return check_id(safe_id(name))


def default_interval(model: str, backend: str) -> int:
    """The original's frame interval: 10 for CLIP (model_type ``clip`` or a name starting with ``clip``)."""
    if backend == "transformers":
        cfg = Path(model).expanduser() / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("model_type") == "clip":
                    return CLIP_INTERVAL
            except (OSError, ValueError):
                pass
    name = model.rstrip("/").split("/")[-1].split(":")[-1].lower()
    return CLIP_INTERVAL if name.startswith("clip") else ORIGINAL_INTERVAL


def resolved_interval(config: EmbedConfig) -> int | None:
    """The interval actually used (None when ``num_frames`` uniform sampling is on)."""
    if config.num_frames:
        return None
    if config.interval is not None:
        if config.interval < 1:
            raise ValueError(f"interval must be >= 1, got {config.interval}")
        return int(config.interval)
    return default_interval(config.model, resolve_backend(config.model, config.backend))


def _accepted(factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``factory`` takes (all of them when it has ``**kwargs``): plug-ins need not accept all."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def check_embedder(config: EmbedConfig) -> type[Embedder]:
    """The embedder class for ``config``, refusing early: unknown backend, missing extra, or a model that
    runs remote code (class attribute ``requires_remote_code``) without ``trust_remote_code``."""
    backend = resolve_backend(config.model, config.backend)
    if backend == "open_clip":
        import importlib.util

        if importlib.util.find_spec("open_clip") is None:
            raise ImportError("the open_clip backend needs open_clip_torch: pip install 'lovr_hf[openclip]'")
    cls = EMBEDDERS.get(backend)
    if getattr(cls, "requires_remote_code", False) and not config.trust_remote_code:
        raise ValueError(f"{config.model} runs code from its Hub repo: pass --trust-remote-code "
                         "if you trust it")
    return cls


def make_embedder(config: EmbedConfig) -> Embedder:
    """The embedder for ``config`` (standard options filtered to what its class accepts)."""
    backend = resolve_backend(config.model, config.backend)
    cls = check_embedder(config)
    opts: dict[str, Any] = {
        "model_path": config.model, "device": config.device, "dtype": config.dtype, "revision": config.revision,
        "trust_remote_code": config.trust_remote_code, "batch_size": config.batch_size,
        "text_mode": config.text_mode, "max_text_tokens": config.max_text_tokens,
    }
    if backend == config.model or backend == "dummy":  # the model string names the class itself
        opts.pop("model_path")
    opts = _accepted(cls, opts)
    opts.update(config.backend_options)  # explicit options always go through
    return cls(**opts)


_EMBEDDERS_BUILT: dict[str, Embedder] = {}


def shared_embedder(config: EmbedConfig) -> Embedder:
    """One embedder per process and configuration: the text and video stages share it (a plug-in that
    loads weights in its constructor loads them once)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(EmbedConfig)}
    key = json.dumps(fields, sort_keys=True, default=str)
    if key not in _EMBEDDERS_BUILT:
        _EMBEDDERS_BUILT[key] = make_embedder(config)
    return _EMBEDDERS_BUILT[key]


def model_payload(config: EmbedConfig) -> dict[str, Any]:
    """The model identity part of a fingerprint."""
    return {
        "backend": resolve_backend(config.model, config.backend), "model": config.model,
        "revision": config.revision, "dtype": config.dtype,
        "backend_options": {k: v for k, v in config.backend_options.items() if "key" not in k.lower()},
    }


def l2n(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


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


# ---------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------


class _EmbedStage(Stage):
    """Shared parts: lazily built embedder, per-batch timings, and a gather that merges kinds.

    Several stages write one ``embeddings-<slug>`` config, so ``gather`` replaces only the kinds this stage
    produces (and only rows of units still in the input), under a lock.
    """

    kinds: tuple[str, ...] = ()
    version = "1"

    def __init__(self, config: EmbedConfig, slug: str, input_keys: Iterable[str] | None = None) -> None:
        super().__init__(config)
        self.slug = slug
        self.outputs = (schema.embeddings_config(slug),)  # type: ignore[misc]
        self.status_config = self.outputs[0]  # type: ignore[misc]
        self.input_keys = set(input_keys) if input_keys is not None else None
        self._backend: Embedder | None = None
        self._stats: dict[str, float] = {}
        self.card_stale = False  # set by gather when the config changed (run_stages refreshes the card once)

    def fingerprint_payload(self) -> dict[str, Any]:
        # the slug too: committed batch files are named after the output config
        return {"stage": self.name, "version": self.version, "model": model_payload(self.config),
                "output": self.outputs[0]}

    def setup(self) -> None:
        self._backend = shared_embedder(self.config)
        self._stats = {}

    def _add(self, key: str, value: float) -> None:
        self._stats[key] = self._stats.get(key, 0.0) + float(value)

    def batch_meta(self) -> dict[str, Any]:
        meta = {"kinds": list(self.kinds), **self._stats}
        self._stats = {}
        return meta

    def model_id(self) -> str:
        assert self._backend is not None
        return self._backend.model_id()

    def gather(self, repo: BenchmarkRepo) -> dict[str, Dataset]:
        work = self.work_path(repo)
        config = self.outputs[0]
        mine = gather_table(work, config, self.input_key)
        if self.input_keys is not None and mine.num_rows:
            mine = mine.filter(pc.is_in(mine[self.input_key], value_set=pa.array(sorted(self.input_keys))))
        repo.work_root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(repo.work_root / "embeddings.lock")):
            before = repo.config_files().get(config)
            if before is not None:
                old = repo.read_table(config)
                keep = old.filter(pc.invert(pc.is_in(old["kind"], value_set=pa.array(list(self.kinds)))))
                mine = pa.concat_tables([keep, mine])
            # shard names carry a content hash: same names = same rows, and the card body can wait
            self.card_stale |= repo.write(config, mine, update_card=False) != before
        for marker in work.glob("rerun-*.json"):
            marker.unlink(missing_ok=True)
        return {config: repo.read(config)}


class TextEmbedStage(_EmbedStage):
    """Caption rows of one kind -> text embedding rows (``num_frames`` = text chunks averaged)."""

    input_key = "item_id"

    def __init__(self, config: EmbedConfig, kind: str, slug: str, inputs_hash: str = "",
                 input_keys: Iterable[str] | None = None) -> None:
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown caption kind {kind!r}; known: {sorted(TEXT_KINDS)}")
        if config.text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {config.text_mode!r}")
        super().__init__(config, slug, input_keys)
        self.kind = kind
        self.kinds = (kind,)
        self.name = f"embed-text-{kind}"  # type: ignore[misc]
        self.inputs_hash = inputs_hash
        self.batch_size = max(1, int(config.text_rows_per_commit))

    def fingerprint_payload(self) -> dict[str, Any]:
        p = super().fingerprint_payload()
        p.update(text_mode=self.config.text_mode, max_text_tokens=self.config.max_text_tokens,
                 inputs=self.inputs_hash)
        return p

    def _chunks(self, text: str) -> int:
        """Text chunks averaged for ``text`` (1 when truncating or when the embedder cannot tell)."""
        backend = self._backend
        if self.config.text_mode == "chunk-mean" and hasattr(backend, "text_chunk_ids"):
            return len(backend.text_chunk_ids(text))  # type: ignore[union-attr]
        return 1

    def _embed(self, texts: list[str]) -> np.ndarray:
        assert self._backend is not None
        out = np.asarray(self._backend.embed_text(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(f"embed_text returned shape {out.shape} for {len(texts)} texts")
        if not np.isfinite(out).all():
            raise ValueError("embed_text returned NaN/inf")
        return l2n(out)

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        texts = [str(t or "") for t in batch[schema.CAPTION]]
        t0 = time.perf_counter()
        vecs: list[np.ndarray | None]
        errors: list[str | None] = [None] * len(texts)
        try:
            vecs = list(self._embed(texts))
        except Exception as exc:  # a bad batch: embed one by one so one text cannot sink the rest
            logger.warning("%s: batch of %d failed (%s: %s); embedding one by one", self.name, len(texts),
                           type(exc).__name__, exc)
            vecs = []
            for i, t in enumerate(texts):
                try:
                    vecs.append(self._embed([t])[0])
                except Exception as one:
                    vecs.append(None)
                    errors[i] = f"{type(one).__name__}: {one}"
        self._add("text_encode_s", time.perf_counter() - t0)
        self._add("texts", len(texts))
        model = self.model_id()
        rows = []
        for item, vid, text, vec, err in zip(batch["item_id"], batch[schema.VIDEO_ID], texts, vecs, errors):
            rows.append({
                "model": model, "kind": self.kind, "item_id": item, schema.VIDEO_ID: vid,
                "embedding": None if vec is None else vec.tolist(),
                "num_frames": self._chunks(text) if vec is not None else 0, "text_mode": self.config.text_mode,
                "interval": None, "uniform_frames": None,
                schema.STATUS: schema.FAILED if err else schema.OK, schema.ERROR_COL: err,
            })
        return {self.outputs[0]: rows}


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


# ---------------------------------------------------------------------------------------------------------
# inputs and running
# ---------------------------------------------------------------------------------------------------------


def text_inputs(repo: BenchmarkRepo, kind: str) -> Dataset | None:
    """``ok`` caption rows of one kind as ``item_id, video_id, caption`` (None when the config is absent).

    Theme captions: ``item_id`` is the clip id, or the video id for a video-level theme (empty clip id).
    """
    config = TEXT_KINDS[kind]
    if not repo.has(config):
        return None
    t = repo.read_table(config)
    t = t.filter(pc.equal(t[schema.STATUS], schema.OK))
    vids = t.column(schema.VIDEO_ID).to_pylist()
    if kind == "video_caption":
        items = vids
    else:
        items = [c or v for c, v in zip(t.column(schema.CLIP_ID).to_pylist(), vids)]
    caps = [c or "" for c in t.column(schema.CAPTION).to_pylist()]
    return Dataset.from_dict({"item_id": items, schema.VIDEO_ID: vids, schema.CAPTION: caps})


def texts_hash(ds: Dataset) -> str:
    h = hashlib.sha256()
    for item, cap in zip(ds["item_id"], ds[schema.CAPTION]):
        h.update(item.encode() + b"\0" + cap.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:16]


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


def text_stages(repo: BenchmarkRepo, config: EmbedConfig, slug: str) -> list[tuple[TextEmbedStage, Dataset]]:
    out = []
    for kind in TEXT_KINDS:
        ds = text_inputs(repo, kind)
        if ds is None or not len(ds):
            continue
        out.append((TextEmbedStage(config, kind, slug, texts_hash(ds), ds["item_id"]), ds))
    return out


def video_stage(repo: BenchmarkRepo, config: EmbedConfig, slug: str) -> tuple[VideoEmbedStage, Dataset]:
    ds = video_inputs(repo)
    return VideoEmbedStage(config, slug, str(repo.root), ds[schema.VIDEO_ID]), ds


@dataclasses.dataclass
class EmbedRun:
    """What :func:`embed` did: per stage results and whether every stage's input is fully embedded."""

    results: dict[str, StageResult] = dataclasses.field(default_factory=dict)
    complete: bool = True
    missing: dict[str, int] = dataclasses.field(default_factory=dict)
    card_stale: bool = False


def run_stages(
    stages: list[tuple[_EmbedStage, Dataset]],
    repo: BenchmarkRepo,
    control: RunControl,
    *,
    gather_only: bool = False,
    refresh_card: bool = True,
) -> EmbedRun:
    """Apply (or only gather) each stage; record which still miss units (other chunks not finished).

    The card is refreshed once at the end when a config changed (``refresh_card=False``: the caller does it;
    ``EmbedRun.card_stale`` says whether it must).
    """
    run = EmbedRun()
    shard = control.shard()
    for stage, ds in stages:
        if gather_only:
            if not committed_batches(stage.work_path(repo)):
                # nothing computed with these settings: never replace rows made with other settings by nothing
                logger.warning("%s: nothing to merge with these settings [%s]", stage.name, stage.fingerprint())
                continue
            stage.gather(repo)
        else:
            run.results[stage.name] = stage.apply(ds, repo, shard=shard, num_proc=control.num_proc,
                                                  rerun=control.rerun, retry_failed=control.retry_failed)
        missing = len(set(ds[stage.input_key]) - completed_keys(stage.work_path(repo)))
        if missing:
            run.missing[stage.name] = missing
            run.complete = False
    run.card_stale = any(stage.card_stale for stage, _ in stages)
    for stage, _ in stages:
        stage.card_stale = False
    if run.card_stale and refresh_card:
        repo.refresh_card()
        run.card_stale = False
    return run


def embed(
    repo: BenchmarkRepo | str,
    config: EmbedConfig,
    control: RunControl | None = None,
    *,
    slug: str | None = None,
    text: bool = True,
    video: bool = True,
    gather_only: bool = False,
) -> EmbedRun:
    """Library entry point: embed captions and/or clips+videos of ``repo`` into ``embeddings-<slug>``."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    control = control or RunControl()
    slug = slug or model_slug(config.model)
    stages: list[tuple[_EmbedStage, Dataset]] = []
    if text:
        stages.extend(text_stages(repo, config, slug))
    if video and repo.has(schema.CLIPS):
        stages.append(video_stage(repo, config, slug))
    return run_stages(stages, repo, control, gather_only=gather_only or control.gather_only)


# ---------------------------------------------------------------------------------------------------------
# cost report
# ---------------------------------------------------------------------------------------------------------


def _live_metas(work: Path) -> list[dict[str, Any]]:
    """Metas of committed batches that still own at least one of their keys (not wholly superseded)."""
    batches = committed_batches(work)
    done = [json.loads((b / DONE_FILE).read_text()) for b in batches]
    owner: dict[str, int] = {}
    for i, d in enumerate(done):
        for k in d["keys"]:
            owner[k] = i
    return [d.get("meta", {}) for i, d in enumerate(done) if any(owner[k] == i for k in d["keys"])]


def cost_report(repo: BenchmarkRepo, config: EmbedConfig, slug: str | None = None) -> dict[str, Any]:
    """I/O (decode) vs encode time in ms, total / clips / full videos / captions, for ``config``'s model.

    Sums over every committed batch of the current embeddings (all runs, all ranks: process time, not wall
    time). Frames shared by a clip and its video are decoded and encoded once and charged to both rows, so
    ``clips + videos`` can exceed ``total``.
    """
    slug = slug or model_slug(config.model)
    vis: dict[str, float] = {}
    txt: dict[str, float] = {}
    stages: list[_EmbedStage] = [s for s, _ in text_stages(repo, config, slug)]
    if repo.has(schema.CLIPS):
        stages.append(VideoEmbedStage(config, slug, str(repo.root)))
    for stage in stages:
        for meta in _live_metas(stage.work_path(repo)):
            target = vis if isinstance(stage, VideoEmbedStage) else txt
            for k, v in meta.items():
                if isinstance(v, (int, float)):
                    target[k] = target.get(k, 0.0) + float(v)
    ms = 1000.0
    report = {
        "clips": {"items": int(vis.get("clips", 0)), "frames": int(vis.get("clip_frames", 0)),
                  "io_ms": vis.get("clip_decode_s", 0.0) * ms, "encode_ms": vis.get("clip_encode_s", 0.0) * ms},
        "videos": {"items": int(vis.get("videos", 0)), "frames": int(vis.get("video_frames", 0)),
                   "io_ms": vis.get("video_decode_s", 0.0) * ms,
                   "encode_ms": vis.get("video_encode_s", 0.0) * ms},
        "captions": {"items": int(txt.get("texts", 0)), "frames": 0, "io_ms": 0.0,
                     "encode_ms": txt.get("text_encode_s", 0.0) * ms},
    }
    report["total"] = {
        "items": report["clips"]["items"] + report["videos"]["items"] + report["captions"]["items"],
        "frames": int(vis.get("frames_read", 0)),
        "io_ms": vis.get("decode_s", 0.0) * ms,
        "encode_ms": (vis.get("encode_s", 0.0) + txt.get("text_encode_s", 0.0)) * ms,
    }
    for part in report.values():
        part["ms_per_item"] = (part["io_ms"] + part["encode_ms"]) / part["items"] if part["items"] else 0.0
    return report

