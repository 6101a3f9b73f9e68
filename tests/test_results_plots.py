"""Results plots and tables a reader can trust (issue #24): the slice k discriminates, integer k ticks,
one colour per model in every panel, short legend labels, one number format per interval, visible
histogram bar edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from lovr_hf.evaluation import results
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report import card, results_page
from lovr_hf.report import plots as results_plots
from lovr_hf.stats import slices

A = "/tmp/somewhere/deep/models/tiny-clip"
B = "describer"


def _row(model: str, k: int, value: float, slice_: str = "all", direction: str = "text_to_clip",
         metric: str = "pass@k", lo: float | None = None, hi: float | None = None) -> dict:
    return {"model": model, "protocol": "lovr", "slice": slice_, "direction": direction, "metric": metric, "k": k,
            "value": value, "ci_low": lo, "ci_high": hi, "num_queries": 9, "num_candidates": 9}


def _demo_like_rows() -> list[dict]:
    """9 candidates, k = 1..9: at k = 9 every slice is 100%; at k = 2 the two duration bins differ."""
    bins = slices.bin_order("duration", "text_to_clip")[:2]
    rows = []
    for m in (A, B):
        for k in range(1, 10):
            rows.append(_row(m, k, min(1.0, k / 9)))
            for i, b in enumerate(bins):
                rows.append(_row(m, k, 1.0 if k >= 9 else min(1.0, k / (4 + 4 * i)), slice_=b))
    rows.append(_row(B, 0, 0.2, direction="clip_caption", metric="truncation_rate"))
    rows.append(_row(B, 0, 0.8, direction="video_caption", metric="truncation_rate"))
    return rows


def test_slice_k_is_one_where_slices_differ_not_the_candidate_count() -> None:
    rows = _demo_like_rows()
    k = results_plots.slice_k(rows)
    assert k is not None and k < 9  # before: 9, where every bar is 100%
    vals = [r["value"] for r in rows if r["k"] == k and r["slice"] != "all"]
    assert max(vals) - min(vals) > 0
    # on a large gallery, k = 10 (the usual reporting k) wins a tie in spread
    bins = slices.bin_order("duration", "text_to_clip")[:2]
    big = [dict(_row(A, k, v, slice_=b), num_candidates=1000) for k in (5, 10) for b, v in zip(bins, (0.2, 0.6))]
    assert results_plots.slice_k(big) == 10


def test_interval_cells_share_one_number_format() -> None:
    assert results_page._rank({"value": 2.0, "ci_low": 2.0, "ci_high": 7.025}, "g") == "2.0 [2.0, 7.0]"
    assert results_page._rank({"value": 4.0, "ci_low": 2.0, "ci_high": 7.0}, "g") == "4 [2, 7]"
    assert results_page._rank({"value": 4.25, "ci_low": None}, ".1f") == "4.2"


def test_legend_labels_fit_and_name_the_folder(tmp_path: Path) -> None:
    label = results_plots.entry_label((A, "lovr"), [(A, "lovr"), (B, "lovr")])
    assert label.startswith("tiny-clip-") and "/" not in label
    # two folders with one basename: two legend entries (before: both "tiny-clip")
    one, two = tmp_path / "a" / "tiny-clip", tmp_path / "b" / "tiny-clip"
    for folder, text in ((one, "{}"), (two, '{"other": 1}')):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(text)
    entries = [(str(one), "lovr"), (str(two), "lovr")]
    names = {results_plots.entry_label(e, entries) for e in entries}
    assert len(names) == 2 and all(n.startswith("tiny-clip-") for n in names)
    assert results_plots.display_name("tiny-clip-1a2b3c4d") == "tiny-clip-1a2b3c4d"  # a label stays a label
    assert results_plots.display_name("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert results_plots.display_name("describer") == "describer"


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    drawn: list = []

    def keep(repo, fig, rel):
        drawn.append(fig)
        return rel

    monkeypatch.setattr(card, "save_png", keep)
    return drawn


def test_one_colour_per_model_in_every_panel_and_integer_k_ticks(tmp_path: Path, figures: list) -> None:
    from matplotlib.colors import to_hex

    repo = BenchmarkRepo(tmp_path / "repo")
    rows = _demo_like_rows()
    entries = [(A, "lovr"), (B, "lovr")]
    results_plots.write_slice_plot(repo, rows, entries)
    results_plots.write_plot(repo, rows, entries)
    slice_fig, plot_fig = figures
    colours: dict[str, set[str]] = {}
    for ax in slice_fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        for h, label in zip(handles, labels):
            if hasattr(h, "patches"):  # bars (a model without rows in a panel has an empty container)
                colours.setdefault(label, set()).update(to_hex(p.get_facecolor()) for p in h.patches)
            else:
                colours.setdefault(label, set()).add(to_hex(h.get_color()))
    a_name = results_plots.display_name(A)
    assert set(colours) == {a_name, "describer"}
    assert all(len(c) == 1 for c in colours.values()), colours  # the same colour in every panel
    assert colours[a_name] != colours["describer"]
    plot_fig.canvas.draw()
    for ax in plot_fig.axes:
        if ax.get_visible() and ax.lines:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_histogram_bars_have_visible_edges(tmp_path: Path, figures: list) -> None:
    from matplotlib.colors import to_rgba

    card.write_clip_histogram(BenchmarkRepo(tmp_path / "repo"), [5.0, 5.0, 6.0, 6.0, 7.5, 8.0, 9.0, 12.0])
    (fig,) = figures
    bars = fig.axes[0].patches
    # an edge that is drawn (not transparent: matplotlib's default for hist bars) and unlike the fill
    assert bars and all(b.get_linewidth() > 0 and to_rgba(b.get_edgecolor())[3] > 0
                        and to_rgba(b.get_edgecolor()) != to_rgba(b.get_facecolor()) for b in bars)


def test_cost_table_shows_model_loading_apart_from_encoding() -> None:
    part = {"items": 9, "frames": 189, "io_ms": 1099.0, "encode_ms": 736.0, "ms_per_item": 203.8}
    costs = {A: {"clips": part, "captions": dict(part, frames=0, io_ms=0.0, encode_ms=410.0, load_ms=5200.0)}}
    md = "\n".join(results_page._cost_table([A], costs))
    assert "| load ms |" in md and f"| {results_plots.display_name(A)} | captions | 9 | 0 | 0 | 410 | 5200 |" in md
    assert A not in md  # the absolute path of a local model never reaches the card
    without = "\n".join(results_page._cost_table([A], {A: {"clips": part}}))
    assert "load ms" not in without


def test_eval_cost_json_never_holds_a_local_path(tmp_path: Path) -> None:
    from lovr_hf.tiny import build_tiny_clip

    folder = build_tiny_clip(tmp_path / "models" / "tiny-clip")
    repo = BenchmarkRepo(tmp_path / "repo")
    part = {"items": 1, "frames": 1, "io_ms": 1.0, "encode_ms": 2.0, "ms_per_item": 3.0}
    results.write_cost(repo, folder, {"clips": part})
    text = (repo.root / results.COST_JSON).read_text()
    assert str(tmp_path) not in text and '"tiny-clip-' in text  # before: keyed by the absolute folder path
    assert f"| {model_label(folder)} | clips | 1 | 1 | 1 | 2 | 3.0 |" in "\n".join(results_page._cost_table([folder], results.read_costs(repo)))
