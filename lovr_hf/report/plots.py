"""The card's result plots: pass@k vs k with 95% bands, and pass@k by slice (duration, caption length, video)
plus the text-limit truncation rates. Pure functions of ``results`` rows (matplotlib Agg)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from lovr_hf.model_labels import looks_like_path, model_label
from lovr_hf.repo import ASSETS_DIR, BenchmarkRepo, atomic_write_text
from lovr_hf.stats import slices
from lovr_hf.stats.directions import DIRECTIONS

PLOT = f"{ASSETS_DIR}/retrieval_pass_at_k.png"
SLICE_PLOT = f"{ASSETS_DIR}/retrieval_slices.png"
DIRECTION_NAMES = {
    "text_to_clip": "text → clip",
    "clip_to_text": "clip → text",
    "text_to_video": "text → video",
    "video_to_text": "video → text",
    "theme_to_clip": "theme → clip",
    "clip_to_theme": "clip → theme",
}
Entry = tuple[str, str]  # (model, protocol)
_DIGESTS = "plots.json"  # under .lovr/: digest of the data each plot was drawn from
_PLOTTED = ("model", "protocol", "slice", "direction", "metric", "k", "value", "ci_low", "ci_high", "num_queries")


#: bumped when the drawing changes, so plots of an older lovr_hf are redrawn
PLOT_STYLE = 2


def _cached(repo: BenchmarkRepo, rel: str, rows: Sequence[dict[str, Any]], entries: Sequence[Entry],
            draw: Callable[[], str | None]) -> str | None:
    """Draw only when the plotted data changed (a plot is a pure function of it; drawing takes seconds)."""
    data = json.dumps([PLOT_STYLE, list(entries), [[r.get(c) for c in _PLOTTED] for r in rows]], default=str)
    digest = hashlib.sha256(data.encode()).hexdigest()
    book_path = repo.work_root / _DIGESTS
    try:
        book = json.loads(book_path.read_text())
    except (OSError, ValueError):
        book = {}
    if book.get(rel) == digest and (repo.root / rel).is_file():
        return rel
    out = draw()
    if out is not None:
        book[rel] = digest
        atomic_write_text(book_path, json.dumps(book, sort_keys=True))
    return out


def _layout(fig: Any, rows: int) -> None:
    # fixed margins: tight_layout doubles the cost of a plot
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.16 if rows == 1 else 0.1, top=0.9 if rows == 1 else 0.94,
                        wspace=0.3, hspace=0.55)


def short(label: str, n: int = 48) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1) :]


def display_name(model: str) -> str:
    """A model as a legend or table shows it: a local path (results of an older lovr_hf) by
    :func:`lovr_hf.model_labels.model_label` (``<folder>-<content hash>``, so two folders that share a basename stay
    apart), a label, Hub id or backend name as it is."""
    return model_label(model) if looks_like_path(model) else model


def entry_label(entry: Entry, entries: Sequence[Entry], n: int = 32) -> str:
    """A model's legend label; the protocol is added whenever more than one protocol is shown."""
    several = len({p for _, p in entries}) > 1
    return short(display_name(entry[0]), n) + (f" [{entry[1]}]" if several else "")


def entry_colors(entries: Sequence[Entry]) -> dict[Entry, str]:
    """One colour per model and protocol, the same in every panel (bar calls do not share a cycle)."""
    return {e: f"C{i % 10}" for i, e in enumerate(entries)}


def slice_k(rows: Sequence[dict[str, Any]]) -> int | None:
    """The k shown in slice plots and tables: the k <= 10 at which the slices differ most.

    A k at or past the number of candidates is pass@k = 100% for every slice (the demo scores k = 1..9
    with 9 candidates), so such k are left out when a smaller one exists. Among the rest, the k with the
    widest spread of slice values (max - min over slices, models and directions) wins; ties go to the k
    closest to 10 (the usual reporting k). Without slice rows: 10 when scored, else the largest k <= 10.
    """
    passk = [r for r in rows if r["metric"] == "pass@k"]
    ks = sorted({r["k"] for r in passk})
    if not ks:
        return None
    cands = [r.get("num_candidates") for r in passk if r.get("num_candidates")]
    limit = min(cands) if cands else None
    small = [k for k in ks if k <= 10] or ks[:1]
    useful = [k for k in small if limit is None or k < limit] or small[:1]
    spread: dict[int, float] = {}
    for k in useful:
        vals = [r["value"] for r in passk if r["k"] == k and r.get("slice", "all") not in ("all", None)]
        spread[k] = (max(vals) - min(vals)) if vals else 0.0
    if not any(spread.values()):
        return 10 if 10 in useful else useful[-1]
    return max(useful, key=lambda k: (round(spread[k], 9), -abs(10 - k), -k))


def write_plot(repo: BenchmarkRepo, rows: list[dict[str, Any]], entries: Sequence[Entry]) -> str | None:
    """PNG of pass@k vs k, one panel per direction, one line (with its 95% band) per model and protocol."""
    rows = [r for r in rows if r.get("slice", "all") == "all" and r["metric"] == "pass@k"]
    dirs = [d for d in DIRECTIONS if any(r["direction"] == d for r in rows)]
    if not dirs:
        return None
    return _cached(repo, PLOT, rows, entries, lambda: _draw_plot(repo, rows, entries, dirs))


