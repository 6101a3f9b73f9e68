"""Stage 2: clips -> ``clip_captions`` with a vision-language model.

One ``Dataset.map(batched=True)`` over the ``clips`` rows. Frames follow the original LoVR captioner
(min(64, max(8, whole seconds)) uniform frames; 2 frames under 8; skip under 5) and are decoded by a
thread pool running ahead of the model (PyAV releases the GIL), so generation does not wait on decoding.
The model is created lazily in the process that runs the map (one per GPU under ``accelerate launch``)
and is never pickled. Optional quality scoring re-captions weak clips with changed settings (LoVR
Fig. 2): more frames, then another prompt variant and sampling; still weak -> ``needs_review``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from typing import Any, ClassVar

import numpy as np
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.backends.base import CAPTIONERS, SCORERS, Captioner, GenerationParams, QualityScorer
from lovr_hf.cli_common import (
    RunControl,
    add_backend_option_arg,
    add_common_args,
    config_from_args,
    control_from_args,
)
from lovr_hf.frames import CAPTION_MAX_FRAMES, CAPTION_MIN_FRAMES, caption_frame_plan
from lovr_hf.prefetch import Prefetcher
from lovr_hf.prompts import caption_prompt, load_prompt_set, prompt_hash
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stage import Stage, StageResult, batch_metas

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
ORIGINAL_DOWNSCALE = (426, 240)
REFINE_SUFFIX = (
    "\n\nBe concrete and exhaustive: name visible objects, colours, people and actions in the order they "
    "happen, and do not repeat yourself."
)


@dataclasses.dataclass
class CaptionConfig:
    """Everything that changes a caption is fingerprinted; ``RUNTIME`` fields are not."""

    backend: str = "transformers"  # transformers | vllm | openai | dummy | module:Class
    model_path: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1  # vllm
    api_base: str | None = None  # openai: also OPENAI_BASE_URL
    api_model: str | None = None
    prompt_file: str | None = None  # JSON/YAML {"system": ..., "user": ...} or a text file = user prompt
    # sampling and frame counts of the original captioner: one source each (GenerationParams, frames.py)
    temperature: float = GenerationParams.temperature
    top_p: float = GenerationParams.top_p
    repetition_penalty: float = GenerationParams.repetition_penalty
    max_new_tokens: int = GenerationParams.max_new_tokens
    do_sample: bool = GenerationParams.do_sample
    seed: int | None = None
    min_frames: int = CAPTION_MIN_FRAMES
    max_frames: int = CAPTION_MAX_FRAMES
    downscale: bool = False  # the original's 426x240 helper
    min_quality: float | None = None  # quality threshold θ (0-10); None = original single pass
    scorer: str = "heuristic"  # heuristic | llm
    scorer_model: str | None = None  # llm judge: an LLM backend spec, e.g. "openai:gpt-4o-mini"
    max_attempts: int = 3
    generate_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra model.generate() options
    # runtime only
    batch_size: int = 8
    decode_workers: int = 2
    prefetch_batches: int = 2
    device: str = "auto"
    api_concurrency: int = 8
    decode_backend: str = "auto"
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    RUNTIME: ClassVar[tuple[str, ...]] = (
        "batch_size", "decode_workers", "prefetch_batches", "device", "api_concurrency", "decode_backend", "api_base",
    )

    def prompts(self) -> dict[str, str]:
        base = caption_prompt()
        return load_prompt_set(self.prompt_file, base) if self.prompt_file else base

    def params(self) -> GenerationParams:
        extra = {"generate_kwargs": dict(self.generate_kwargs)} if self.generate_kwargs else {}
        return GenerationParams(self.temperature, self.top_p, self.repetition_penalty, self.max_new_tokens,
                                self.do_sample, self.seed, extra)


def make_captioner(cfg: CaptionConfig) -> Captioner:
    """Backend from the config (only the options that backend understands are passed)."""
    opts: dict[str, Any] = dict(cfg.backend_options)
    if cfg.backend == "transformers":
        opts.update(model_path=cfg.model_path, device=cfg.device, dtype=cfg.dtype, revision=cfg.revision,
                    attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code,
                    downscale=ORIGINAL_DOWNSCALE if cfg.downscale else None)
    elif cfg.backend == "vllm":
        opts.update(model_path=cfg.model_path, tensor_parallel_size=cfg.tensor_parallel_size,
                    trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    elif cfg.backend == "openai":
        opts.update(api_model=cfg.api_model or cfg.model_path, api_base=cfg.api_base,
                    num_workers=cfg.api_concurrency)
    elif ":" in cfg.backend:
        opts.setdefault("model_path", cfg.model_path)
    return CAPTIONERS.create(cfg.backend, **opts)


def make_scorer(cfg: CaptionConfig) -> QualityScorer:
    if cfg.scorer == "llm":
        return SCORERS.create("llm", llm_spec=cfg.scorer_model or "openai")
    return SCORERS.create(cfg.scorer)


def clip_duration(row: dict[str, Any]) -> float:
    """Seconds of a clip row: its time range, else frames / fps (release clips may lack times)."""
    dur = (row.get("end_time") or 0.0) - (row.get("start_time") or 0.0)
    if dur <= 0 and row.get("fps"):
        dur = (row.get("num_frames") or 0) / row["fps"]
    return max(0.0, float(dur))


class CaptionStage(Stage):
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
        self._prefetch: Prefetcher | None = None
        self._stats: dict[str, float] = {}
        self._debug_left = 1 if debug else 0

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = super().fingerprint_payload()
        payload["config"].pop("prompt_file", None)
        payload["prompt_hash"] = self.prompt_hash()
        return payload

    def prompt_hash(self) -> str:
        p = self.config.prompts()
        return prompt_hash(p["system"], p["user"])

    # ---- lifecycle -----------------------------------------------------------------------------------
    def prepare(self, todo: Dataset) -> None:
        self.rows = {r[schema.CLIP_ID]: r for r in todo}
        self.order = list(self.rows)

    def setup(self) -> None:
        cfg = self.config
        self._backend = make_captioner(cfg)
        self._scorer = make_scorer(cfg) if cfg.min_quality is not None else None
        depth = cfg.batch_size * max(1, cfg.prefetch_batches)
        self._prefetch = Prefetcher(self.order, lambda k: self._decode(k, None), cfg.decode_workers, depth)
        self._stats = {"decode_s": 0.0, "decode_wait_s": 0.0, "generate_s": 0.0, "tokens_out": 0.0, "clips": 0.0}

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

    def _decode(self, clip_id: str, max_frames: int | None) -> tuple[np.ndarray | None, str | None, float]:
        """(frames, skip/error reason, seconds). Never raises: a bad clip becomes a reason."""
        from lovr_hf.video import read_clip_frames

        t0 = time.perf_counter()
        row = self.rows[clip_id]
        plan = self._plan(row, max_frames or self.config.max_frames)
        if plan.skipped:
            return None, f"skipped: {plan.skip_reason}", 0.0
        try:
            frames = read_clip_frames(row, plan.indices, root=self.repo_root, backend=self.config.decode_backend)
        except Exception as exc:  # unreadable clip: recorded on its row
            return None, f"cannot decode clip: {type(exc).__name__}: {exc}", time.perf_counter() - t0
        return frames, None, time.perf_counter() - t0

    # ---- captioning ------------------------------------------------------------------------------------
    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._backend is not None and self._prefetch is not None
        ids = list(batch[schema.CLIP_ID])
        for i, cid in enumerate(ids):  # rows may come from a worker process that did not run prepare()
            if cid not in self.rows:
                self.rows[cid] = {k: batch[k][i] for k in batch}
        decoded = self._prefetch.get(ids)
        out: dict[str, dict[str, Any]] = {}
        todo: list[tuple[str, np.ndarray]] = []
        for cid, (frames, reason, secs) in zip(ids, decoded):
            self._stats["decode_s"] += secs
            if frames is None:
                status = schema.SKIPPED if reason and reason.startswith("skipped") else schema.ERROR
                out[cid] = self._row(cid, "", status=status, error=reason, attempts=0, n_frames=0, settings={})
            else:
                todo.append((cid, frames))
        base = self._settings(1, None)
        for cid, text, err, n_used in self._caption_many(todo, base):
            out[cid] = self._finish(cid, text, err, n_used, base)
        if self._scorer is not None:
            self._refine(out, dict(todo))
        return {schema.CLIP_CAPTIONS: [out[cid] for cid in ids]}

    def _settings(self, attempt: int, n_frames: int | None) -> dict[str, Any]:
        c = self.config
        s = {"attempt": attempt, "max_frames": c.max_frames, "temperature": c.temperature, "top_p": c.top_p,
             "repetition_penalty": c.repetition_penalty, "prompt_variant": "default"}
        if attempt == 2:  # more visual evidence
            s["max_frames"] = min(2 * c.max_frames, 128)
        elif attempt >= 3:  # another prompt variant and looser sampling
            s.update(prompt_variant="refine", temperature=0.7, top_p=0.9)
        return s

    def _prompt(self, settings: dict[str, Any]) -> dict[str, str]:
        p = dict(self.config.prompts())
        if settings.get("prompt_variant") == "refine":
            p["user"] = p["user"] + REFINE_SUFFIX
        return p

    def _params(self, settings: dict[str, Any]) -> GenerationParams:
        p = self.config.params()
        p.temperature, p.top_p = settings["temperature"], settings["top_p"]
        return p

    def _caption_many(self, items: list[tuple[str, np.ndarray]], settings: dict[str, Any]):
        """Yield (clip_id, text, error, frames used): whole batch first, then per clip on failure."""
        from lovr_hf.backends.captioner_transformers import OutOfMemory

        if not items:
            return
        prompt, params = self._prompt(settings), self._params(settings)
        # models that place frames in time (Qwen2.5-VL, Qwen3-VL) need the rate the frames were sampled at
        params.extra["video_fps"] = [self._sampled_fps(cid, len(f)) for cid, f in items]
        assert self._backend is not None
        t0 = time.perf_counter()
        try:
            texts = self._backend.caption([f for _, f in items], prompt, params)
            self._account(t0, len(items))
            if self._debug_left:
                self._debug_left -= 1
                logger.info("debug: prompt=%r\nparams=%s\nfirst output=%r", prompt, params, texts[:1])
            for (cid, f), t in zip(items, texts):
                yield cid, t, None, len(f)
            return
        except OutOfMemory as exc:
            logger.warning("batch of %d clips ran out of memory (%s); captioning one by one", len(items), exc)
        except Exception as exc:
            if len(items) == 1:
                yield items[0][0], "", f"{type(exc).__name__}: {exc}", len(items[0][1])
                return
            logger.warning("batch failed (%s: %s); captioning one by one", type(exc).__name__, exc)
        for cid, frames in items:
            one = dataclasses.replace(params, extra={**params.extra, "video_fps": self._sampled_fps(cid, len(frames))})
            yield (cid, *self._caption_one(frames, prompt, one))

    def _sampled_fps(self, clip_id: str, n_frames: int) -> float:
        dur = clip_duration(self.rows[clip_id])
        return float(n_frames / dur) if dur > 0 else 1.0

    def _caption_one(self, frames: np.ndarray, prompt: dict[str, str], params: GenerationParams):
        """One clip, halving the frames on out-of-memory down to 2 (an outsized clip never stops the run)."""
        from lovr_hf.backends.captioner_transformers import OutOfMemory

        assert self._backend is not None
        while True:
            t0 = time.perf_counter()
            try:
                text = self._backend.caption([frames], prompt, params)[0]
                self._account(t0, 1)
                return text, None, len(frames)
            except OutOfMemory as exc:
                if len(frames) <= 2:
                    return "", f"out of memory even with {len(frames)} frames: {exc}", len(frames)
                frames = frames[::2]
                fps = params.extra.get("video_fps", 1.0)
                params = dataclasses.replace(params, extra={**params.extra, "video_fps": fps / 2 if
                                                            isinstance(fps, float) else fps})
                logger.warning("out of memory: retrying one clip with %d frames", len(frames))
            except Exception as exc:
                return "", f"{type(exc).__name__}: {exc}", len(frames)

    def _account(self, t0: float, n: int) -> None:
        stats = getattr(self._backend, "last_stats", {}) or {}
        self._stats["generate_s"] += time.perf_counter() - t0
        self._stats["tokens_out"] += float(stats.get("tokens_out", 0))
        self._stats["clips"] += n

    def _finish(self, cid: str, text: str, err: str | None, n_used: int, settings: dict[str, Any]) -> dict[str, Any]:
        text = (text or "").strip()
        if err is None and not text:
            err = "empty output"
        status = schema.FAILED if err else schema.OK
        return self._row(cid, text, status=status, error=err, attempts=settings["attempt"], n_frames=n_used,
                         settings=settings)

    def _row(self, cid: str, caption: str, *, status: str, error: str | None, attempts: int, n_frames: int,
             settings: dict[str, Any], score: float | None = None) -> dict[str, Any]:
        r = self.rows[cid]
        assert self._backend is not None
        return {
            schema.CLIP_ID: cid, schema.VIDEO_ID: r[schema.VIDEO_ID], schema.SLICE_NUM: r[schema.SLICE_NUM],
            schema.CAPTION: caption, "model": self._backend.model_id(), "prompt_hash": self.prompt_hash(),
            "quality_score": score, "attempts": attempts, "num_frames_used": n_frames,
            "settings": json.dumps({**settings, "num_frames": n_frames}, sort_keys=True),
            schema.STATUS: status, schema.ERROR_COL: error,
        }

    def _refine(self, out: dict[str, dict[str, Any]], frames: dict[str, np.ndarray]) -> None:
        """Score, re-caption those under θ with the next attempt's settings, keep the best attempt."""
        assert self._scorer is not None
        theta = float(self.config.min_quality or 0.0)
        live = [cid for cid, r in out.items() if r[schema.STATUS] == schema.OK]
        self._score(out, live, frames)
        for attempt in range(2, self.config.max_attempts + 1):
            weak = [cid for cid in live if (out[cid]["quality_score"] or 0.0) < theta]
            if not weak:
                break
            settings = self._settings(attempt, None)
            items = []
            for cid in weak:
                f, reason, _ = self._decode(cid, settings["max_frames"]) if attempt == 2 else (frames[cid], None, 0)
                items.append((cid, f if f is not None else frames[cid]))
            for cid, text, err, n_used in self._caption_many(items, settings):
                cand = self._finish(cid, text, err, n_used, settings)
                if cand[schema.STATUS] != schema.OK:
                    out[cid]["attempts"] = attempt
                    continue
                cand["quality_score"] = self._scorer.score([cand[schema.CAPTION]], [frames[cid]])[0]
                if cand["quality_score"] > (out[cid]["quality_score"] or 0.0):
                    out[cid] = cand
                out[cid]["attempts"] = attempt
        for cid in live:
            if (out[cid]["quality_score"] or 0.0) < theta:
                out[cid][schema.STATUS] = schema.NEEDS_REVIEW
                out[cid][schema.ERROR_COL] = f"quality {out[cid]['quality_score']:.2f} < {theta} after " \
                                             f"{out[cid]['attempts']} attempt(s)"

    def _score(self, out: dict[str, dict[str, Any]], ids: list[str], frames: dict[str, np.ndarray]) -> None:
        assert self._scorer is not None
        if not ids:
            return
        scores = self._scorer.score([out[c][schema.CAPTION] for c in ids], [frames[c] for c in ids])
        for cid, s in zip(ids, scores):
            out[cid]["quality_score"] = float(s)


