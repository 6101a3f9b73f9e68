"""Embedding stages: captions, clips and full videos -> the ``embeddings-<model_slug>`` config (Arrow float32).


Both stages run on the resumable map engine (:mod:`lovr_hf.engine.stage`), so they shard over ``accelerate launch``
ranks or the original ``--num-chunks/--chunk-idx`` flags, commit batch by batch and resume after a kill.

* :class:`TextEmbedStage` (here): one per caption kind (``clip_caption``, ``video_caption``,
  ``theme_caption``); the unit is one caption row (``item_id`` = the clip or video it describes), its
  digest the caption text: a re-captioned clip is embedded again, every other caption is reused.
  Which captions are embedded is the status policy of :data:`EMBEDDED_STATUSES` (logged: what is left
  out and why).
* :class:`lovr_hf.evaluation.embed_video.VideoEmbedStage`: clips and full videos, one unit per video.

Model resolution lives in :mod:`lovr_hf.evaluation.models`. Per-batch timings (decode = I/O, encode) are committed with
each batch and summed by :func:`cost_report`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.backends.embedders.common import TEXT_MODES
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.stage import StageResult, live_batch_metas
from lovr_hf.engine.workdir import committed_batches
from lovr_hf.evaluation.embed_stage import EMBEDDED_STATUSES, TEXT_KINDS, VISUAL_KINDS, EmbedStage
from lovr_hf.evaluation.embed_video import VideoEmbedStage, video_stage
from lovr_hf.evaluation.models import EmbedConfig, model_slug
from lovr_hf.failures import message as failure_message
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stats.vectors import l2_normalize

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------------


class TextEmbedStage(EmbedStage):
    """Caption rows of one kind -> text embedding rows (``num_frames`` = text chunks averaged)."""

    input_key = "item_id"

    def __init__(self, config: EmbedConfig, kind: str, slug: str) -> None:
        # each caption's text is its unit digest: a rewritten caption is embedded again, the others reused
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown caption kind {kind!r}; known: {sorted(TEXT_KINDS)}")
        if config.text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {config.text_mode!r}")
        super().__init__(config, slug)
        self.kind = kind
        self.kinds = (kind,)
        self.name = f"embed-text-{kind}"  # type: ignore[misc]
        self.batch_size = max(1, int(config.text_rows_per_commit))

    def fingerprint_extra(self) -> dict[str, Any]:
        return {**super().fingerprint_extra(), "text_mode": self.config.text_mode,
                "max_text_tokens": self.config.max_text_tokens}

    def _chunks(self, text: str) -> int:
        """Text chunks averaged for ``text`` (1 when truncating or when the embedder cannot tell)."""
        if self.config.text_mode != "chunk-mean" or self._backend is None:
            return 1
        chunks = self._backend.text_chunk_ids(text)
        return 1 if chunks is None else len(chunks)

    def _embed(self, texts: list[str]) -> np.ndarray:
        assert self._backend is not None
        out = np.asarray(self._backend.embed_text(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(f"embed_text returned shape {out.shape} for {len(texts)} texts")
        if not np.isfinite(out).all():
            raise ValueError("embed_text returned NaN/inf")
        return l2_normalize(out)

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
                    errors[i] = failure_message(one)
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


# ---------------------------------------------------------------------------------------------------------
# inputs and running
# ---------------------------------------------------------------------------------------------------------


def _current_clips(repo: BenchmarkRepo) -> tuple[set[str], set[str]] | None:
    """(clip ids, their video ids) of the ``clips`` config, or None when the repo has none. Clips of any status:
    the caption of a clip whose file cannot be read is still a query (the scoring protocol decides: a miss
    under ``original``, left out and counted under ``lovr``); only captions of clips that no longer exist go."""
    if not repo.has(schema.CLIPS):
        return None
    t = repo.read_table(schema.CLIPS)
    return set(t.column(schema.CLIP_ID).to_pylist()), set(t.column(schema.VIDEO_ID).to_pylist())


def text_inputs(repo: BenchmarkRepo, kind: str, clips: tuple[set[str], set[str]] | None = None,
                *, log: bool = True) -> Dataset | None:
    """Embeddable caption rows of one kind as ``item_id, video_id, caption`` (None when the config is absent).

    Kept: status in :data:`EMBEDDED_STATUSES` with a non-empty caption, for a clip (video) that is still in
    the ``clips`` config when the repo has one. What is left out is logged with the reason. Theme captions:
    ``item_id`` is the clip id, or the video id for a video-level theme (empty clip id).
    """
    config = TEXT_KINDS[kind]
    if not repo.has(config):
        return None
    if clips is None:
        clips = _current_clips(repo)
    t = repo.read_table(config)
    vids = t.column(schema.VIDEO_ID).to_pylist()
    if kind == "video_caption":
        items = vids
    else:
        items = [c or v for c, v in zip(t.column(schema.CLIP_ID).to_pylist(), vids)]
    caps = [c or "" for c in t.column(schema.CAPTION).to_pylist()]
    statuses = t.column(schema.STATUS).to_pylist()
    usable = EMBEDDED_STATUSES[kind]
    keep: list[int] = []
    left: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for i, (item, vid, cap, st) in enumerate(zip(items, vids, caps, statuses)):
        if clips is not None and not (item in clips[0] if item != vid else vid in clips[1]):
            reason = "no longer in clips (re-run the stage that made it)"
        elif st not in usable:
            reason = f"status {st}"
        elif not cap.strip():
            reason = "empty caption"
        else:
            keep.append(i)
            if st != schema.OK:
                flagged[st] = flagged.get(st, 0) + 1
            continue
        left[reason] = left.get(reason, 0) + 1
    if log and (left or flagged):
        logger.info("%s: embedding %d of %d captions%s%s", kind, len(keep), len(items),
                    "; left out: " + ", ".join(f"{n} {r}" for r, n in sorted(left.items())) if left else "",
                    "; included, flagged: " + ", ".join(f"{n} {s}" for s, n in sorted(flagged.items()))
                    if flagged else "")
    return Dataset.from_dict({"item_id": [items[i] for i in keep], schema.VIDEO_ID: [vids[i] for i in keep],
                              schema.CAPTION: [caps[i] for i in keep]})


def text_inputs_report(repo: BenchmarkRepo) -> dict[str, dict[str, int]]:
    """Per caption kind: rows embedded, and rows left out per reason (for run summaries and the card)."""
    clips = _current_clips(repo)
    out: dict[str, dict[str, int]] = {}
    for kind, config in TEXT_KINDS.items():
        if not repo.has(config):
            continue
        ds = text_inputs(repo, kind, clips, log=False)
        assert ds is not None
        total = repo.read_table(config).num_rows
        out[kind] = {"embedded": len(ds), "left_out": total - len(ds)}
    return out


def text_stages(repo: BenchmarkRepo, config: EmbedConfig, slug: str) -> list[tuple[TextEmbedStage, Dataset]]:
    """One stage per caption kind the repo has. A kind whose captions are all left out still gets its
    stage (empty input), so a gather removes its stale embeddings."""
    out = []
    clips = _current_clips(repo)
    for kind in TEXT_KINDS:
        ds = text_inputs(repo, kind, clips)
        if ds is None:
            continue
        out.append((TextEmbedStage(config, kind, slug), ds))
    return out


def stale_embeddings(repo: BenchmarkRepo, config: EmbedConfig, slug: str, *, count_missing: bool = True) -> dict[str, int]:
    """``{stage: units}`` whose stored embeddings do not match the current inputs: a caption or video with no
    row, a row made for other inputs (its ``input_digest`` differs: the caption was rewritten, the clips
    re-cut), or rows of units that no longer exist. Read from the published table alone (no work state), so
    scoring stored embeddings (``--calc_pass``) can refuse numbers that no longer describe the data. Rows
    written before ``input_digest`` existed are taken as they are. ``count_missing=False`` (``--allow-partial``):
    units never embedded are not counted, changed and removed ones are."""
    cfg = schema.embeddings_config(slug)
    if not repo.has(cfg):
        return {}
    t = repo.read_table(cfg)
    cols = {c: t.column(c).to_pylist() for c in ("kind", "item_id", schema.VIDEO_ID, "input_digest")}
    stages: list[tuple[Any, Dataset, tuple[str, ...]]] = [(st, ds, (st.kind,)) for st, ds in text_stages(repo, config, slug)]
    if repo.has(schema.CLIPS):
        vst, vds = video_stage(repo, config, slug)
        stages.append((vst, vds, VISUAL_KINDS))
    out: dict[str, int] = {}
    for stage, ds, kinds in stages:
        stored: dict[str, str | None] = {}
        for kind, item, vid, dig in zip(cols["kind"], cols["item_id"], cols[schema.VIDEO_ID], cols["input_digest"]):
            if kind in kinds:
                stored.setdefault(vid if stage.input_key == schema.VIDEO_ID else item, dig)
        keys = [str(k) for k in ds[stage.input_key]] if len(ds) else []
        bad = sum(1 for k, d in zip(keys, stage.unit_digests(ds))
                  if (k not in stored and count_missing) or (k in stored and stored[k] not in (None, d)))
        bad += len(set(stored) - set(keys))
        if bad:
            out[stage.name] = bad
    return out


@dataclasses.dataclass
class EmbedRun:
    """What :func:`embed` did: per stage results and whether every stage's input is fully embedded."""

    results: dict[str, StageResult] = dataclasses.field(default_factory=dict)
    complete: bool = True
    missing: dict[str, int] = dataclasses.field(default_factory=dict)


