"""Stage 2: clips -> ``clip_captions`` with a vision-language model.

One ``Dataset.map(batched=True)`` over the ``clips`` rows. Frames follow the original LoVR captioner
(min(64, max(8, whole seconds)) uniform frames; 2 frames under 8; skip under 5; see :mod:`lovr_hf.video.frames`)
and are decoded by a thread pool running ahead of the model (PyAV releases the GIL), bounded in clips
and in bytes, so generation does not wait on decoding. The model is created lazily in the process that
runs the map (one per GPU under ``accelerate launch``) and is never pickled.

Optional quality scoring re-captions weak clips with settings that can change the outcome (LoVR Fig. 2,
:mod:`lovr_hf.caption.refine`); still weak -> ``needs_review``. A judge that cannot score is a ``failed``
row with the judge's error, never a low score. Every flag is either used by the chosen backend or
refused with a clear error (:func:`check_backend_flags`): nothing that is fingerprinted is silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, NamedTuple

import numpy as np
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.backends.base import Captioner, GenerationParams, QualityScorer
from lovr_hf.caption.backends import check_backend_flags, make_captioner, make_scorer
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.refine import REFINE_SUFFIX, ClipFrames, QualityLoop, Variant, default_variant
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.stage import Stage, StageResult
from lovr_hf.engine.workdir import batch_metas
from lovr_hf.failures import input_failure, reason_status, start_backend
from lovr_hf.failures import message as failure_message
from lovr_hf.prompts import prompt_hash
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.video.decode_plan import ClipDecoder, size_request
from lovr_hf.video.frames import caption_frame_plan

logger = logging.getLogger(__name__)


def clip_duration(row: dict[str, Any]) -> float:
    """Seconds of a clip row: its time range, else frames / fps (release clips may lack times)."""
    dur = (row.get("end_time") or 0.0) - (row.get("start_time") or 0.0)
    if dur <= 0 and row.get("fps"):
        dur = (row.get("num_frames") or 0) / row["fps"]
    return max(0.0, float(dur))


def sampled_fps(row: dict[str, Any], n_frames: int) -> float:
    """The rate ``n_frames`` uniform frames of the clip were sampled at, as ``qwen_vl_utils`` computes it
    (``nframes / total_frames * video_fps``); from the duration when the row lacks frames or fps."""
    total, fps = int(row.get("num_frames") or 0), float(row.get("fps") or 0.0)
    if total > 0 and fps > 0:
        return n_frames / total * fps
    dur = clip_duration(row)
    return float(n_frames / dur) if dur > 0 else 1.0


class Decoded(NamedTuple):
    """One clip's decoded frames (None when skipped or unreadable), the reason, seconds and indices."""

    frames: np.ndarray | None
    reason: str | None
    seconds: float
    indices: tuple[int, ...] = ()
    #: the row status when unreadable (``error`` = bad input; ``failed`` = the environment's fault or a bug)
    status: str = schema.ERROR

    @property
    def nbytes(self) -> int:
        """Bytes of decoded frames held (what a byte-bounded prefetcher accounts)."""
        return int(self.frames.nbytes) if self.frames is not None else 0


class PlannedDecode:
    """The caption stage's decoding: :class:`lovr_hf.video.decode_plan.ClipDecoder` over the clips to do, in order.

    Consecutive clips of one source video are decoded by ONE sequential pass that converts only the frames
    of the caption rule, directly at the size the captioner declares (``decode_size``, e.g. a VLM's pixel
    budget; none = full size), on decode threads running ahead of the model under the byte budget
    ``prefetch_bytes``. Skipped clips are never decoded; a clip asked for that was not planned (a row from a
    worker process that did not run ``prepare``) is planned on the spot. Same results as ``_decode``.
    """

    def __init__(self, stage: CaptionStage) -> None:
        cfg = stage.config
        self.stage = stage
        self.plans = {k: stage._plan(stage.rows[k], cfg.max_frames) for k in stage.order}
        rows = [stage.rows[k] for k in stage.order if not self.plans[k].skipped]
        self.frames = ClipDecoder(rows, {k: p.indices for k, p in self.plans.items() if not p.skipped},
                                  root=stage.repo_root, size=size_request(stage._backend),
                                  workers=cfg.decode_workers, max_bytes=cfg.prefetch_bytes,
                                  depth=cfg.batch_size * max(1, cfg.prefetch_batches))

    @property
    def wait_s(self) -> float:
        return self.frames.wait_s

    @wait_s.setter
    def wait_s(self, value: float) -> None:
        self.frames.wait_s = value

    def get(self, ids: list[str]) -> list[Decoded]:
        stage = self.stage
        for k in ids:
            if k not in self.plans:
                self.plans[k] = stage._plan(stage.rows[k], stage.config.max_frames)
                if not self.plans[k].skipped:
                    self.frames.add(stage.rows[k], self.plans[k].indices)
        need = [k for k in ids if not self.plans[k].skipped]
        got = dict(zip(need, self.frames.get(need)))
        out = []
        for k in ids:
            plan = self.plans[k]
            if plan.skipped:
                out.append(Decoded(None, f"skipped: {plan.skip_reason}", 0.0))
            else:
                frames, reason, secs = got[k]
                out.append(Decoded(frames, reason, secs, tuple(plan.indices) if frames is not None else (),
                                   status=reason_status(reason)))
        return out

    def close(self) -> None:
        self.frames.close()


