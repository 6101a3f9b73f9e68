"""``lovr eval``: embed captions, clips and videos with a retrieval model, then score pass@k.

Replaces the original per-model evaluation scripts with one engine and their stages with the same flags:

* ``--encode_text``: caption embeddings (clip, video and theme captions) -> ``embeddings-<model_slug>``;
* ``--encode_video [--num_chunks N --chunk_idx i] [--interval K | --num-frames N]``: clip and full-video
  embeddings, one resumable unit per video (also shards under ``accelerate launch``);
* ``--video_merge``: gather the chunks into the repo config (done automatically by the last chunk);
* ``--calc_pass [--topk 1,5,10]``: every retrieval direction of the original ``calc_pass`` through
  :func:`lovr_hf.retrieval.evaluate_directions`, written to the ``results`` config (only this model's
  rows are replaced), ``results.md`` (shown in the dataset card) and a pass@k plot under ``assets/``.

No stage flag runs them all. ``--compare`` renders several models' results side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import __version__, schema
from lovr_hf.cli_common import (
    RunControl,
    add_backend_option_arg,
    add_common_args,
    config_from_args,
    control_from_args,
)
from lovr_hf.embed import (
    TEXT_KINDS,
    TEXT_MODES,
    EmbedConfig,
    check_embedder,
    cost_report,
    model_slug,
    run_stages,
    text_stages,
    video_stage,
)
from lovr_hf.repo import ASSETS_DIR, BenchmarkRepo, atomic_write_text
from lovr_hf.retrieval import DIRECTIONS, EmbeddingSet, evaluate_directions, parse_ks

logger = logging.getLogger(__name__)

STEPS = ("encode_text", "encode_video", "video_merge", "calc_pass")
RESULTS_MD = "results.md"
PLOT = f"{ASSETS_DIR}/retrieval_pass_at_k.png"
COST_JSON = f"{ASSETS_DIR}/eval_cost.json"
DIRECTION_NAMES = {
    "text_to_clip": "text → clip",
    "clip_to_text": "clip → text",
    "text_to_video": "text → video",
    "video_to_text": "video → text",
    "theme_to_clip": "theme → clip",
    "clip_to_theme": "clip → theme",
}
_MAIN_DIRECTIONS = ("text_to_clip", "clip_to_text", "text_to_video", "video_to_text")
_THEME_DIRECTIONS = ("theme_to_clip", "clip_to_theme")


@dataclasses.dataclass
class EvalConfig(EmbedConfig):
    """Embedding settings plus the scoring protocol (the protocol is not part of any fingerprint)."""

    model_name: str | None = None  # label in results (default: the model string); also names the slug
    clip_queries: str = "1000"  # text->clip query captions: a count drawn with --seed, or "all"
    seed: int = 0
    topk: str | None = None  # "1,5,10"; None = 1..20 (original default)

    def label(self) -> str:
        return self.model_name or self.model

    def slug(self) -> str:
        return model_slug(self.label())


# ---------------------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class KindRows:
    """The ``ok`` embedding rows of one kind."""

    ids: list[str]
    video_ids: list[str]
    vectors: np.ndarray


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        raise ValueError(f"embeddings of different widths: {sorted(set(lengths.tolist()))}")
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), int(lengths[0]))


def load_embeddings(repo: BenchmarkRepo, slug: str) -> tuple[dict[str, KindRows], dict[str, Any]]:
    """Embedding rows per kind (status ok only) and the settings they were made with."""
    config = schema.embeddings_config(slug)
    if not repo.has(config):
        raise FileNotFoundError(
            f"{repo.root} has no {config!r}: embed first (lovr eval --encode_text / --encode_video)"
        )
    t = repo.read_table(config)
    bad = t.filter(pc.not_equal(t[schema.STATUS], schema.OK))
    if bad.num_rows:
        counts: dict[str, int] = {}
        for kind in bad.column("kind").to_pylist():
            counts[kind] = counts.get(kind, 0) + 1
        logger.warning("%s: rows not ok (counted as misses): %s", config, counts)
    t = t.filter(pc.equal(t[schema.STATUS], schema.OK))
    out: dict[str, KindRows] = {}
    for kind in sorted(set(t.column("kind").to_pylist())):
        k = t.filter(pc.equal(t["kind"], kind))
        out[kind] = KindRows(k.column("item_id").to_pylist(), k.column(schema.VIDEO_ID).to_pylist(),
                             _vectors(k.column("embedding")))

    def uniq(kinds: Sequence[str], col: str) -> Any:
        vals = t.filter(pc.is_in(t["kind"], value_set=pa.array(list(kinds)))).column(col).to_pylist()
        vals = sorted({v for v in vals if v is not None}, key=str)
        if len(vals) > 1:
            logger.warning("%s: mixed %s values %s", config, col, vals)
        return ",".join(map(str, vals)) if col == "text_mode" else (vals[0] if vals else None)

    settings = {"text_mode": uniq(list(TEXT_KINDS), "text_mode"),
                "interval": uniq(["clip", "video"], "interval"),
                "uniform_frames": uniq(["clip", "video"], "uniform_frames")}
    return out, settings


def _theme_sets(sets: dict[str, KindRows]) -> dict[str, EmbeddingSet] | None:
    """Theme captions vs clips. Clip-level themes: gold = their clip. Video-level themes (what ``lovr merge``
    writes): gold = every clip of their video (clips are relabelled by video id, so a hit is any clip of the
    video in the top k; clip->theme asks each clip for its video's theme)."""
    theme, clips = sets.get("theme_caption"), sets.get("clip")
    if theme is None or clips is None or not theme.ids:
        return None
    video_level = np.array([i == v for i, v in zip(theme.ids, theme.video_ids)])
    if video_level.all():
        return {"theme_caption": EmbeddingSet(list(theme.video_ids), theme.vectors),
                "clip": EmbeddingSet(list(clips.video_ids), clips.vectors)}
    if video_level.any():
        logger.warning("theme captions: %d video-level themes left out (mixed with clip-level themes)",
                       int(video_level.sum()))
    keep = ~video_level
    return {"theme_caption": EmbeddingSet([i for i, k in zip(theme.ids, keep) if k], theme.vectors[keep]),
            "clip": EmbeddingSet(list(clips.ids), clips.vectors)}


def calc_pass(repo: BenchmarkRepo, config: EvalConfig) -> list[dict[str, Any]]:
    """Result rows of every direction the stored embeddings allow (the original ``calc_pass``)."""
    sets, settings = load_embeddings(repo, config.slug())
    ks = parse_ks(config.topk)
    cq: int | str = "all" if str(config.clip_queries).lower() == "all" else int(config.clip_queries)
    main = {k: EmbeddingSet(v.ids, v.vectors) for k, v in sets.items() if k != "theme_caption"}
    rows = evaluate_directions(main, clip_queries=cq, seed=config.seed, ks=ks, directions=_MAIN_DIRECTIONS)
    theme = _theme_sets(sets)
    if theme is not None:
        rows += evaluate_directions(theme, ks=ks, directions=_THEME_DIRECTIONS)
    extra = {"model": config.label(), "text_mode": settings["text_mode"], "interval": settings["interval"],
             "uniform_frames": settings["uniform_frames"], "query_seed": config.seed,
             "lovr_hf_version": __version__}
    return [{**extra, **r} for r in rows]


# ---------------------------------------------------------------------------------------------------------
# results: config, markdown, plot
# ---------------------------------------------------------------------------------------------------------


def _lock(repo: BenchmarkRepo):
    from filelock import FileLock

    repo.work_root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(repo.work_root / "results.lock"))


