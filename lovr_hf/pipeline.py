"""The whole pipeline: segment -> caption -> merge -> (eval), each stage resuming where it stopped.

Options come from a YAML/JSON config file (sections ``segment``, ``caption``, ``merge``, ``eval`` plus
top-level ``input_folder``, ``repo``, ``eval_models``) and overrides (``lovr run``'s flags,
:mod:`lovr_hf.cli.run`), overrides winning. The exact configuration used is written to
``<repo>/run_config.json`` and the card (credentials redacted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from lovr_hf import __version__, schema
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.stage import StageResult
from lovr_hf.failures import UsageError
from lovr_hf.merge.config import MergeConfig
from lovr_hf.merge.stage import merge
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.card import write_card
from lovr_hf.report.summary import STAGE_CONFIGS, embedding_configs, format_counts, merge_line, stage_counts
from lovr_hf.segment.stage import SegmentConfig, segment

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PipelineConfig:
    input_folder: str = ""
    repo: str = "lovr"
    recursive: bool = True
    segment: SegmentConfig = dataclasses.field(default_factory=SegmentConfig)
    caption: CaptionConfig = dataclasses.field(default_factory=CaptionConfig)
    merge: MergeConfig = dataclasses.field(default_factory=MergeConfig)
    eval_models: list[str] = dataclasses.field(default_factory=list)
    eval: dict[str, Any] = dataclasses.field(default_factory=dict)  # lovr_hf.evaluation.run.EvalConfig fields
    demo: dict[str, Any] = dataclasses.field(default_factory=dict)  # `lovr demo`: its mode and which models were real

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lovr_hf_version"] = __version__
        return d


def _build(cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}")
    return cls(**values)


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Config file (YAML or JSON) merged with ``overrides`` (``{"segment": {...}, "repo": ...}``)."""
    data: dict[str, Any] = {}
    if path:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if str(path).endswith(".json") else (yaml.safe_load(text) or {})
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        elif value is not None:
            data[key] = value
    sections = {"segment": SegmentConfig, "caption": CaptionConfig, "merge": MergeConfig}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections:
            kwargs[key] = _build(sections[key], value or {})
        elif key in ("lovr_hf_version",):
            continue
        else:
            kwargs[key] = value
    return _build(PipelineConfig, kwargs)


def _finisher(control: RunControl) -> RunControl:
    """The same run without manual chunks: the chunk that completed a stage does what is left downstream."""
    return dataclasses.replace(control, num_chunks=None, chunk_idx=None)


def _step(name: str, fn: Any, control: RunControl, manual_chunks: bool, models: tuple[str, ...] = ()) -> StageResult:
    """Run one stage on this chunk's share; a chunk that got here (it completed the stage before) then
    does the units other chunks have not (they stopped at the stage they could not complete). Then the
    models the stage loaded (``models``: kinds of :mod:`lovr_hf.backends.model_cache` keys) are released, so
    the captioning VLM does not hold GPU memory while the merge LLM and the embedders run."""
    logger.info("== %s ==", name)
    res = fn(control)
    if manual_chunks and not res.complete:
        logger.info("%s: finishing the units of the other chunks too", name)
        res = fn(_finisher(control))
    if models:
        from lovr_hf.backends.model_cache import release_kinds

        release_kinds(*models)
    return res


def run_pipeline(cfg: PipelineConfig, control: RunControl | None = None) -> dict[str, Any]:
    """Every stage in order; returns the summary (also logged).

    Under ``accelerate launch`` every stage is split over the ranks (each stage ends with a barrier after
    rank 0's gather). With manual chunks (``--num-chunks/--chunk-idx``), a chunk segments its share and
    stops while other chunks' videos are still unsegmented; the chunk that completes segmentation (in any
    order) goes on: its share of each later stage, then whatever is left of it.
    """
    control = control or RunControl(repo=cfg.repo)
    control = dataclasses.replace(control, repo=cfg.repo)
    if not cfg.input_folder:
        raise UsageError("input_folder is required (--input_folder or the config file)")
    repo = BenchmarkRepo(cfg.repo)
    repo.root.mkdir(parents=True, exist_ok=True)
    shard = control.shard()
    manual = shard.world_size > 1 and not shard.launched
    if shard.is_main or manual:
        repo.write_run_config(cfg.to_dict())
    summary: dict[str, Any] = {"repo": str(repo.root), "complete": False}
    from lovr_hf.backends.standins.demo_merge import reset_tally

    reset_tally()  # the demo merger's tally (who wrote each merged text) counts this run only
    stages: dict[str, tuple[str, ...]] = {}
    logger.info("== segment ==")
    res = segment(cfg.input_folder, repo, cfg.segment, control, recursive=cfg.recursive)
    stages["segment"] = STAGE_CONFIGS["segment"]
    if not res.complete:
        logger.warning("segmentation not complete (other chunks still running): this chunk stops here; the "
                       "chunk that completes segmentation runs the later stages")
        return summary
    ctl = control
    _step("caption", lambda c: caption(repo, cfg.caption, c), ctl, manual, models=("captioner", "causal_lm"))
    stages["caption"] = STAGE_CONFIGS["caption"]
    mres = _step("merge", lambda c: merge(repo, cfg.merge, c), ctl, manual, models=("causal_lm",))
    stages["merge"] = STAGE_CONFIGS["merge"]
    if cfg.eval_models and mres.complete:
        logger.info("== eval: %s ==", ", ".join(map(model_label, cfg.eval_models)))
        from lovr_hf.evaluation.run import evaluate_models
        from lovr_hf.evaluation.scoring import EvalConfig

        base = _build(EvalConfig, dict(cfg.eval))
        if evaluate_models(repo, cfg.eval_models, base, _finisher(ctl) if manual else ctl):
            from lovr_hf.report.results_page import render_results

            render_results(repo)  # results.md and plots, once for all the models
        slugs = [dataclasses.replace(base, model=m).slug() for m in cfg.eval_models]
        stages["eval"] = embedding_configs(repo, slugs)
    summary["complete"] = mres.complete
    if shard.launched and not shard.is_main:
        return summary  # rank 0 writes the card and reports for the job
    write_card(repo)
    summary.update(summarize(repo))
    summary["status"] = stage_counts(repo, stages)
    if "eval" in stages:
        from lovr_hf.evaluation.embed import text_inputs_report

        summary["eval_captions"] = text_inputs_report(repo)
    log_summary(summary)
    return summary