@dataclasses.dataclass
class _Outcome:
    cid: str
    text: str
    error: str | None
    indices: tuple[int, ...]
    fps: float


class CaptionStage(QualityLoop, Stage):
    name = "caption"
    input_key = schema.CLIP_ID
    outputs = (schema.CLIP_CAPTIONS,)
    status_config = schema.CLIP_CAPTIONS

    def __init__(self, config: CaptionConfig, repo_root: str, debug: bool = False) -> None:
        super().__init__(config)
        self.repo_root = repo_root
        self.debug = debug
        self.runtime_fields = CaptionConfig.RUNTIME
        self.rows: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self._backend: Captioner | None = None
        self._scorer: QualityScorer | None = None
        self._prefetch: PlannedDecode | None = None
        self._stats: dict[str, float] = {}
        self._debug_left = 1 if debug else 0

    def fingerprint_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        cfg.pop("prompt_file", None)  # the prompt's text counts (fingerprint_extra), not where it was read
        return cfg

    def fingerprint_extra(self) -> dict[str, Any]:
        return {"prompt_hash": self.prompt_hash()}

    def prompt_hash(self) -> str:
        p = self.config.prompts()
        return prompt_hash(p["system"], p["user"])

    # ---- lifecycle -----------------------------------------------------------------------------------
    def prepare(self, todo: Dataset) -> None:
        self.rows = {r[schema.CLIP_ID]: r for r in todo}
        self.order = list(self.rows)

    def setup(self) -> None:
        cfg = self.config
        self._backend = start_backend(lambda: make_captioner(cfg), cfg.model_path, "captioner")
        self._scorer = make_scorer(cfg) if cfg.min_quality is not None else None
        self._prefetch = self._make_prefetcher()
        self._stats = {"decode_s": 0.0, "decode_wait_s": 0.0, "generate_s": 0.0, "tokens_out": 0.0, "clips": 0.0}

    def _make_prefetcher(self) -> PlannedDecode:
        """Decode ahead with one sequential pass per source video (:class:`PlannedDecode`), at most
        ``batch_size * prefetch_batches`` sources and ``prefetch_bytes`` of frames ahead of the model."""
        if self._prefetch is not None:
            self._prefetch.close()
        return PlannedDecode(self)

    def batch_meta(self) -> dict[str, Any]:
        meta = dict(self._stats)
        if self._prefetch is not None:
            meta["decode_wait_s"] = self._prefetch.wait_s
            self._prefetch.wait_s = 0.0
        for k in self._stats:
            self._stats[k] = 0.0
        return meta

    # ---- decoding --------------------------------------------------------------------------------------
    def _plan(self, row: dict[str, Any], max_frames: int):
        return caption_frame_plan(int(row["num_frames"] or 0), clip_duration(row),
                                  min_frames=self.config.min_frames, max_frames=max_frames)

    def _decode(self, clip_id: str, max_frames: int | None) -> Decoded:
        """Frames of one clip under a frame cap. Never raises: a bad clip becomes a reason."""
        from lovr_hf.video.reader import read_clip_frames

        t0 = time.perf_counter()
        row = self.rows[clip_id]
        plan = self._plan(row, max_frames or self.config.max_frames)
        if plan.skipped:
            return Decoded(None, f"skipped: {plan.skip_reason}", 0.0)
        try:
            frames = read_clip_frames(row, plan.indices, root=self.repo_root, backend=self.config.decode_backend)
        except Exception as exc:  # unreadable clip: recorded on its row (bad input, or the environment's / a bug)
            f = input_failure(exc)
            return Decoded(None, f"cannot decode clip: {f.message}", time.perf_counter() - t0, status=f.status)
        return Decoded(frames, None, time.perf_counter() - t0, tuple(plan.indices))

    # ---- captioning ------------------------------------------------------------------------------------
    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._backend is not None and self._prefetch is not None
        ids = list(batch[schema.CLIP_ID])
        for i, cid in enumerate(ids):  # rows may come from a worker process that did not run prepare()
            if cid not in self.rows:
                self.rows[cid] = {k: batch[k][i] for k in batch}
        decoded = self._prefetch.get(ids)
        out: dict[str, dict[str, Any]] = {}
        todo: list[ClipFrames] = []
        for cid, d in zip(ids, decoded):
            self._stats["decode_s"] += d.seconds
            if d.frames is None:
                status = schema.SKIPPED if d.reason and d.reason.startswith("skipped") else d.status
                out[cid] = self._row(cid, "", status=status, error=d.reason, attempts=0, settings={})
            else:
                todo.append(ClipFrames(cid, d.frames, d.indices))
        base = self._base_variant()
        for o in self._caption_many(todo, base):
            out[o.cid] = self._finish(o, base, 1)
        if self._scorer is not None:
            self._refine(out, {it.cid: it for it in todo})
        return {schema.CLIP_CAPTIONS: [self._serialize(out[cid]) for cid in ids]}

    def _base_variant(self) -> Variant:
        c = self.config
        return default_variant(c.max_frames, c.temperature, c.top_p, c.do_sample, c.seed)

    def _prompt(self, variant: Variant) -> dict[str, str]:
        p = dict(self.config.prompts())
        if variant.prompt_variant == "refine":
            p["user"] = p["user"] + REFINE_SUFFIX
        return p

    def _params(self, variant: Variant) -> GenerationParams:
        p = self.config.params()
        p.temperature, p.top_p, p.do_sample, p.seed = variant.temperature, variant.top_p, variant.do_sample, \
            variant.seed
        return p

    def _caption_many(self, items: list[ClipFrames], variant: Variant):
        """Yield an :class:`_Outcome` per item: whole batch first, then per clip on failure."""
        from lovr_hf.backends.captioners.common import OutOfMemory, PartialBatchError

        if not items:
            return
        prompt, params = self._prompt(variant), self._params(variant)
        # models that place frames in time (Qwen2.5-VL, Qwen3-VL) need the rate the frames were sampled at
        fps = [sampled_fps(self.rows[it.cid], len(it.frames)) for it in items]
        params.extra["video_fps"] = fps
        assert self._backend is not None
        t0 = time.perf_counter()
        try:
            texts = self._backend.caption([it.frames for it in items], prompt, params)
            self._account(t0, len(items))
            if self._debug_left:
                self._debug_left -= 1
                logger.info("debug: prompt=%r\nparams=%s\nfirst output=%r", prompt, params, texts[:1])
            for it, t, f in zip(items, texts, fps):
                yield _Outcome(it.cid, t, None, it.indices, f)
            return
        except PartialBatchError as exc:  # per-clip outcomes (each clip's request already retried)
            self._account(t0, len(items))
            for it, t, e, f in zip(items, exc.texts, exc.errors, fps):
                if e is not None:
                    logger.warning("clip %s: %s", it.cid, e)
                yield _Outcome(it.cid, t, e, it.indices, f)
            return
        except OutOfMemory as exc:
            logger.warning("batch of %d clips ran out of memory (%s); captioning one by one", len(items), exc)
        except Exception as exc:
            if len(items) == 1:
                yield _Outcome(items[0].cid, "", failure_message(exc), items[0].indices, fps[0])
                return
            logger.warning("batch failed (%s: %s); captioning one by one", type(exc).__name__, exc)
        for it in items:
            yield self._caption_one(it, prompt, params)

    def _caption_one(self, item: ClipFrames, prompt: dict[str, str], params: GenerationParams) -> _Outcome:
        """One clip, halving the frames on out-of-memory down to 2 (an outsized clip never stops the run)."""
        from lovr_hf.backends.captioners.common import OutOfMemory, PartialBatchError

        assert self._backend is not None
        frames, indices = item.frames, item.indices
        while True:
            fps = sampled_fps(self.rows[item.cid], len(frames))
            one = dataclasses.replace(params, extra={**params.extra, "video_fps": [fps]})
            t0 = time.perf_counter()
            try:
                text = self._backend.caption([frames], prompt, one)[0]
                self._account(t0, 1)
                return _Outcome(item.cid, text, None, indices, fps)
            except OutOfMemory as exc:
                if len(frames) <= 2:
                    return _Outcome(item.cid, "", f"out of memory even with {len(frames)} frames: {exc}", indices,
                                    fps)
                frames, indices = frames[::2], indices[::2]
                logger.warning("out of memory: retrying one clip with %d frames", len(frames))
            except PartialBatchError as exc:
                return _Outcome(item.cid, exc.texts[0], exc.errors[0], indices, fps)
            except Exception as exc:
                return _Outcome(item.cid, "", failure_message(exc), indices, fps)

    def _account(self, t0: float, n: int) -> None:
        stats = self._backend.last_stats or {}
        self._stats["generate_s"] += time.perf_counter() - t0
        self._stats["tokens_out"] += float(stats.get("tokens_out", 0))
        self._stats["clips"] += n

    def _attempt_settings(self, o: _Outcome, variant: Variant, attempt: int) -> dict[str, Any]:
        """What this attempt really fed the model: frames (count and indices), prompt, sampling, fps."""
        p = self._prompt(variant)
        c = self.config
        return {"attempt": attempt, **variant.as_dict(), "repetition_penalty": c.repetition_penalty,
                "max_new_tokens": c.max_new_tokens, "prompt_hash": prompt_hash(p["system"], p["user"]),
                "num_frames": len(o.indices), "frame_indices": list(o.indices), "video_fps": round(o.fps, 6)}

    def _finish(self, o: _Outcome, variant: Variant, attempt: int) -> dict[str, Any]:
        text = (o.text or "").strip()
        err = o.error
        if err is None and not text:
            err = "empty output"
        status = schema.FAILED if err else schema.OK
        return self._row(o.cid, text, status=status, error=err, attempts=attempt,
                         settings=self._attempt_settings(o, variant, attempt))

    def _row(self, cid: str, caption: str, *, status: str, error: str | None, attempts: int,
             settings: dict[str, Any], score: float | None = None) -> dict[str, Any]:
        r = self.rows[cid]
        assert self._backend is not None
        return {
            schema.CLIP_ID: cid, schema.VIDEO_ID: r[schema.VIDEO_ID], schema.SLICE_NUM: r[schema.SLICE_NUM],
            schema.CAPTION: caption, "model": self._backend.model_id(), "prompt_hash": self.prompt_hash(),
            "quality_score": score, "attempts": attempts, "num_frames_used": int(settings.get("num_frames", 0)),
            "settings": settings, schema.STATUS: status, schema.ERROR_COL: error,
        }

    @staticmethod
    def _serialize(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "settings": json.dumps(row["settings"], sort_keys=True)}