def caption(
    repo: BenchmarkRepo | str,
    config: CaptionConfig | None = None,
    control: RunControl | None = None,
) -> StageResult:
    """Library entry point: caption every ok clip of ``repo`` (resumable, shardable)."""
    config = config or CaptionConfig()
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="transformers", help="transformers | vllm | openai | dummy | module:Class")
    p.add_argument("--model-path", "--model_path", dest="model_path", default=DEFAULT_MODEL,
                   help="Hub id or local folder (original LoVR flag)")
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--attn-implementation", dest="attn_implementation", default=None)
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true")
    p.add_argument("--tensor-parallel-size", dest="tensor_parallel_size", type=int, default=1)
    p.add_argument("--api-base", dest="api_base", default=os.environ.get("OPENAI_BASE_URL"))
    p.add_argument("--api-model", dest="api_model", default=None)
    p.add_argument("--prompt-file", dest="prompt_file", default=None)
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8)
    d = CaptionConfig  # unset flags fall back to the config's defaults (the original captioner's)
    p.add_argument("--temperature", type=float, default=None, help=f"default {d.temperature}")
    p.add_argument("--top-p", dest="top_p", type=float, default=None, help=f"default {d.top_p}")
    p.add_argument("--repetition-penalty", dest="repetition_penalty", type=float, default=None,
                   help=f"default {d.repetition_penalty}")
    p.add_argument("--max-new-tokens", "--max_tokens", dest="max_new_tokens", type=int, default=None,
                   help=f"default {d.max_new_tokens}")
    p.add_argument("--greedy", dest="do_sample", action="store_false", help="greedy decoding (deterministic)")
    p.add_argument("--max-frames", dest="max_frames", type=int, default=None, help=f"default {d.max_frames}")
    p.add_argument("--downscale", action="store_true", help="shrink frames into 426x240 as the original helper")
    p.add_argument("--min-quality", dest="min_quality", type=float, default=None,
                   help="quality threshold θ (0-10): re-caption below it, up to --max-attempts")
    p.add_argument("--scorer", default="heuristic", choices=("heuristic", "llm"))
    p.add_argument("--scorer-model", dest="scorer_model", default=None)
    p.add_argument("--max-attempts", dest="max_attempts", type=int, default=3)
    p.add_argument("--decode-workers", dest="decode_workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    # original LoVR flags kept for compatibility
    p.add_argument("--video-folder", dest="video_folder", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jsonl-file", dest="jsonl_file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result-file", dest="result_file", default=None,
                   help="also write the captions as JSONL (original fields vid, slice_num, cap)")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(CaptionConfig, args)
    control = control_from_args(args)
    res = caption(control.repo, config, control)
    repo = BenchmarkRepo(control.repo)
    if args.result_file and repo.has(schema.CLIP_CAPTIONS):
        export_jsonl(repo, args.result_file)
    bad = res.stats.get(schema.FAILED, 0) + res.stats.get(schema.ERROR, 0)
    return 1 if control.strict and bad else 0


def export_jsonl(repo: BenchmarkRepo, path: str) -> None:
    """The original caption file format (``vid``, ``slice_num``, ``cap``), for the original merger."""
    from lovr_hf.repo import atomic_write_text

    lines = [
        json.dumps({"vid": r[schema.VIDEO_ID], "slice_num": r[schema.SLICE_NUM], "clip_id": r[schema.CLIP_ID],
                    "cap": r[schema.CAPTION], "status": r[schema.STATUS]}, ensure_ascii=False)
        for r in repo.read(schema.CLIP_CAPTIONS)
    ]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