def _stand_in_tally() -> dict[str, int]:
    """The demo merger's tally of this process (who wrote each join and integration), if it ran here."""
    from lovr_hf.backends.standins.demo_merge import TALLY

    kinds = ("join", "integrate")
    if not any(TALLY[(k, w)] for k in kinds for w in ("llm", "stand-in")):
        return {}
    return {"merge_stand_in": sum(TALLY[(k, "stand-in")] for k in kinds),
            "merge_stand_in_llm": sum(TALLY[(k, "llm")] for k in kinds)}


def summarize(repo: BenchmarkRepo) -> dict[str, Any]:
    s: dict[str, Any] = {}
    if repo.has(schema.VIDEOS):
        v = repo.read(schema.VIDEOS)
        ok = [r for r in v if r[schema.STATUS] == schema.OK]
        s.update(videos=v.num_rows, videos_ok=len(ok), hours=sum(r["duration_s"] or 0 for r in ok) / 3600)
    if repo.has(schema.CLIPS):
        s["clips"] = repo.read(schema.CLIPS).num_rows
    if repo.has(schema.CLIP_CAPTIONS):
        st = repo.read(schema.CLIP_CAPTIONS)[schema.STATUS]
        s["captions"] = {k: st.count(k) for k in schema.STATUSES if st.count(k)}
    from lovr_hf.merge.counts import summarize as merge_counts

    # every join and integration asked of the LLM and how it ended, from the tables' count columns (a video
    # row's join counts repeat its clusters': not added again)
    m = merge_counts(repo) if repo.has(schema.CLUSTERS) else {}
    s.update(merge_calls=int(m.get("join_calls", 0) + m.get("integrate_calls", 0)),
             merge_join_calls=int(m.get("join_calls", 0)), merge_integrate_calls=int(m.get("integrate_calls", 0)),
             merge_failed_calls=int(m.get("join_failed_calls", 0) + m.get("integrate_failed_calls", 0)),
             merge_rejected_replies=int(m.get("rejected_replies", 0)))
    for key in ("clusters", "video_captions", "videos_failed", "themes", "themes_failed", "themes_rejected"):
        if key in m:
            s[key] = int(m[key])
    s.update(_stand_in_tally())
    results_md = repo.root / "results.md"
    if results_md.exists():
        s["results_table"] = results_md.read_text(encoding="utf-8")
    return s


def log_summary(s: dict[str, Any]) -> None:
    root = s.get("repo", "lovr")
    lines = [
        "== summary ==",
        f"repo: {root}",
        f"videos: {s.get('videos', 0)} ({s.get('videos_ok', 0)} ok, {s.get('hours', 0.0):.2f} h), "
        f"clips: {s.get('clips', 0)}",
        f"captions: {s.get('captions', {})}",
        f"clusters: {s.get('clusters', 0)}, video captions: {s.get('video_captions', 0)}, "
        f"video captions failed: {s.get('videos_failed', 0)}",
        merge_line(s),
    ]
    if s.get("themes"):
        lines.append(f"themes: {s['themes']}, of which {s.get('themes_failed', 0)} failed "
                     f"({s.get('themes_rejected', 0)} replies rejected by the guard)")
    if s.get("status"):
        lines += ["rows per stage and status:", format_counts(s["status"])]
    if s.get("eval_captions"):
        lines.append("captions embedded for eval: " + ", ".join(
            f"{kind} {c['embedded']} (left out {c['left_out']})" for kind, c in s["eval_captions"].items()))
    if s.get("results_table"):
        lines += ["results:", s["results_table"]]
    lines += [
        "next:",
        f"  python -c \"from datasets import load_dataset; print(load_dataset('{root}', 'clip_captions'))\"",
        f"  lovr push {root} --repo-id <org>/<name>",
    ]
    logger.info("\n".join(lines))