def run_stages(
    stages: list[tuple[EmbedStage, Dataset]],
    repo: BenchmarkRepo,
    control: RunControl,
    *,
    gather_only: bool = False,
) -> EmbedRun:
    """Apply (or only gather) each stage; record which still miss units (other chunks not finished)."""
    run = EmbedRun()
    shard = control.shard()
    for stage, ds in stages:
        if gather_only:
            if not committed_batches(stage.work_path(repo)):
                # nothing computed with these settings: never replace rows made with other settings by nothing
                logger.warning("%s: nothing to merge with these settings [%s]", stage.name, stage.fingerprint())
                continue
            # units missing (chunks not finished) raise MissingChunksError, unless --allow-partial
            stage.gather(repo, ds, allow_partial=control.allow_partial)
            missing = len(stage.missing_units(ds, stage.work_path(repo)))
        else:
            res = stage.apply(ds, repo, shard=shard, num_proc=control.num_proc, rerun=control.rerun,
                              retry_failed=control.retry_failed)
            run.results[stage.name] = res
            missing = res.missing
        if missing:
            run.missing[stage.name] = missing
            run.complete = False
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
    stages: list[tuple[EmbedStage, Dataset]] = []
    if text:
        stages.extend(text_stages(repo, config, slug))
    if video and repo.has(schema.CLIPS):
        stages.append(video_stage(repo, config, slug))
    return run_stages(stages, repo, control, gather_only=gather_only or control.gather_only)