def _draw_plot(repo: BenchmarkRepo, rows: list[dict[str, Any]], entries: Sequence[Entry], dirs: list[str]) -> str:
    from lovr_hf.report.card import pyplot, save_png

    cols = min(3, len(dirs))
    nrows = -(-len(dirs) // cols)
    from matplotlib.ticker import MaxNLocator

    fig, axes = pyplot().subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=100, squeeze=False)
    colors = entry_colors(entries)
    for ax, d in zip(axes.flat, dirs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for e in entries:
            pts = sorted((r["k"], r) for r in rows if (r["model"], r["protocol"]) == e and r["direction"] == d)
            if not pts:
                continue
            ks = [k for k, _ in pts]
            (line,) = ax.plot(ks, [100.0 * r["value"] for _, r in pts], marker="o", markersize=3,
                              label=entry_label(e, entries), color=colors[e])
            if all(r.get("ci_low") is not None for _, r in pts):
                ax.fill_between(ks, [100.0 * r["ci_low"] for _, r in pts], [100.0 * r["ci_high"] for _, r in pts],
                                color=line.get_color(), alpha=0.18, linewidth=0)
        ax.set_title(DIRECTION_NAMES.get(d, d))
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%), 95% band")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(dirs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    _layout(fig, nrows)
    return save_png(repo, fig, PLOT)


def write_slice_plot(repo: BenchmarkRepo, rows: list[dict[str, Any]], entries: Sequence[Entry]) -> str | None:
    """PNG: pass@k (k of :func:`slice_k`) by clip duration and by caption length for text->clip and
    text->video, the spread of per-video pass@k for text->clip, and the truncation rate per caption kind."""
    k = slice_k(rows)
    sliced = [r for r in rows if r["metric"] == "pass@k" and r["k"] == k and r["slice"] != "all"]
    trunc = [r for r in rows if r["metric"] == "truncation_rate"]
    panels: list[tuple[str, Any]] = []
    for d in ("text_to_clip", "text_to_video"):
        for slicing in ("duration", "caption_words"):
            order = slices.bin_order(slicing, d)
            if any(r["direction"] == d and r["slice"] in order for r in sliced):
                panels.append(("bins", (d, slicing, order)))
    if any(r["direction"] == "text_to_clip" and r["slice"].startswith("video:") for r in sliced):
        panels.append(("videos", "text_to_clip"))
    if trunc:
        panels.append(("trunc", None))
    if not panels:
        return None
    return _cached(repo, SLICE_PLOT, sliced + trunc, entries, lambda: _draw_slices(repo, sliced, trunc, entries,
                                                                                  panels, k))


def _draw_slices(repo: BenchmarkRepo, sliced: list[dict[str, Any]], trunc: list[dict[str, Any]],
                 entries: Sequence[Entry], panels: list[tuple[str, Any]], k: int | None) -> str:
    from lovr_hf.report.card import pyplot, save_png

    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = pyplot().subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), dpi=100, squeeze=False)
    from matplotlib.ticker import MaxNLocator

    width = 0.8 / max(1, len(entries))
    colors = entry_colors(entries)
    for ax, (kind, spec) in zip(axes.flat, panels):
        if kind == "bins":
            d, slicing, order = spec
            shown = [s for s in order if any(r["direction"] == d and r["slice"] == s for r in sliced)]
            for j, e in enumerate(entries):
                mine = {r["slice"]: r for r in sliced if (r["model"], r["protocol"]) == e and r["direction"] == d}
                xs = [i + (j - (len(entries) - 1) / 2) * width for i, s in enumerate(shown) if s in mine]
                vals = [100 * mine[s]["value"] for s in shown if s in mine]
                err = None
                if all(mine[s].get("ci_low") is not None for s in shown if s in mine):
                    err = [[100 * (mine[s]["value"] - mine[s]["ci_low"]) for s in shown if s in mine],
                           [100 * (mine[s]["ci_high"] - mine[s]["value"]) for s in shown if s in mine]]
                ax.bar(xs, vals, width=width, yerr=err, capsize=2, label=entry_label(e, entries), color=colors[e])
            ax.set_xticks(range(len(shown)))
            ax.set_xticklabels([s.split(":", 1)[1] for s in shown], rotation=35, fontsize=7)
            what = "duration" if slicing == "duration" else "caption words"
            ax.set_title(f"{DIRECTION_NAMES[d]}: pass@{k} by {what}", fontsize=9)
            ax.set_ylabel(f"pass@{k} (%)")
            ax.set_ylim(0, 105)
        elif kind == "videos":
            for e in entries:
                vals = sorted(100 * r["value"] for r in sliced if (r["model"], r["protocol"]) == e
                              and r["direction"] == spec and r["slice"].startswith("video:"))
                if vals:
                    ax.plot(range(1, len(vals) + 1), vals, marker=".", label=entry_label(e, entries),
                            color=colors[e])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{DIRECTION_NAMES[spec]}: pass@{k} per video (sorted)", fontsize=9)
            ax.set_xlabel("videos")
            ax.set_ylabel(f"pass@{k} (%)")
            ax.set_ylim(-3, 103)
        else:
            kinds = sorted({r["direction"] for r in trunc})
            for j, e in enumerate(entries):
                mine = {r["direction"]: r for r in trunc if (r["model"], r["protocol"]) == e}
                xs = [i + (j - (len(entries) - 1) / 2) * width for i, kd in enumerate(kinds) if kd in mine]
                ax.bar(xs, [100 * mine[kd]["value"] for kd in kinds if kd in mine], width=width,
                       label=entry_label(e, entries), color=colors[e])
            ax.set_xticks(range(len(kinds)))
            ax.set_xticklabels([kd.replace("_", " ") for kd in kinds], fontsize=8)
            ax.set_title("caption tokens past the text limit", fontsize=9)
            ax.set_ylabel("truncation rate (%)")
            ax.set_ylim(0, 105)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _layout(fig, nrows)
    return save_png(repo, fig, SLICE_PLOT)