def write_results(repo: BenchmarkRepo, model: str, rows: list[dict[str, Any]]) -> None:
    """Replace ``model``'s rows of the ``results`` config (other models' rows stay)."""
    from lovr_hf.repo import to_arrow

    new = to_arrow(rows, schema.RESULTS_FEATURES)
    with _lock(repo):
        if repo.has(schema.RESULTS):
            old = repo.read_table(schema.RESULTS)
            new = pa.concat_tables([old.filter(pc.not_equal(old["model"], model)), new])
        repo.write(schema.RESULTS, new, update_card=False)  # render_results refreshes the card


def _read_costs(repo: BenchmarkRepo) -> dict[str, Any]:
    p = repo.root / COST_JSON
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except ValueError:
        return {}


def write_cost(repo: BenchmarkRepo, model: str, report: dict[str, Any]) -> None:
    with _lock(repo):
        costs = _read_costs(repo)
        costs[model] = report
        atomic_write_text(repo.root / COST_JSON, json.dumps(costs, indent=2, sort_keys=True))


def _short(label: str, n: int = 48) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1) :]


def _cell(label: str) -> str:
    return _short(label).replace("|", "\\|")


def _shown_ks(ks: list[int]) -> list[int]:
    if len(ks) <= 6:
        return ks
    return [k for k in (1, 5, 10, 20, 50, 100) if k in ks] or ks[:6]


