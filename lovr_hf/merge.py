"""Stage 3: clip captions -> ``clusters`` -> ``video_captions`` (+ optional ``theme_captions``).

Two resumable maps on the same engine:

1. **clusters** (unit = cluster): per video, captions in numeric slice order, in groups of
   ``cluster_size`` (10); inside a group the LLM rewrites only each join (the original
   ``caption_merger.py`` algorithm, :func:`lovr_hf.merge_text.smooth_group`). Clusters of one map batch
   run concurrently (``--num-workers`` requests in flight, the original flag).
2. **video captions** (unit = video): once all clusters of a video are in, they are integrated in order
   into one caption (:func:`lovr_hf.merge_text.integrate_video`, bounded by the model context), with
   provenance (cluster and clip ids, model, prompt hash) and an optional theme paragraph.

A video is complete only when all its clusters and its video caption are committed. The original
JSONL mode (``--cap-file`` / ``--result-file``) is kept for users of the original files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, Features, Sequence, Value

from lovr_hf import schema
from lovr_hf.backends.base import LLMS, ChatLLM, GenerationParams
from lovr_hf.cli_common import (
    RunControl,
    add_backend_option_arg,
    add_common_args,
    config_from_args,
    control_from_args,
)
from lovr_hf.merge_text import (
    DEFAULT_CLUSTER_SIZE,
    approx_tokens,
    group_clips,
    integrate_video,
    smooth_group,
)
from lovr_hf.prompts import INTEGRATE_PROMPT, MERGE_SYSTEM, THEME_PROMPT, TRANSITION_PROMPT, prompt_hash
from lovr_hf.repo import BenchmarkRepo, atomic_write_text
from lovr_hf.stage import Stage, StageResult

logger = logging.getLogger(__name__)

DEFAULT_API_MODEL = "gpt-4o"
#: caption statuses whose text is merged (needs_review captions are real text, kept and flagged)
MERGEABLE = (schema.OK, schema.NEEDS_REVIEW)


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
    return cfg.llm


class _MergeStageBase(Stage):
    runtime_fields = MergeConfig.RUNTIME

    def __init__(self, config: MergeConfig) -> None:
        super().__init__(config)
        self.batch_size = max(1, config.num_workers)
        self._llm: ChatLLM | None = None

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = super().fingerprint_payload()
        payload["prompts"] = prompt_hash(MERGE_SYSTEM, TRANSITION_PROMPT, INTEGRATE_PROMPT, THEME_PROMPT)
        return payload

    def setup(self) -> None:
        self._llm = make_llm(self.config)

    def model_id(self) -> str:
        return self._llm.model_id() if self._llm is not None else _llm_identity(self.config)

    def _parallel(self, fn: Any, items: list[Any]) -> list[Any]:
        if len(items) <= 1 or self.config.num_workers <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.config.num_workers, len(items))) as pool:
            return list(pool.map(fn, items))


CLUSTER_INPUT = Features({
    schema.CLUSTER_ID: Value("string"), schema.VIDEO_ID: Value("string"),
    "slice_nums": Sequence(Value("int32")), "captions": Sequence(Value("string")),
    "clip_ids": Sequence(Value("string")),
})


class ClusterStage(_MergeStageBase):
    name = "merge-clusters"
    input_key = schema.CLUSTER_ID
    outputs = (schema.CLUSTERS,)
    status_config = schema.CLUSTERS

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._llm is not None
        params = self.config.params()
        items = [{k: batch[k][i] for k in batch} for i in range(len(batch[schema.CLUSTER_ID]))]

        def one(item: dict[str, Any]) -> dict[str, Any]:
            res = smooth_group(item["captions"], self._llm, params)
            return {
                schema.VIDEO_ID: item[schema.VIDEO_ID], schema.CLUSTER_ID: item[schema.CLUSTER_ID],
                "start_slice_num": item["slice_nums"][0], "end_slice_num": item["slice_nums"][-1],
                "clip_count": len(item["slice_nums"]), schema.CAPTION: res.caption,
                "merged_paragraphs": res.merged_paragraphs, "llm_calls": res.llm_calls,
                "failed_calls": res.failed_calls, "model": self.model_id(),
                "prompt_hash": prompt_hash(MERGE_SYSTEM, TRANSITION_PROMPT),
                schema.STATUS: res.status, schema.ERROR_COL: res.error or None,
            }

        return {schema.CLUSTERS: self._parallel(one, items)}


VIDEO_INPUT = Features({
    schema.VIDEO_ID: Value("string"), "cluster_ids": Sequence(Value("string")),
    "captions": Sequence(Value("string")), "clip_ids": Sequence(Value("string")),
})


class VideoCaptionStage(_MergeStageBase):
    name = "merge-videos"
    input_key = schema.VIDEO_ID
    outputs = (schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS)
    status_config = schema.VIDEO_CAPTIONS

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        assert self._llm is not None
        cfg = self.config
        params = cfg.params(video=True)
        limit = cfg.max_context_tokens or getattr(self._llm, "max_context_tokens", None)
        counter = getattr(self._llm, "count_tokens", None) or approx_tokens
        items = [{k: batch[k][i] for k in batch} for i in range(len(batch[schema.VIDEO_ID]))]

        def one(item: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
            res = integrate_video(item["captions"], self._llm, params, limit, counter, mode=cfg.integrate_mode,
                                  theme=cfg.theme)
            row = {
                schema.VIDEO_ID: item[schema.VIDEO_ID], schema.CAPTION: res.caption,
                "cluster_ids": item["cluster_ids"], "clip_ids": item["clip_ids"], "strategy": res.strategy,
                "llm_calls": res.llm_calls, "failed_calls": res.failed_calls, "model": self.model_id(),
                "prompt_hash": prompt_hash(MERGE_SYSTEM, INTEGRATE_PROMPT),
                schema.STATUS: res.status, schema.ERROR_COL: res.error or None,
            }
            theme = None
            if cfg.theme:
                theme = {schema.VIDEO_ID: item[schema.VIDEO_ID], schema.CLIP_ID: "", schema.CAPTION: res.theme or "",
                         "model": self.model_id(), "prompt_hash": prompt_hash(MERGE_SYSTEM, THEME_PROMPT),
                         schema.STATUS: schema.FAILED if res.theme_error else schema.OK,
                         schema.ERROR_COL: res.theme_error}
            return row, theme

        done = self._parallel(one, items)
        return {schema.VIDEO_CAPTIONS: [r for r, _ in done],
                schema.THEME_CAPTIONS: [t for _, t in done if t is not None]}


def cluster_inputs(captions: Dataset, cluster_size: int) -> Dataset:
    """Clip caption rows -> one row per cluster (ids, slice numbers and captions in slice order)."""
    rows = [r for r in captions if r[schema.STATUS] in MERGEABLE]
    out = []
    for c in group_clips(rows, cluster_size):
        out.append({schema.CLUSTER_ID: c.cluster_id, schema.VIDEO_ID: c.video_id, "slice_nums": c.slice_nums,
                    "captions": c.captions, "clip_ids": c.clip_ids})
    return Dataset.from_list(out, features=CLUSTER_INPUT)


def video_inputs(clusters: Dataset, cluster_in: Dataset) -> Dataset:
    """Videos whose clusters are ALL present -> one row with the cluster captions in order."""
    expected: dict[str, list[str]] = {}
    clip_ids: dict[str, list[str]] = {}
    for r in cluster_in:
        expected.setdefault(r[schema.VIDEO_ID], []).append(r[schema.CLUSTER_ID])
        clip_ids.setdefault(r[schema.VIDEO_ID], []).extend(r["clip_ids"])
    have = {r[schema.CLUSTER_ID]: r for r in clusters}
    out = []
    for vid, ids in sorted(expected.items()):
        if all(i in have for i in ids):
            out.append({schema.VIDEO_ID: vid, "cluster_ids": ids,
                        "captions": [have[i][schema.CAPTION] for i in ids], "clip_ids": clip_ids[vid]})
    return Dataset.from_list(out, features=VIDEO_INPUT)


def merge(repo: BenchmarkRepo | str, config: MergeConfig | None = None,
          control: RunControl | None = None) -> StageResult:
    """Library entry point: clusters, then (when complete) full-video captions, into ``repo``."""
    config = config or MergeConfig()
    control = control or RunControl()
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    caps = repo.read(schema.CLIP_CAPTIONS)
    cl_in = cluster_inputs(caps, config.cluster_size)
    kw = dict(shard=control.shard(), num_proc=control.num_proc, rerun=control.rerun,
              retry_failed=control.retry_failed)
    cstage = ClusterStage(config)
    if control.gather_only:
        res = StageResult(outputs=cstage.gather(repo))
    else:
        res = cstage.apply(cl_in, repo, **kw)
    if not repo.has(schema.CLUSTERS) or not config.video_captions:
        return res
    clusters = repo.read(schema.CLUSTERS)
    v_in = video_inputs(clusters, cl_in)
    vstage = VideoCaptionStage(config)
    if control.gather_only:
        vstage.gather(repo)
    elif len(v_in):
        vres = vstage.apply(v_in, repo, **kw)
        res.processed += vres.processed
        res.seconds += vres.seconds
    res.stats.update(summarize(repo))
    return res


def summarize(repo: BenchmarkRepo) -> dict[str, float]:
    stats: dict[str, float] = {}
    if repo.has(schema.CLUSTERS):
        cl = repo.read(schema.CLUSTERS)
        stats.update(clusters=cl.num_rows, llm_calls=sum(cl["llm_calls"]), failed_calls=sum(cl["failed_calls"]),
                     clusters_failed=sum(s != schema.OK for s in cl[schema.STATUS]))
    if repo.has(schema.VIDEO_CAPTIONS):
        vc = repo.read(schema.VIDEO_CAPTIONS)
        stats.update(video_captions=vc.num_rows, video_llm_calls=sum(vc["llm_calls"]),
                     video_failed_calls=sum(vc["failed_calls"]))
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
    ``result_file``. Each line is written whole and fsync'ed; an interrupted last line is dropped on
    resume. Returns the number of clusters written this run."""
    config = config or MergeConfig()
    done_rows = _read_jsonl(result_file, tolerate_partial_tail=True)
    done = {r["cluster_id"] for r in done_rows}
    # rewrite the complete lines (drops a torn tail) by atomic rename: a kill during this rewrite must not
    # truncate the clusters already finished
    atomic_write_text(result_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done_rows))
    todo = [c for c in group_clips(_read_jsonl(cap_file), config.cluster_size) if c.cluster_id not in done]
    logger.info("merge (jsonl): %d clusters to do, %d already in %s", len(todo), len(done), result_file)
    llm = make_llm(config)
    params = config.params()
    from tqdm.auto import tqdm

    written = 0
    with open(result_file, "a", encoding="utf-8") as f, ThreadPoolExecutor(max(1, config.num_workers)) as pool, \
            tqdm(total=len(todo), desc="merge clusters") as bar:
        for c, res in zip(todo, pool.map(lambda c: smooth_group(c.captions, llm, params), todo)):
            row = {"vid": c.video_id, "start_slice_num": c.start_slice_num, "end_slice_num": c.end_slice_num,
                   "cap": res.caption, "clip_count": c.clip_count, "cluster_id": c.cluster_id,
                   "merged_paragraphs": res.merged_paragraphs, "llm_calls": res.llm_calls,
                   "failed_calls": res.failed_calls}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            written += 1
            bar.update(1)
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", default="openai", help="openai (default) | transformers | dummy | module:Class")
    p.add_argument("--api-model", dest="api_model", default=DEFAULT_API_MODEL)
    p.add_argument("--api-base", dest="api_base", default=os.environ.get("OPENAI_BASE_URL"))
    p.add_argument("--model-path", "--model_path", dest="model_path", default=None,
                   help="transformers LLM: Hub id, folder, .gguf file or 'smollm2'")
    p.add_argument("--gguf-file", dest="gguf_file", default=None)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=1024)
    p.add_argument("--cluster-size", dest="cluster_size", type=int, default=DEFAULT_CLUSTER_SIZE)
    p.add_argument("--no-video-captions", dest="video_captions", action="store_false")
    p.add_argument("--integrate-mode", dest="integrate_mode", choices=("sequential", "hierarchical"),
                   default="sequential")
    p.add_argument("--theme", action="store_true", help="also write a theme paragraph per video")
    p.add_argument("--max-context-tokens", dest="max_context_tokens", type=int, default=None)
    p.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=8,
                   help="concurrent LLM requests (original flag)")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--max-retries", dest="max_retries", type=int, default=3)
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
        merge_jsonl(args.cap_file, args.result_file, config)
        return 0
    control = control_from_args(args)
    res = merge(control.repo, config, control)
    return 1 if control.strict and res.stats.get("clusters_failed") else 0
