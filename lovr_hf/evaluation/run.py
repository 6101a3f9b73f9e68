"""``lovr eval``: embed captions, clips and videos with a retrieval model, then score pass@k.

Replaces the original per-model evaluation scripts with one engine and their stages with the same flags:

* ``--encode_text``: caption embeddings (clip, video and theme captions) -> ``embeddings-<model_slug>``;
* ``--encode_video [--num_chunks N --chunk_idx i] [--interval K | --num-frames N]``: clip and full-video
  embeddings, one resumable unit per video (also shards under ``accelerate launch``);
* ``--video_merge``: gather the chunks into the repo config (done automatically by the last chunk);
* ``--calc_pass [--topk 1,5,10]``: every retrieval direction of the original ``calc_pass`` through
  :func:`lovr_hf.evaluation.scoring.score`, with 95% bootstrap intervals and slices, written to the ``results`` config
  (only this model's rows of this protocol are replaced) and the per-query ``rankings-<model>`` config;
  ``results.md`` (shown in the dataset card) and the plots under ``assets/`` are rendered from them by the
  command (:mod:`lovr_hf.cli.eval`, :func:`lovr_hf.report.results_page.render_results`).

No stage flag runs them all. ``--compare [MODEL ...]`` renders models' results side by side; with exactly
two models it adds their paired comparison (:mod:`lovr_hf.report.compare`). ``--verify`` recomputes every results
row from the stored embeddings and rankings (:mod:`lovr_hf.evaluation.verify`) and exits 1 on any difference.

Scoring is in :mod:`lovr_hf.evaluation.scoring`, storage in :mod:`lovr_hf.evaluation.results`, rendering in
:mod:`lovr_hf.report.results_page`, the command line in :mod:`lovr_hf.cli.eval`; this module runs the steps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from lovr_hf import schema
from lovr_hf.backends.embedders.common import TEXT_MODES
from lovr_hf.engine.control import RunControl
from lovr_hf.evaluation.embed import cost_report, run_stages, text_stages
from lovr_hf.evaluation.embed_video import video_stage
from lovr_hf.evaluation.models import check_embedder
from lovr_hf.evaluation.results import write_cost, write_results
from lovr_hf.evaluation.scoring import EvalConfig, score
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stats.rankings import write_rankings

logger = logging.getLogger(__name__)

STEPS = ("encode_text", "encode_video", "video_merge", "calc_pass")


# ---------------------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------------------


def _steps(steps: Iterable[str] | None) -> tuple[set[str], bool]:
    """(steps to run, explicit?). No steps = encode text, encode video, then score."""
    if not steps:
        return {"encode_text", "encode_video", "calc_pass"}, False
    chosen = set(steps)
    unknown = chosen - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; known: {STEPS}")
    return chosen, True


def evaluate_model(
    repo: BenchmarkRepo | str,
    config: EvalConfig,
    control: RunControl | None = None,
    *,
    steps: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Embed and score one model; returns its ``results`` rows (empty on non-main ranks, or while other
    chunks are still embedding). ``steps``: a subset of :data:`STEPS` (default: all)."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    control = control or RunControl()
    if not config.model:
        raise ValueError("no model given")
    if config.text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {config.text_mode!r}")
    wanted, explicit = _steps(steps)
    if wanted & {"encode_text", "encode_video"}:
        check_embedder(config)  # fail before any work: unknown backend, missing extra, remote code refused
    if control.gather_only:
        wanted = {"video_merge"} | (wanted & {"calc_pass"} if explicit else set())
    label, slug = config.label(), config.slug()
    shard = control.shard()
    complete = True
    encoded = False
    stages = []
    if wanted & {"encode_text", "video_merge"}:
        stages += [("encode_text", st) for st in text_stages(repo, config, slug)]
    if wanted & {"encode_video", "video_merge"} and repo.has(schema.CLIPS):
        stages.append(("encode_video", video_stage(repo, config, slug)))
    for step in ("encode_text", "encode_video"):
        if step in wanted:
            run = run_stages([st for s, st in stages if s == step], repo, control)
            encoded = True
            if not run.complete:
                complete = False
                logger.info("%s: %s still to do %s", label, step, run.missing)
    main_rank = shard.is_main or not shard.launched
    if not main_rank:
        return []
    if "video_merge" in wanted:
        run = run_stages([st for _, st in stages], repo, control, gather_only=True)
        if not run.complete:
            logger.warning("%s: merged incomplete embeddings (missing %s): they count as misses", label, run.missing)
    if encoded:
        report = cost_report(repo, config, slug)
        write_cost(repo, label, report)
        for part, c in report.items():
            logger.info("%s cost %-8s %6d items %7d frames  I/O %9.0f ms  encode %9.0f ms", label, part,
                        c["items"], c["frames"], c["io_ms"], c["encode_ms"])
    if "calc_pass" not in wanted or (not complete and not explicit):
        if "calc_pass" in wanted:
            logger.info("%s: other chunks are still embedding; the last one to finish scores (or run --calc_pass)",
                        label)
        return []
    if not encoded:  # --calc_pass alone: the stored embeddings must describe the current data
        from lovr_hf.evaluation.embed import stale_embeddings

        stale = stale_embeddings(repo, config, slug, count_missing=not control.allow_partial)
        if stale:
            raise ValueError(
                f"{label}: stored embeddings do not match the current data ({', '.join(f'{k}: {n}' for k, n in stale.items())}"
                " units added, changed or removed since they were embedded): run `lovr eval` for this model without "
                "--calc_pass to embed them, then score")
    scored = score(repo, config)
    rows = scored.rows
    write_rankings(repo, slug, config.protocol, scored.rankings)
    write_results(repo, label, rows, config.protocol)  # results.md and plots: the report layer, per command
    for r in rows:
        if r["metric"] == "pass@k" and r["k"] in (1, 5, 10) and r["slice"] == "all":
            ci = f" [{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if r.get("ci_low") is not None else ""
            logger.info("%s %-14s pass@%-2d %.4f%s (%d queries)", label, r["direction"], r["k"], r["value"], ci,
                        r["num_queries"])
    return rows


def evaluate_models(
    repo: BenchmarkRepo | str,
    models: Sequence[str],
    base_config: EvalConfig | None = None,
    control: RunControl | None = None,
    *,
    steps: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate_model` for each model with the same settings; returns all result rows."""
    base = base_config or EvalConfig()
    if base.model_name and len(models) > 1:
        raise ValueError("model_name labels one model; give one model or no name")
    from lovr_hf.evaluation.models import release_embedders

    rows: list[dict[str, Any]] = []
    for m in models:
        rows += evaluate_model(repo, dataclasses.replace(base, model=m), control, steps=steps)
        if len(models) > 1:
            release_embedders()  # one model in memory at a time, not all of them
    return rows
