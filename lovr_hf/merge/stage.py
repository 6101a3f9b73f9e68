"""Stage 3: clip captions -> ``clusters`` -> ``video_captions`` (+ optional ``theme_captions``).

Three resumable maps on the same engine, each with a fingerprint of only what changes *its* output:

1. **clusters** (unit = cluster): per video, every caption row in numeric slice order, in runs of
   ``cluster_size`` (10), as the original ``caption_merger.py``: a clip without a usable caption still
   takes its place in its run (its text is left out, and the cluster's ``error`` names it); inside a run
   the LLM rewrites only each join (:func:`lovr_hf.merge.text.smooth_group`). Clusters of one map batch run
   concurrently (``--num-workers`` requests in flight, the original flag).
2. **video captions** (unit = video): once all clusters of a video are in, they are integrated in order
   into one caption (:func:`lovr_hf.merge.text.integrate_video`, bounded by the model context), with
   provenance (cluster and clip ids, model, prompt hash). Video-level options (``--integrate-mode``,
   ``--video-max-new-tokens``…) never invalidate clusters.
3. **themes** (unit = video, ``--theme``): one paragraph per video caption; failures are ``failed`` rows
   that ``--retry-failed`` redoes, and adding ``--theme`` later reuses every cluster and video caption.

Chunks finish in any order: a chunk does the video captions of the videos whose clusters are all
committed and begin in its share; the one that finds every cluster committed does all videos left, then
the themes. Under ``accelerate launch`` every step is split over the ranks with a barrier in between.
The original JSONL mode (``--cap-file`` / ``--result-file``) is kept for users of the original files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import Sequence as Seq
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features, Sequence, Value

from lovr_hf import schema
from lovr_hf.backends.base import LLMS, ChatLLM, GenerationParams
from lovr_hf.cli.common import (
    RunControl,
    add_backend_option_arg,
    add_common_args,
    config_from_args,
    control_from_args,
)
from lovr_hf.engine.dist import Shard, barrier, shard_range
from lovr_hf.engine.stage import MissingChunksError, Stage, StageResult
from lovr_hf.merge.text import (
    DEFAULT_CLUSTER_SIZE,
    MERGEABLE,
    approx_tokens,
    group_clips,
    integrate_video,
    rejected_count,
    smooth_group,
    summarize_theme,
)
from lovr_hf.prompts import INTEGRATE_PROMPT, MERGE_SYSTEM, THEME_PROMPT, TRANSITION_PROMPT, prompt_hash
from lovr_hf.repo import BenchmarkRepo, atomic_write_text, redact
from lovr_hf.report.summary import STAGE_CONFIGS, merge_call_counts, strict_exit

logger = logging.getLogger(__name__)

DEFAULT_API_MODEL = "gpt-4o"
#: video caption statuses whose text feeds a theme: ``failed`` = some joins kept the original text
THEMEABLE = (schema.OK, schema.NEEDS_REVIEW, schema.FAILED)


@dataclasses.dataclass
class MergeConfig:
    llm: str = "openai"  # openai | transformers | dummy | module:Class
    api_model: str = DEFAULT_API_MODEL
    api_base: str | None = None  # also OPENAI_BASE_URL
    model_path: str | None = None  # transformers: Hub id, folder, .gguf, or "smollm2"
    gguf_file: str | None = None
    temperature: float = 0.5
    max_new_tokens: int = 1024
    video_max_new_tokens: int = 4096
    cluster_size: int = DEFAULT_CLUSTER_SIZE
    video_captions: bool = True
    integrate_mode: str = "sequential"  # sequential | hierarchical
    theme: bool = False
    max_context_tokens: int | None = None  # None: what the backend reports
    seed: int | None = None
    # runtime only
    num_workers: int = 8
    timeout: float = 300.0
    max_retries: int = 3
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    RUNTIME: ClassVar[tuple[str, ...]] = ("num_workers", "timeout", "max_retries", "api_base")

    def params(self, video: bool = False) -> GenerationParams:
        return GenerationParams(temperature=self.temperature, top_p=1.0, repetition_penalty=1.0,
                                max_new_tokens=self.video_max_new_tokens if video else self.max_new_tokens,
                                do_sample=self.temperature > 0, seed=self.seed)


def make_llm(cfg: MergeConfig) -> ChatLLM:
    opts: dict[str, Any] = dict(cfg.backend_options)
    if cfg.llm == "openai":
        opts.update(api_model=cfg.api_model, api_base=cfg.api_base, num_workers=cfg.num_workers,
                    timeout=cfg.timeout, max_retries=cfg.max_retries)
    elif cfg.llm == "transformers":
        opts.update(model_path=cfg.model_path, gguf_file=cfg.gguf_file)
    elif ":" in cfg.llm:
        opts.setdefault("model_path", cfg.model_path)
    return LLMS.create(cfg.llm, **opts)


def _llm_identity(cfg: MergeConfig) -> str:
    if cfg.llm == "openai":
        return f"openai:{cfg.api_model}"
    if cfg.llm == "transformers":
        return f"transformers:{cfg.model_path}:{cfg.gguf_file or ''}"
    if ":" in cfg.llm:
        return f"{cfg.llm}:{cfg.model_path or ''}"
    return cfg.llm


class _MergeStageBase(Stage):
    runtime_fields = MergeConfig.RUNTIME
    version = "2"
    #: MergeConfig fields that change this stage's output (its fingerprint holds these and nothing else)
    settings: ClassVar[tuple[str, ...]] = ()
    prompts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MergeConfig) -> None:
        super().__init__(config)
        self.batch_size = max(1, config.num_workers)
        self._llm: ChatLLM | None = None

    def fingerprint_payload(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "stage": self.name, "version": self.version, "llm": _llm_identity(cfg),
            "settings": {f: getattr(cfg, f) for f in ("temperature", "seed", *self.settings)},
            "backend_options": redact(dict(cfg.backend_options)), "prompts": prompt_hash(*self.prompts),
        }

    def setup(self) -> None:
        """Build the LLM once, before any row: a model that cannot load, or an OpenAI-compatible server that is
        unreachable or refuses the key, stops the command here (one line, exit 2) instead of marking rows."""
        from lovr_hf.failures import start_backend

        cfg = self.config
        self._llm = start_backend(lambda: make_llm(cfg), cfg.model_path or _llm_identity(cfg), "LLM")

    def model_id(self) -> str:
        return self._llm.model_id() if self._llm is not None else _llm_identity(self.config)

    def _parallel(self, fn: Any, items: list[Any]) -> list[Any]:
        if len(items) <= 1 or self.config.num_workers <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.config.num_workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _context(self) -> tuple[int | None, Any]:
        limit = self.config.max_context_tokens or getattr(self._llm, "max_context_tokens", None)
        return limit, getattr(self._llm, "count_tokens", None) or approx_tokens


CLUSTER_INPUT = Features({
    schema.CLUSTER_ID: Value("string"), schema.VIDEO_ID: Value("string"),
    "slice_nums": Sequence(Value("int32")), "captions": Sequence(Value("string")),
    "clip_ids": Sequence(Value("string")), "statuses": Sequence(Value("string")),
})


def left_out_note(clip_ids: list[str], statuses: list[str]) -> str | None:
    """Which clips of a cluster kept their place without text (no usable caption), or None."""
    out = [f"{c} ({s})" for c, s in zip(clip_ids, statuses) if s not in MERGEABLE]
    return f"left out {len(out)} clip(s) without a usable caption: {', '.join(out)}" if out else None


class ClusterStage(_MergeStageBase):
    name = "merge-clusters"
    input_key = schema.CLUSTER_ID
    outputs = (schema.CLUSTERS,)
    status_config = schema.CLUSTERS
    settings = ("max_new_tokens",)
    prompts = (MERGE_SYSTEM, TRANSITION_PROMPT)

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._llm is not None
        params = self.config.params()
        items = [{k: batch[k][i] for k in batch} for i in range(len(batch[schema.CLUSTER_ID]))]

        def one(item: dict[str, Any]) -> dict[str, Any]:
            res = smooth_group(item["captions"], self._llm, params)
            note = left_out_note(item["clip_ids"], item["statuses"])
            status = res.status
            if not any(s in MERGEABLE for s in item["statuses"]):
                status = schema.SKIPPED  # no clip of the run has a usable caption: nothing to merge
            return {
                schema.VIDEO_ID: item[schema.VIDEO_ID], schema.CLUSTER_ID: item[schema.CLUSTER_ID],
                "start_slice_num": item["slice_nums"][0], "end_slice_num": item["slice_nums"][-1],
                "clip_count": len(item["slice_nums"]), schema.CAPTION: res.caption,
                "merged_paragraphs": res.merged_paragraphs, "llm_calls": res.llm_calls,
                "failed_calls": res.failed_calls, "rejected_replies": rejected_count(res.errors),
                "model": self.model_id(), "prompt_hash": prompt_hash(MERGE_SYSTEM, TRANSITION_PROMPT),
                schema.STATUS: status, schema.ERROR_COL: "; ".join(e for e in (res.error, note) if e) or None,
            }

        return {schema.CLUSTERS: self._parallel(one, items)}


VIDEO_INPUT = Features({
    schema.VIDEO_ID: Value("string"), "cluster_ids": Sequence(Value("string")),
    "captions": Sequence(Value("string")), "clip_ids": Sequence(Value("string")),
    # how the cluster captions were made: the video row reports its joins with its own integrations
    "join_calls": Value("int32"), "join_failed_calls": Value("int32"), "join_rejected": Value("int32"),
    "join_errors": Value("string"),
})


class VideoCaptionStage(_MergeStageBase):
    name = "merge-videos"
    input_key = schema.VIDEO_ID
    outputs = (schema.VIDEO_CAPTIONS,)
    status_config = schema.VIDEO_CAPTIONS
    settings = ("video_max_new_tokens", "integrate_mode", "max_context_tokens")
    prompts = (MERGE_SYSTEM, INTEGRATE_PROMPT)

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._llm is not None
        cfg = self.config
        params = cfg.params(video=True)
        limit, counter = self._context()
        items = [{k: batch[k][i] for k in batch} for i in range(len(batch[schema.VIDEO_ID]))]

        def one(item: dict[str, Any]) -> dict[str, Any]:
            res = integrate_video(item["captions"], self._llm, params, limit, counter, mode=cfg.integrate_mode)
            join_failed = int(item.get("join_failed_calls") or 0)
            # honest status: a video whose cluster joins fell back is not "ok" even when it needed no
            # integration call (one cluster): failed, with the joins' reasons, like its clusters
            status = schema.FAILED if join_failed else res.status
            error = "; ".join(e for e in (item.get("join_errors"), res.error) if e) or None
            return {
                schema.VIDEO_ID: item[schema.VIDEO_ID], schema.CAPTION: res.caption,
                "cluster_ids": item["cluster_ids"], "clip_ids": item["clip_ids"], "strategy": res.strategy,
                "llm_calls": res.llm_calls, "failed_calls": res.failed_calls,
                "join_calls": int(item.get("join_calls") or 0), "join_failed_calls": join_failed,
                "rejected_replies": int(item.get("join_rejected") or 0) + rejected_count(res.errors),
                "model": self.model_id(), "prompt_hash": prompt_hash(MERGE_SYSTEM, INTEGRATE_PROMPT),
                schema.STATUS: status, schema.ERROR_COL: error,
            }

        return {schema.VIDEO_CAPTIONS: self._parallel(one, items)}


THEME_INPUT = Features({schema.VIDEO_ID: Value("string"), schema.CAPTION: Value("string")})


class ThemeStage(_MergeStageBase):
    """A theme paragraph per video caption: its own unit, so a failed theme is retried on its own."""

    name = "merge-themes"
    input_key = schema.VIDEO_ID
    outputs = (schema.THEME_CAPTIONS,)
    status_config = schema.THEME_CAPTIONS
    settings = ("max_context_tokens",)
    prompts = (MERGE_SYSTEM, THEME_PROMPT)

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._llm is not None
        params = self.config.params(video=True)
        limit, counter = self._context()

        def one(item: tuple[str, str]) -> dict[str, Any]:
            vid, caption = item
            t = summarize_theme(caption, self._llm, params, limit, counter)
            return {schema.VIDEO_ID: vid, schema.CLIP_ID: "", schema.CAPTION: t.caption, "model": self.model_id(),
                    "prompt_hash": prompt_hash(MERGE_SYSTEM, THEME_PROMPT), schema.STATUS: t.status,
                    schema.ERROR_COL: t.error}

        rows = self._parallel(one, list(zip(batch[schema.VIDEO_ID], batch[schema.CAPTION])))
        return {schema.THEME_CAPTIONS: rows}


# ---- inputs ---------------------------------------------------------------------------------------------


def _rows(data: Dataset | pa.Table | list[dict[str, Any]], columns: Seq[str] | None = None) -> list[dict[str, Any]]:
    if isinstance(data, Dataset):
        data = data.with_format("arrow")[:]
    if isinstance(data, pa.Table):
        if columns is not None:
            data = data.select([c for c in columns if c in data.column_names])
        return data.to_pylist()
    return list(data)


def read_columns(repo: BenchmarkRepo, config: str, columns: Seq[str]) -> pa.Table:
    """Only ``columns`` of a config (the merge never needs the captions' settings or scores), verified against
    the shards' recorded hashes like every read (a tampered caption shard must not be merged silently)."""
    feats = schema.features_for(config)
    sch = pa.schema([feats.arrow_schema.field(c) for c in columns])
    return repo.read_columns(config, columns).cast(sch)


def _dataset(rows: dict[str, list[Any]], features: Features) -> Dataset:
    # an explicit fingerprint: datasets would otherwise hash (pickle) the whole table, for a cache never used
    return Dataset(pa.table(rows, schema=features.arrow_schema), info=DatasetInfo(features=features),
                   fingerprint=uuid.uuid4().hex)


#: what the video stage reads of a cluster row: its caption and how its joins went
CLUSTER_MADE = (schema.CLUSTER_ID, schema.CAPTION, "llm_calls", "failed_calls", "rejected_replies", schema.ERROR_COL)
_CAPTION_COLUMNS = (schema.CLIP_ID, schema.VIDEO_ID, schema.SLICE_NUM, schema.CAPTION, schema.STATUS)


def current_captions(captions: Dataset | pa.Table, clips: Dataset | pa.Table | None) -> list[dict[str, Any]]:
    """The caption rows to merge: one per current ``ok`` clip (when the repo has ``clips``).

    Captions of clips that no longer exist are dropped; a video with a clip not captioned yet is left out
    (its captions are merged once the caption stage has every clip). Both are logged.
    """
    rows = _rows(captions, _CAPTION_COLUMNS)
    if clips is None:
        return rows
    current: dict[str, set[str]] = {}
    for r in _rows(clips, (schema.CLIP_ID, schema.VIDEO_ID, schema.STATUS)):
        if r[schema.STATUS] == schema.OK:
            current.setdefault(r[schema.VIDEO_ID], set()).add(r[schema.CLIP_ID])
    have: dict[str, set[str]] = {}
    kept, orphans = [], 0
    for r in rows:
        if r[schema.CLIP_ID] in current.get(r[schema.VIDEO_ID], ()):
            kept.append(r)
            have.setdefault(r[schema.VIDEO_ID], set()).add(r[schema.CLIP_ID])
        else:
            orphans += 1
    if orphans:
        logger.warning("merge: %d clip captions of clips no longer in `clips` are left out (re-run lovr caption)",
                       orphans)
    waiting = {v for v, ids in current.items() if have.get(v, set()) != ids and v in have}
    if waiting:
        logger.warning("merge: %d video(s) have clips without a caption row yet, left out until captioned: %s",
                       len(waiting), ", ".join(sorted(waiting)[:5]))
    return [r for r in kept if r[schema.VIDEO_ID] not in waiting]


def cluster_inputs(captions: Dataset | pa.Table | list[dict[str, Any]], cluster_size: int,
                   clips: Dataset | pa.Table | None = None) -> Dataset:
    """Clip caption rows -> one row per cluster: EVERY caption row of a video, in slice order, in runs of
    ``cluster_size`` (the original's membership); unusable captions (status not in MERGEABLE) keep their
    place with their text left out."""
    rows = current_captions(captions, clips) if not isinstance(captions, list) else captions
    cols: dict[str, list[Any]] = {k: [] for k in CLUSTER_INPUT}
    for c in group_clips(rows, cluster_size):
        cols[schema.CLUSTER_ID].append(c.cluster_id)
        cols[schema.VIDEO_ID].append(c.video_id)
        cols["slice_nums"].append(c.slice_nums)
        cols["captions"].append(c.usable_captions)
        cols["clip_ids"].append(c.clip_ids)
        cols["statuses"].append([str(r.get(schema.STATUS) or schema.OK) for r in c.rows])
    return _dataset(cols, CLUSTER_INPUT)


def video_inputs(clusters: Dataset | pa.Table, cluster_in: Dataset, videos: set[str] | None = None) -> Dataset:
    """Videos whose clusters are ALL present -> one row with the cluster captions in order and every clip
    of the video (``videos``: only these)."""
    expected: dict[str, list[str]] = {}
    clip_ids: dict[str, list[str]] = {}
    t = cluster_in.with_format("arrow")[:] if len(cluster_in) else None
    if t is not None:
        for vid, cid, clips in zip(t.column(schema.VIDEO_ID).to_pylist(), t.column(schema.CLUSTER_ID).to_pylist(),
                                   t.column("clip_ids").to_pylist()):
            expected.setdefault(vid, []).append(cid)
            clip_ids.setdefault(vid, []).extend(clips)
    made = {r[schema.CLUSTER_ID]: r for r in _rows(clusters, CLUSTER_MADE)}
    cols: dict[str, list[Any]] = {k: [] for k in VIDEO_INPUT}
    for vid, ids in sorted(expected.items()):
        if (videos is None or vid in videos) and all(i in made for i in ids):
            rows = [made[i] for i in ids]
            cols[schema.VIDEO_ID].append(vid)
            cols["cluster_ids"].append(ids)
            cols["captions"].append([r.get(schema.CAPTION) or "" for r in rows])
            cols["clip_ids"].append(clip_ids[vid])
            cols["join_calls"].append(sum(int(r.get("llm_calls") or 0) for r in rows))
            cols["join_failed_calls"].append(sum(int(r.get("failed_calls") or 0) for r in rows))
            cols["join_rejected"].append(sum(int(r.get("rejected_replies") or 0) for r in rows))
            cols["join_errors"].append("; ".join(f"cluster {i}: {r.get(schema.ERROR_COL)}" for i, r in zip(ids, rows)
                                                 if r.get("failed_calls") and r.get(schema.ERROR_COL)) or None)
    return _dataset(cols, VIDEO_INPUT)


def theme_inputs(video_captions: Dataset | pa.Table) -> Dataset:
    """Video captions with text to summarise (status in :data:`THEMEABLE`, non-empty)."""
    rows = [r for r in _rows(video_captions, (schema.VIDEO_ID, schema.CAPTION, schema.STATUS))
            if r[schema.STATUS] in THEMEABLE and (r[schema.CAPTION] or "").strip()]
    return _dataset({schema.VIDEO_ID: [r[schema.VIDEO_ID] for r in rows],
                     schema.CAPTION: [r[schema.CAPTION] for r in rows]}, THEME_INPUT)


def _drop(repo: BenchmarkRepo, configs: tuple[str, ...], reason: str) -> bool:
    """Remove configs the current settings do not produce (their work stays: turning them on reuses it)."""
    dropped = False
    for cfg in configs:
        if repo.has(cfg):
            n = repo.read_table(cfg).num_rows
            repo.remove(cfg)
            dropped = True
            logger.warning("merge: removed %s (%d rows): %s", cfg, n, reason)
    return dropped


def _owned_videos(cluster_in: Dataset, shard: Shard) -> set[str]:
    """Videos whose first cluster lies in this chunk's share (each video has exactly one owner)."""
    vids = cluster_in[schema.VIDEO_ID] if len(cluster_in) else []
    mine = set(shard_range(len(vids), shard))
    owned, seen = set(), set()
    for i, v in enumerate(vids):
        if v not in seen:
            seen.add(v)
            if i in mine:
                owned.add(v)
    return owned


# ---- the stage ------------------------------------------------------------------------------------------


def merge(repo: BenchmarkRepo | str, config: MergeConfig | None = None,
          control: RunControl | None = None) -> StageResult:
    """Library entry point: clusters, then (when complete) full-video captions and themes, into ``repo``.

    Every table follows the current clip captions: clusters whose member captions changed are merged
    again, clusters and videos that no longer exist are removed, the rest is reused.
    """
    config = config or MergeConfig()
    control = control or RunControl()
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    caps = read_columns(repo, schema.CLIP_CAPTIONS, _CAPTION_COLUMNS)
    clips = read_columns(repo, schema.CLIPS, (schema.CLIP_ID, schema.VIDEO_ID, schema.STATUS)) \
        if repo.has(schema.CLIPS) else None
    cl_in = cluster_inputs(caps, config.cluster_size, clips)
    shard = control.shard()
    kw = dict(num_proc=control.num_proc, rerun=control.rerun, retry_failed=control.retry_failed)
    cstage, vstage, tstage = ClusterStage(config), VideoCaptionStage(config), ThemeStage(config)
    if control.gather_only:
        return _gather_only(repo, config, control, cl_in, cstage, vstage, tstage)
    res = cstage.apply(cl_in, repo, shard=shard, **kw)
    res.stats["computed_clusters"] = res.processed  # units computed this run, per step (the rest was reused)
    return _after_clusters(repo, config, control, cl_in, res, vstage, tstage)


def _reports(shard: Shard) -> bool:
    """Whether this process writes shared state (the card, dropped configs): not the other ranks of a job."""
    return shard.is_main or not shard.launched


def _after_clusters(repo: BenchmarkRepo, config: MergeConfig, control: RunControl, cl_in: Dataset,
                    res: StageResult, vstage: VideoCaptionStage, tstage: ThemeStage) -> StageResult:
    shard = control.shard()
    kw = dict(num_proc=control.num_proc, rerun=control.rerun, retry_failed=control.retry_failed)
    cstage = ClusterStage(config)
    if not config.video_captions:
        if res.complete and _reports(shard):
            vstage.wrote |= _drop(repo, (schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS), "video captions are off")
        barrier(shard)
        res.stats.update(summarize(repo))
        return res
    if not res.complete:  # a chunk with clusters still missing elsewhere: its own videos that are ready
        owned = _owned_videos(cl_in, shard)
        v_in = video_inputs(cstage.committed_rows(repo, cl_in, schema.CLUSTERS), cl_in, owned)
        if len(v_in):
            vres = vstage.apply(v_in, repo, gather=False, **kw)
            res.processed += vres.processed
            res.stats["computed_videos"] = vres.processed
        logger.info("merge: clusters of other chunks are missing; video captions of %d ready video(s) of this "
                    "chunk done, the chunk that finishes last does the rest", len(v_in))
        return res
    # every cluster committed: split the videos over the ranks of a launched job, else do all that are left
    step_shard = shard if shard.launched else Shard()
    v_in = video_inputs(read_columns(repo, schema.CLUSTERS, CLUSTER_MADE), cl_in)
    vres = vstage.apply(v_in, repo, shard=step_shard, **kw)
    res.processed += vres.processed
    res.seconds += vres.seconds
    res.stats["computed_videos"] = vres.processed
    if vres.complete:
        if config.theme:
            t_in = theme_inputs(read_columns(repo, schema.VIDEO_CAPTIONS, (schema.VIDEO_ID, schema.CAPTION, schema.STATUS)))
            tres = tstage.apply(t_in, repo, shard=step_shard, **kw)
            res.processed += tres.processed
            res.stats["computed_themes"] = tres.processed
            res.seconds += tres.seconds
        elif _reports(shard):
            tstage.wrote |= _drop(repo, (schema.THEME_CAPTIONS,), "--theme is off")
        barrier(shard)  # ranks read the merge configs only once rank 0 has dropped what is off
    res.complete = res.complete and vres.complete
    if _reports(shard):
        res.stats.update(summarize(repo))
    return res


def _gather_only(repo: BenchmarkRepo, config: MergeConfig, control: RunControl, cl_in: Dataset,
                 cstage: ClusterStage, vstage: VideoCaptionStage, tstage: ThemeStage) -> StageResult:
    """``--gather``: build every merge config from committed work; missing units raise MissingChunksError."""
    res = StageResult(outputs=cstage.gather(repo, cl_in, allow_partial=control.allow_partial))
    if config.video_captions and repo.has(schema.CLUSTERS):
        v_in = video_inputs(read_columns(repo, schema.CLUSTERS, CLUSTER_MADE), cl_in)
        res.outputs.update(vstage.gather(repo, v_in, allow_partial=control.allow_partial))
        if config.theme:
            t_in = theme_inputs(read_columns(repo, schema.VIDEO_CAPTIONS, (schema.VIDEO_ID, schema.CAPTION, schema.STATUS)))
            res.outputs.update(tstage.gather(repo, t_in, allow_partial=control.allow_partial))
    res.stats.update(summarize(repo))
    return res


def summarize(repo: BenchmarkRepo) -> dict[str, float]:
    """Merge counts for the run summary: joins and integrations asked of the LLM, how many fell back (a failed
    call or a rejected reply: the text kept), how many of those were rejected replies; themes likewise."""
    stats: dict[str, float] = dict(merge_call_counts(repo))  # rejected_replies: joins and integrations
    if repo.has(schema.CLUSTERS):
        cl = read_columns(repo, schema.CLUSTERS, ["llm_calls", "failed_calls", schema.STATUS]).to_pydict()
        stats.update(clusters=len(cl["llm_calls"]), llm_calls=sum(cl["llm_calls"]),
                     failed_calls=sum(cl["failed_calls"]),
                     clusters_failed=sum(s in (schema.FAILED, schema.ERROR) for s in cl[schema.STATUS]))
    if repo.has(schema.VIDEO_CAPTIONS):
        vc = read_columns(repo, schema.VIDEO_CAPTIONS, ["llm_calls", "failed_calls", "join_failed_calls",
                                                        schema.STATUS]).to_pydict()
        stats.update(video_captions=len(vc["llm_calls"]), video_llm_calls=sum(vc["llm_calls"]),
                     video_failed_calls=sum(vc["failed_calls"]),
                     videos_with_join_fallbacks=sum(1 for n in vc["join_failed_calls"] if n),
                     videos_failed=sum(s in (schema.FAILED, schema.ERROR) for s in vc[schema.STATUS]))
    if repo.has(schema.THEME_CAPTIONS):
        th = read_columns(repo, schema.THEME_CAPTIONS, [schema.STATUS, schema.ERROR_COL]).to_pydict()
        stats.update(themes=len(th[schema.STATUS]), themes_failed=sum(s != schema.OK for s in th[schema.STATUS]),
                     themes_rejected=rejected_count(th[schema.ERROR_COL]))
    logger.info("merge: %s", ", ".join(f"{k} {v:g}" for k, v in stats.items()))
    return stats


# ---- the original JSONL mode ---------------------------------------------------------------------------


def _read_jsonl(path: str | os.PathLike[str], *, tolerate_partial_tail: bool = False) -> list[dict[str, Any]]:
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    lines = p.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if tolerate_partial_tail and i >= len(lines) - 2:
                logger.warning("%s: dropping an incomplete last line (interrupted write)", p)
                break
            raise
    return rows


def merge_jsonl(cap_file: str, result_file: str, config: MergeConfig | None = None) -> int:
    """The original ``caption_merger.py`` contract: ``vid``/``slice_num``/``cap`` in; ``vid``,
    ``start_slice_num``, ``end_slice_num``, ``cap``, ``clip_count``, ``cluster_id``,
    ``merged_paragraphs`` out, one line per cluster; resumes by the cluster ids already in
    ``result_file``. Every row of the caption file takes its place in its run of ``cluster_size`` (the
    original's membership); a row whose ``status`` (lovr_hf's exported files have one) is not usable has
    its text left out, listed in the cluster's ``left_out``. Each line is written whole and fsync'ed; an
    interrupted last line is dropped on resume. Returns the number of clusters written this run."""
    config = config or MergeConfig()
    done_rows = _read_jsonl(result_file, tolerate_partial_tail=True)
    done = {r["cluster_id"] for r in done_rows}
    # rewrite the complete lines (drops a torn tail) by atomic rename: a kill during this rewrite must not
    # truncate the clusters already finished
    atomic_write_text(result_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done_rows))
    todo = [c for c in group_clips(_read_jsonl(cap_file), config.cluster_size) if c.cluster_id not in done]
    logger.info("merge (jsonl): %d clusters to do, %d already in %s", len(todo), len(done), result_file)
    from lovr_hf.failures import start_backend

    if not todo:
        return 0
    llm = start_backend(lambda: make_llm(config), config.model_path or _llm_identity(config), "LLM")
    params = config.params()
    from tqdm.auto import tqdm

    written = fell_back = 0
    with open(result_file, "a", encoding="utf-8") as f, ThreadPoolExecutor(max(1, config.num_workers)) as pool, \
            tqdm(total=len(todo), desc="merge clusters") as bar:
        for c, res in zip(todo, pool.map(lambda c: smooth_group(c.usable_captions, llm, params), todo)):
            row = {"vid": c.video_id, "start_slice_num": c.start_slice_num, "end_slice_num": c.end_slice_num,
                   "cap": res.caption, "clip_count": c.clip_count, "cluster_id": c.cluster_id,
                   "merged_paragraphs": res.merged_paragraphs, "llm_calls": res.llm_calls,
                   "failed_calls": res.failed_calls, "left_out": c.left_out}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            written += 1
            fell_back += res.failed_calls > 0
            bar.update(1)
    logger.info("merge (jsonl): %d clusters written, %d with joins that fell back to the original text "
                "(failed calls or rejected replies: their errors are in the log)", written, fell_back)
    if written and fell_back == written and any(c.clip_count > 1 for c in todo):
        raise NothingMergedError(f"no cluster of {cap_file} was merged by the LLM: every join fell back to the "
                                 f"original text ({written} clusters written to {result_file} as such)")
    return written