def write_plot(repo: BenchmarkRepo, rows: list[dict[str, Any]], models: list[str]) -> str | None:
    """PNG of pass@k vs k, one panel per direction, one line per model (matplotlib Agg)."""
    dirs = [d for d in DIRECTIONS if any(r["direction"] == d and r["metric"] == "pass@k" for r in rows)]
    if not dirs:
        return None
    from lovr_hf.card import pyplot, save_png

    cols = min(3, len(dirs))
    nrows = -(-len(dirs) // cols)
    fig, axes = pyplot().subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=100, squeeze=False)
    for ax, d in zip(axes.flat, dirs):
        for m in models:
            pts = sorted((r["k"], 100.0 * r["value"]) for r in rows
                         if r["model"] == m and r["direction"] == d and r["metric"] == "pass@k")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=_short(m, 32))
        ax.set_title(DIRECTION_NAMES.get(d, d))
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(dirs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return save_png(repo, fig, PLOT)


def _frames_label(r: dict[str, Any]) -> str:
    if r.get("uniform_frames"):
        return f"{r['uniform_frames']} uniform"
    return f"every {r['interval']}" if r.get("interval") else "-"


def render_markdown(rows: list[dict[str, Any]], models: list[str], costs: dict[str, Any],
                    plot: str | None) -> str:
    """Tables of results (one per direction, models side by side), settings and the cost report."""
    lines = ["pass@k (%) = share of queries whose gold item is among the top k by cosine similarity; "
             "MdR / MnR = median / mean rank of the gold item.", ""]
    lines += ["| model | text mode | frames | clip queries | query seed | lovr_hf |", "|---|---|---|---|---|---|"]
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        if not mine:
            continue
        r0 = mine[0]
        nq = next((r["num_queries"] for r in mine if r["direction"] == "text_to_clip"), "-")
        lines.append(f"| {_cell(m)} | {r0.get('text_mode') or '-'} | {_frames_label(r0)} | {nq} | "
                     f"{r0.get('query_seed')} | {r0.get('lovr_hf_version')} |")
    lines.append("")
    for d in DIRECTIONS:
        drows = [r for r in rows if r["direction"] == d]
        if not drows:
            continue
        ks = _shown_ks(sorted({r["k"] for r in drows if r["metric"] == "pass@k"}))
        lines += [f"### {DIRECTION_NAMES.get(d, d)}", ""]
        lines.append("| model | " + " | ".join(f"pass@{k}" for k in ks) + " | MdR | MnR | queries | candidates |")
        lines.append("|---" * (len(ks) + 5) + "|")
        for m in models:
            mine = {(r["metric"], r["k"]): r for r in drows if r["model"] == m}
            if not mine:
                continue
            any_row = next(iter(mine.values()))
            cells = [f"{100 * mine[('pass@k', k)]['value']:.1f}" if ("pass@k", k) in mine else "-" for k in ks]
            mdr, mnr = mine.get(("median_rank", 0)), mine.get(("mean_rank", 0))
            cells.append(f"{mdr['value']:g}" if mdr else "-")
            cells.append(f"{mnr['value']:.1f}" if mnr else "-")
            cells += [str(any_row["num_queries"]), str(any_row["num_candidates"])]
            lines.append(f"| {_cell(m)} | " + " | ".join(cells) + " |")
        lines.append("")
    if plot:
        lines += [f"![pass@k vs k per direction and model]({plot})", ""]
    cost_models = [m for m in models if m in costs]
    if cost_models:
        lines += ["### Cost", "",
                  "Decode (I/O) vs encode time in ms, summed over all processes; frames shared by a clip and "
                  "its video are decoded and encoded once and counted in both rows.", "",
                  "| model | part | items | frames | I/O ms | encode ms | ms / item |", "|---|---|---|---|---|---|---|"]
        for m in cost_models:
            for part in ("clips", "videos", "captions", "total"):
                c = costs[m].get(part)
                if c:
                    lines.append(f"| {_cell(m)} | {part} | {c['items']} | {c['frames']} | {c['io_ms']:.0f} | "
                                 f"{c['encode_ms']:.0f} | {c['ms_per_item']:.1f} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_results(repo: BenchmarkRepo | str, models: Sequence[str] | None = None) -> str:
    """(Re)write ``results.md`` and the plot from the ``results`` config, refresh the card; returns the markdown.

    ``models``: which models, in this order (default: every model in the config). This is ``--compare``.
    """
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    rows = repo.read(schema.RESULTS).to_list() if repo.has(schema.RESULTS) else []
    present = list(dict.fromkeys(r["model"] for r in rows))
    if models:
        unknown = [m for m in models if m not in present]
        if unknown:
            raise KeyError(f"no results for {unknown}; results hold: {present}")
        present = list(models)
    rows = [r for r in rows if r["model"] in present]
    plot = write_plot(repo, rows, present)
    md = render_markdown(rows, present, _read_costs(repo), plot)
    atomic_write_text(repo.root / RESULTS_MD, md)
    repo.refresh_card()
    return md


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
    card_stale = False
    stages = []
    if wanted & {"encode_text", "video_merge"}:
        stages += [("encode_text", st) for st in text_stages(repo, config, slug)]
    if wanted & {"encode_video", "video_merge"} and repo.has(schema.CLIPS):
        stages.append(("encode_video", video_stage(repo, config, slug)))
    for step in ("encode_text", "encode_video"):
        if step in wanted:
            run = run_stages([st for s, st in stages if s == step], repo, control, refresh_card=False)
            encoded = True
            card_stale |= run.card_stale
            if not run.complete:
                complete = False
                logger.info("%s: %s still to do %s", label, step, run.missing)
    main_rank = shard.is_main or not shard.launched
    if not main_rank:
        return []
    if "video_merge" in wanted:
        run = run_stages([st for _, st in stages], repo, control, gather_only=True, refresh_card=False)
        card_stale |= run.card_stale
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
        if card_stale:
            repo.refresh_card()
        return []
    rows = calc_pass(repo, config)
    write_results(repo, label, rows)
    render_results(repo)
    for r in rows:
        if r["metric"] == "pass@k" and r["k"] in (1, 5, 10):
            logger.info("%s %-14s pass@%-2d %.4f (%d queries)", label, r["direction"], r["k"], r["value"],
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
    rows: list[dict[str, Any]] = []
    for m in models:
        rows += evaluate_model(repo, dataclasses.replace(base, model=m), control, steps=steps)
    return rows


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--model-path", "--model_path", dest="models", action="append", default=None,
                   help="Hub id, local folder, open_clip spec or my_module:MyEmbedder (repeat for several)")
    p.add_argument("--model-name", dest="model_name", default=None, help="label in results (one model)")
    p.add_argument("--backend", default="auto", help="auto | transformers | dummy | open_clip | jina | module:Class")
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true",
                   help="allow the model's own code from the Hub (jina-clip-v2 needs it)")
    p.add_argument("--text-mode", "--text_mode", dest="text_mode", choices=TEXT_MODES, default="truncate",
                   help="long captions: truncate at the model limit (original) or average max-length chunks")
    p.add_argument("--max-text-tokens", dest="max_text_tokens", type=int, default=None)
    p.add_argument("--interval", type=int, default=None, help="sample every K frames (default 10 for CLIP, else 30)")
    p.add_argument("--num-frames", "--num_frames", dest="num_frames", type=int, default=None,
                   help="N uniform frames per clip and per video instead of --interval")
    p.add_argument("--clip-queries", "--clip_queries", dest="clip_queries", default="1000",
                   help="text->clip query captions: a count drawn with --seed, or 'all'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topk", default=None, help="k values, e.g. 1,5,10 (default 1..20 as the original)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64)
    p.add_argument("--decode-workers", dest="decode_workers", type=int, default=2)
    p.add_argument("--decode-backend", dest="decode_backend", default="auto", choices=("auto", "pyav", "decord"))
    g = p.add_argument_group("stages (original flags; none = all)")
    for step, text in (("encode_text", "embed clip/video/theme captions"),
                       ("encode_video", "embed clips and full videos (this chunk)"),
                       ("video_merge", "gather finished chunks into the repo"),
                       ("calc_pass", "score pass@k from stored embeddings")):
        g.add_argument(f"--{step}", f"--{step.replace('_', '-')}", dest=step, action="store_true", help=text)
    p.add_argument("--compare", nargs="*", default=None, metavar="MODEL",
                   help="render results of these models (default all) side by side; embeds nothing")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    control = control_from_args(args)
    repo = BenchmarkRepo(control.repo)
    if args.compare is not None:
        print(render_results(repo, args.compare or None))
        return 0
    if not args.models:
        logger.error("lovr eval: --model is required (or --compare)")
        return 2
    base = config_from_args(EvalConfig, args, model=args.models[0])
    steps = [s for s in STEPS if getattr(args, s, False)]
    try:
        rows = evaluate_models(repo, args.models, base, control, steps=steps or None)
    except (ValueError, KeyError, ImportError, FileNotFoundError) as exc:
        logger.error("lovr eval: %s", exc)
        return 2
    if control.strict:
        for m in args.models:
            cfg = schema.embeddings_config(model_slug(args.model_name or m))
            if repo.has(cfg) and any(s != schema.OK for s in repo.read_table(cfg).column(schema.STATUS).to_pylist()):
                logger.error("%s: some embeddings failed (--strict)", m)
                return 1
    if rows:
        logger.info("results written to %s (%s, %s)", repo.root, schema.RESULTS, RESULTS_MD)
    return 0
