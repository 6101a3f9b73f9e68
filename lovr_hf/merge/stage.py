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

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from datasets import Dataset

from lovr_hf import schema
from lovr_hf.backends.base import ChatLLM
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.dist import Shard, barrier, shard_range
from lovr_hf.engine.stage import Stage, StageResult
from lovr_hf.merge.clusters import MERGEABLE
from lovr_hf.merge.config import MergeConfig, llm_identity, make_llm
from lovr_hf.merge.counts import summarize
from lovr_hf.merge.inputs import (
    CAPTION_COLUMNS,
    CLUSTER_MADE,
    cluster_inputs,
    read_columns,
    theme_inputs,
    video_inputs,
)
from lovr_hf.merge.text import (
    integrate_video,
    rejected_count,
    smooth_group,
    summarize_theme,
)
from lovr_hf.prompts import INTEGRATE_PROMPT, MERGE_SYSTEM, THEME_PROMPT, TRANSITION_PROMPT, prompt_hash
from lovr_hf.redact import redact
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


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

    fingerprint_config_key = None  # the LLM's identity, its settings and the prompts are the identity

    def fingerprint_extra(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "llm": llm_identity(cfg),
            "settings": {f: getattr(cfg, f) for f in ("temperature", "seed", *self.settings)},
            "backend_options": redact(dict(cfg.backend_options)), "prompts": prompt_hash(*self.prompts),
        }

    def setup(self) -> None:
        """Build the LLM once, before any row: a model that cannot load, or an OpenAI-compatible server that is
        unreachable or refuses the key, stops the command here (one line, exit 2) instead of marking rows."""
        from lovr_hf.failures import start_backend

        cfg = self.config
        self._llm = start_backend(lambda: make_llm(cfg), cfg.model_path or llm_identity(cfg), "LLM")

    def model_id(self) -> str:
        return self._llm.model_id() if self._llm is not None else llm_identity(self.config)

    def _parallel(self, fn: Any, items: list[Any]) -> list[Any]:
        if len(items) <= 1 or self.config.num_workers <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.config.num_workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _context(self) -> tuple[int | None, Any]:
        return self.config.max_context_tokens or self._llm.max_context_tokens, self._llm.count_tokens


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
    caps = read_columns(repo, schema.CLIP_CAPTIONS, CAPTION_COLUMNS)
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