# ---------------------------------------------------------------------------------------------------------
# cost report
# ---------------------------------------------------------------------------------------------------------


def cost_report(repo: BenchmarkRepo, config: EmbedConfig, slug: str | None = None) -> dict[str, Any]:
    """I/O (decode) vs encode time in ms, total / clips / full videos / captions, for ``config``'s model.

    Sums over every committed batch of the current embeddings (all runs, all ranks: process time, not wall
    time). Frames shared by a clip and its video are decoded and encoded once and charged to both rows, so
    ``clips + videos`` can exceed ``total``.
    """
    slug = slug or model_slug(config.model)
    vis: dict[str, float] = {}
    txt: dict[str, float] = {}
    stages: list[tuple[EmbedStage, Dataset]] = list(text_stages(repo, config, slug))
    if repo.has(schema.CLIPS):
        stages.append(video_stage(repo, config, slug))
    for stage, ds in stages:
        for meta in live_batch_metas(stage, repo, ds):
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
    # loading the model is its own column (it used to show up as the first batch's caption encoding)
    report["captions"]["load_ms"] = txt.get("load_s", 0.0) * ms
    report["clips"]["load_ms"] = vis.get("load_s", 0.0) * ms
    report["total"]["load_ms"] = (txt.get("load_s", 0.0) + vis.get("load_s", 0.0)) * ms
    return report

