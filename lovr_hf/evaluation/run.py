"""``lovr eval``: embed captions, clips and videos with a retrieval model, then score pass@k.

Replaces the original per-model evaluation scripts with one engine and their stages with the same flags:

* ``--encode_text``: caption embeddings (clip, video and theme captions) -> ``embeddings-<model_slug>``;
* ``--encode_video [--num_chunks N --chunk_idx i] [--interval K | --num-frames N]``: clip and full-video
  embeddings, one resumable unit per video (also shards under ``accelerate launch``);
* ``--video_merge``: gather the chunks into the repo config (done automatically by the last chunk);
* ``--calc_pass [--topk 1,5,10]``: every retrieval direction of the original ``calc_pass`` through
  :func:`lovr_hf.evaluation.scoring.score`, with 95% bootstrap intervals and slices, written to the ``results`` config
  (only this model's rows of this protocol are replaced), the per-query ``rankings-<model>`` config,
  ``results.md`` (shown in the dataset card) and the plots under ``assets/``.

No stage flag runs them all. ``--compare [MODEL ...]`` renders models' results side by side; with exactly
two models it adds their paired comparison (:mod:`lovr_hf.report.compare`). ``--verify`` recomputes every results
row from the stored embeddings and rankings (:mod:`lovr_hf.evaluation.verify`) and exits 1 on any difference.

Scoring is in :mod:`lovr_hf.evaluation.scoring`, rendering in :mod:`lovr_hf.evaluation.results`; this module runs the steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from lovr_hf import schema
from lovr_hf.cli.common import (
    RunControl,
    add_backend_option_arg,
    add_common_args,
    config_from_args,
    control_from_args,
    require_repo,
    split_list,
)
from lovr_hf.evaluation.embed import TEXT_MODES, cost_report, run_stages, text_stages
from lovr_hf.evaluation.embed_video import video_stage
from lovr_hf.evaluation.models import PROTOCOLS, check_embedder, model_label
from lovr_hf.evaluation.results import (  # noqa: F401 - re-exported
    COST_JSON,
    DIRECTION_NAMES,
    PLOT,
    RESULTS_MD,
    render_markdown,
    render_results,
    write_cost,
    write_plot,
    write_results,
)
from lovr_hf.evaluation.scoring import EvalConfig, calc_pass, load_embeddings, score  # noqa: F401 - re-exported
from lovr_hf.failures import UnknownName
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
    write_results(repo, label, rows, config.protocol)
    render_results(repo)
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


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--model-path", "--model_path", dest="models", action="append", default=None,
                   help="Hub id, local folder, open_clip spec or my_module:MyEmbedder (several: repeat the flag "
                        "and/or give a comma list)")
    p.add_argument("--model-name", dest="model_name", default=None, help="label in results (one model)")
    p.add_argument("--backend", default="auto", help="auto (picked by the family table) | transformers | open_clip | jina | blip | xclip | gme | mm_embed | videoclip_xl | languagebind | mteb | describer | dummy | module:Class")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model (default: main)")
    p.add_argument("--dtype", default="auto",
                   help="weights dtype: auto (float32 on CPU; under --protocol original on a GPU, the family's original "
                        "precision) | bfloat16 | float16 | float32")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true",
                   help="allow the model's own code from the Hub (jina-clip-v2 needs it)")
    p.add_argument("--text-mode", "--text_mode", dest="text_mode", choices=TEXT_MODES, default="truncate",
                   help="long captions: truncate at the model limit (original) or average max-length chunks")
    p.add_argument("--max-text-tokens", dest="max_text_tokens", type=int, default=None,
                   help="caption token limit (default: the model's own)")
    p.add_argument("--interval", type=int, default=None, help="sample every K frames (default 10 for CLIP, else 30)")
    p.add_argument("--num-frames", "--num_frames", dest="num_frames", type=int, default=None,
                   help="N uniform frames per clip and per video instead of --interval")
    p.add_argument("--clip-queries", "--clip_queries", dest="clip_queries", default=None,
                   help="text->clip query captions: a count drawn with --seed, 'all', or 'auto' (default: the "
                        "released list on an imported release, else 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --clip-queries draw (recorded on every row)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="lovr",
                   help="lovr (default) or original: reproduce the original scripts, differences and all "
                        "(docs/evaluation.md)")
    p.add_argument("--exclude-needs-review", dest="exclude_needs_review", action="store_true",
                   help="leave captions marked needs_review out of the queries (default: included, flagged)")
    p.add_argument("--topk", default=None, help="k values, e.g. 1,5,10 (default 1..20 as the original)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap resamples for the 95%% intervals (default 1000; 0 = none)")
    p.add_argument("--bootstrap-seed", dest="bootstrap_seed", type=int, default=None,
                   help="seed of the bootstrap (default 0; recorded on every row)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                   help="captions or clips per forward pass (original LoVR flag)")
    p.add_argument("--decode-workers", dest="decode_workers", type=int, default=None,
                   help="decode threads (default: sized to the machine)")
    p.add_argument("--prefetch-bytes", dest="prefetch_bytes", type=int, default=None,
                   help="bytes of decoded frames held ahead of the model (default 2 GiB)")
    p.add_argument("--decode-backend", dest="decode_backend", default="auto", choices=("auto", "pyav", "decord"),
                   help="frame decoder: decord as the original where installed (auto), else PyAV")
    g = p.add_argument_group("stages (original flags; none = all)")
    for step, text in (("encode_text", "embed clip/video/theme captions"),
                       ("encode_video", "embed clips and full videos (this chunk)"),
                       ("video_merge", "gather finished chunks into the repo"),
                       ("calc_pass", "score pass@k from stored embeddings")):
        g.add_argument(f"--{step}", f"--{step.replace('_', '-')}", dest=step, action="store_true", help=text)
    p.add_argument("--compare", nargs="*", default=None, metavar="MODEL",
                   help="render results of these models (default all) side by side; with exactly two models "
                        "A B also their paired comparison (A - B on the same queries); embeds nothing")
    p.add_argument("--verify", action="store_true",
                   help="recompute every results row (of --model / --model-name, default all models) from the "
                        "stored embeddings and rankings; exit 1 on any difference")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    control = control_from_args(args)
    args.models = split_list(args.models) or None
    repo = require_repo(control.repo, "eval")  # a mistyped --repo: exit 2, nothing created
    if args.verify:
        from lovr_hf.evaluation.verify import verify

        # results are keyed by label (a local folder: <folder>-<content hash>); the folder itself is what
        # rescoring needs (its revision, its tokenizer), and rows never record where it lies
        given = args.models or []
        labels = [args.model_name] if args.model_name else [model_label(m) for m in given]
        refs = {lab: m for lab, m in zip(labels, given) if lab != m}
        report = verify(repo, labels or None, refs=refs)
        print(report.render())
        return 0 if report.ok else 1
    if args.compare is not None:
        try:
            names = [model_label(m) for m in args.compare]  # a local folder given by path: its label
            print(render_results(repo, names or None))
            if len(names) == 2:
                from lovr_hf.report.compare import paired, render_paired

                print(render_paired(paired(repo, *names)))
        except (UnknownName, ValueError, FileNotFoundError) as exc:  # a KeyError bug keeps its traceback
            logger.error("lovr eval --compare: %s", exc)
            return 2
        return 0
    if not args.models:
        logger.error("lovr eval: --model is required (or --compare)")
        return 2
    base = config_from_args(EvalConfig, args, model=args.models[0])
    steps = [s for s in STEPS if getattr(args, s, False)]
    try:
        rows = evaluate_models(repo, args.models, base, control, steps=steps or None)
    except (ValueError, UnknownName, ImportError, FileNotFoundError) as exc:  # not a KeyError bug
        logger.error("lovr eval: %s", exc)
        return 2
    from lovr_hf.report.summary import embedding_configs, strict_exit

    slugs = [dataclasses.replace(base, model=m).slug() for m in args.models]
    if strict_exit(repo, {"eval": embedding_configs(repo, slugs)}, strict=control.strict):
        return 1
    if rows:
        logger.info("results written to %s (%s, %s)", repo.root, schema.RESULTS, RESULTS_MD)
    return 0