def caption(
    repo: BenchmarkRepo | str,
    config: CaptionConfig | None = None,
    control: RunControl | None = None,
) -> StageResult:
    """Library entry point: caption every ok clip of ``repo`` (resumable, shardable)."""
    config = config or CaptionConfig()
    check_backend_flags(config)  # before any work: a refused flag must not cost a model load
    control = control or RunControl()
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    clips = repo.read(schema.CLIPS).filter(lambda r: r[schema.STATUS] == schema.OK, desc="clips to caption")
    stage = CaptionStage(config, str(repo.root), debug=control.debug)
    if control.gather_only:
        return stage.gather_result(repo, clips, allow_partial=control.allow_partial)
    since = f"{time.time_ns():020d}"
    res = stage.apply(clips, repo, shard=control.shard(), num_proc=control.num_proc, rerun=control.rerun,
                      retry_failed=control.retry_failed)
    res.stats.update(summarize(repo, stage, since, res))
    return res


def summarize(repo: BenchmarkRepo, stage: CaptionStage, since: str, res: StageResult) -> dict[str, float]:
    meta = batch_metas(stage.work_path(repo), since)
    tot = {k: sum(float(m.get(k, 0.0)) for m in meta) for k in ("decode_s", "decode_wait_s", "generate_s",
                                                                 "tokens_out", "clips")}
    stats: dict[str, float] = dict(tot)
    if res.seconds:
        stats["clips_per_s"] = tot["clips"] / res.seconds
        stats["tokens_per_s"] = tot["tokens_out"] / max(tot["generate_s"], 1e-9)
    if repo.has(schema.CLIP_CAPTIONS):
        status = repo.read(schema.CLIP_CAPTIONS)[schema.STATUS]
        for st in schema.STATUSES:
            stats[st] = float(status.count(st))
    logger.info(
        "caption: %d clips this run in %.1fs (%.2f clips/s, %.1f tokens/s); decode %.1fs (waited %.1fs), "
        "generate %.1fs; ok %d, skipped %d, failed %d, error %d, needs_review %d",
        tot["clips"], res.seconds, stats.get("clips_per_s", 0.0), stats.get("tokens_per_s", 0.0),
        tot["decode_s"], tot["decode_wait_s"], tot["generate_s"], stats.get(schema.OK, 0),
        stats.get(schema.SKIPPED, 0), stats.get(schema.FAILED, 0), stats.get(schema.ERROR, 0),
        stats.get(schema.NEEDS_REVIEW, 0),
    )
    return stats
