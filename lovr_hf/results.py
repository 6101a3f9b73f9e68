"""Results of ``lovr eval``: the ``results`` config, ``results.md`` (shown in the card), the pass@k plot and
the embedding cost report. Pure rendering from what the repo holds: ``--compare`` is :func:`render_results`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.repo import ASSETS_DIR, BenchmarkRepo, atomic_write_text
from lovr_hf.retrieval import DIRECTIONS

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