class NothingMergedError(RuntimeError):
    """JSONL mode: clusters were written but not one join succeeded (the command exits 1, the lines stay)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", default="openai", help="openai (default) | transformers | dummy | module:Class")
    p.add_argument("--api-model", dest="api_model", default=DEFAULT_API_MODEL,
                   help="--llm openai: the model name the server knows (the original's gpt-4o)")
    p.add_argument("--api-base", dest="api_base", default=os.environ.get("OPENAI_BASE_URL"),
                   help="--llm openai: the OpenAI-compatible server's URL (default: $OPENAI_BASE_URL, else the "
                        "official API)")
    p.add_argument("--model-path", "--model_path", dest="model_path", default=None,
                   help="transformers LLM: Hub id, folder, .gguf file or 'smollm2'")
    p.add_argument("--gguf-file", dest="gguf_file", default=None,
                   help="transformers LLM: the .gguf file inside --model-path to load")
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (the original merger's)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=1024, help="per join")
    p.add_argument("--video-max-new-tokens", dest="video_max_new_tokens", type=int, default=4096,
                   help="per video integration step")
    p.add_argument("--cluster-size", dest="cluster_size", type=int, default=DEFAULT_CLUSTER_SIZE,
                   help="clip captions per cluster, in slice order (the original's runs of 10)")
    p.add_argument("--no-video-captions", dest="video_captions", action="store_false",
                   help="stop at clusters, as the released code (default: also integrate them into one caption "
                        "per video)")
    p.add_argument("--integrate-mode", dest="integrate_mode", choices=("sequential", "hierarchical"),
                   default="sequential",
                   help="video captions: fold the clusters in one at a time, or pairwise in levels (fewer "
                        "tokens per call on long videos)")
    p.add_argument("--theme", action="store_true", help="also write a theme paragraph per video")
    p.add_argument("--max-context-tokens", dest="max_context_tokens", type=int, default=None,
                   help="the LLM's context, which inputs are sized to (default: what the backend reports)")
    p.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=8,
                   help="concurrent LLM requests (original flag)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one LLM request may take")
    p.add_argument("--max-retries", dest="max_retries", type=int, default=3,
                   help="retries of a failed LLM request after its first try (the original made 3 attempts "
                        "in all)")
    p.add_argument("--cap-file", dest="cap_file", default=None, help="original JSONL mode: input captions")
    p.add_argument("--result-file", dest="result_file", default=None, help="original JSONL mode: output")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(MergeConfig, args)
    if args.cap_file or args.result_file:
        if not (args.cap_file and args.result_file):
            logger.error("--cap-file and --result-file go together")
            return 2
        try:
            merge_jsonl(args.cap_file, args.result_file, config)
        except NothingMergedError as exc:  # a run where nothing succeeded never exits 0
            logger.error("lovr merge: %s", exc)
            return 1
        return 0
    control = control_from_args(args)
    try:
        merge(control.repo, config, control)
    except MissingChunksError as exc:
        logger.error("lovr merge: %s", exc)
        return 2
    shard = control.shard()
    if shard.launched and not shard.is_main:
        return 0  # rank 0 reports for the job
    return strict_exit(BenchmarkRepo(control.repo), {"merge": STAGE_CONFIGS["merge"]}, strict=control.strict)
