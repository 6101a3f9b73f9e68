"""The results page: ``results.md`` (shown in the dataset card) and its plots, rendered from the stored
``results`` config and cost report (:mod:`lovr_hf.evaluation.results`); ``lovr eval --compare`` is
:func:`render_results`.

Tables never mix protocols silently: every table row names its protocol, and a model scored under both
``lovr`` and ``original`` gets one row per protocol. Intervals are the seeded bootstrap of
:mod:`lovr_hf.stats.bootstrap`; the "How to reproduce" block gives the exact commands behind every row.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lovr_hf.evaluation.results import cost_key, read_costs, read_results
from lovr_hf.failures import UnknownName
from lovr_hf.repo import BenchmarkRepo, atomic_write_text
from lovr_hf.report.plots import (
    DIRECTION_NAMES,
    Entry,
    display_name,
    short,
    slice_k,
    write_plot,
    write_slice_plot,
)
from lovr_hf.stats import slices
from lovr_hf.stats.directions import DIRECTIONS

RESULTS_MD = "results.md"
_COMMIT_LEN = 40


def _cell(label: str) -> str:
    return short(label).replace("|", "\\|")


def _shown_ks(ks: list[int]) -> list[int]:
    if len(ks) <= 6:
        return ks
    return [k for k in (1, 5, 10, 20, 50, 100) if k in ks] or ks[:6]


def _frames_label(r: dict[str, Any]) -> str:
    if r.get("uniform_frames"):
        return f"{r['uniform_frames']} uniform"
    return f"every {r['interval']}" if r.get("interval") else "-"


def _pct(r: dict[str, Any]) -> str:
    v = f"{100 * r['value']:.1f}"
    if r.get("ci_low") is None:
        return v
    return f"{v} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def _rank(r: dict[str, Any] | None, fmt: str) -> str:
    """A rank and its interval in one format: integers when all three are whole (a median of ranks usually
    is), else one decimal for all three (never "2 [2, 7.025]")."""
    if r is None:
        return "-"
    nums = [r["value"]] + ([r["ci_low"], r["ci_high"]] if r.get("ci_low") is not None else [])
    if fmt == "g":
        fmt = ".0f" if all(float(x).is_integer() for x in nums) else ".1f"
    v, *ci = (format(x, fmt) for x in nums)
    return f"{v} [{ci[0]}, {ci[1]}]" if ci else v


def _name(e: Entry, oracle: set[Entry]) -> str:
    return _cell(e[0]) + (" ⚠ oracle" if e in oracle else "")


def _queries(r: dict[str, Any]) -> str:
    total = r.get("num_queries_total")
    return f"{r['num_queries']} / {total}" if total is not None and total != r["num_queries"] else str(r["num_queries"])


def _revision(r: dict[str, Any]) -> str:
    rev = r.get("model_revision") or "-"
    return rev[:12] if len(rev) == _COMMIT_LEN else rev


def reproduce_command(rows: Sequence[dict[str, Any]], repo_name: str) -> str:
    """The ``lovr eval`` command that recomputes one (model, protocol)'s rows (embedding first if needed):
    the settings of :func:`lovr_hf.evaluation.scoring.config_from_rows`, with a Hub revision pinned to its commit."""
    from lovr_hf.evaluation.models import resolve_backend
    from lovr_hf.evaluation.scoring import EvalConfig, config_from_rows

    c = config_from_rows(rows)
    default = EvalConfig()
    r0 = next((r for r in rows if r["metric"] == "pass@k"), rows[0])
    rev = r0.get("model_revision") or ""
    pinned = rev if len(rev) == _COMMIT_LEN and all(ch in "0123456789abcdef" for ch in rev) else c.revision
    # a local folder is named by its label only (``<folder>-<content hash>``): a placeholder says so; the
    # same files anywhere get the same label, so the rerun's rows replace these
    local = rev.startswith("sha256:") and not Path(c.model).expanduser().exists()
    model = f"<folder {c.model}>" if local else c.model
    parts = ["lovr eval", f"--repo {shlex.quote(repo_name)}", f"--model {shlex.quote(model)}"]
    if c.model_name:
        parts.append(f"--model-name {shlex.quote(c.model_name)}")
    if c.backend != resolve_backend(c.model, "auto"):
        parts.append(f"--backend {shlex.quote(c.backend)}")
    if pinned:
        parts.append(f"--revision {pinned}")
    if c.dtype != default.dtype:
        parts.append(f"--dtype {c.dtype}")
    if c.max_text_tokens:
        parts.append(f"--max-text-tokens {c.max_text_tokens}")
    for k, v in sorted(c.backend_options.items()):
        parts.append(f"--backend-option {shlex.quote(f'{k}={v if isinstance(v, str) else json.dumps(v)}')}")
    parts.append(f"--protocol {c.protocol}")
    if "," not in c.text_mode:
        parts.append(f"--text-mode {c.text_mode}")
    parts.append(f"--num-frames {c.num_frames}" if c.num_frames else f"--interval {c.interval}" if c.interval else "")
    if c.clip_queries != default.clip_queries:
        parts.append(f"--clip-queries {c.clip_queries}")
    parts.append(f"--seed {c.seed}")
    if c.topk and c.topk != ",".join(map(str, range(1, 21))):
        parts.append(f"--topk {c.topk}")
    if c.exclude_needs_review:
        parts.append("--exclude-needs-review")
    parts.append(f"--bootstrap {c.bootstrap} --bootstrap-seed {c.bootstrap_seed}")
    return " ".join(p for p in parts if p)


def _settings(rows: list[dict[str, Any]], entries: list[Entry], oracle: set[Entry]) -> list[str]:
    lines = ["| model | protocol | text mode | frames | clip queries | query seed | revision | lovr_hf |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        mine = [r for r in rows if (r["model"], r["protocol"]) == e]
        r0 = next((r for r in mine if r["metric"] == "pass@k"), mine[0])
        t2c = next((r for r in mine if r["direction"] == "text_to_clip" and r["slice"] == "all"), None)
        nq = f"{_queries(t2c)} ({r0.get('query_set') or '-'})" if t2c else "-"
        lines.append(f"| {_name(e, oracle)} | {e[1]} | {r0.get('text_mode') or '-'} | {_frames_label(r0)} | {nq} | "
                     f"{r0.get('query_seed')} | {_revision(r0)} | {r0.get('lovr_hf_version')} |")
    return lines + [""]


def _direction_tables(rows: list[dict[str, Any]], entries: list[Entry], oracle: set[Entry]) -> list[str]:
    lines: list[str] = []
    for d in DIRECTIONS:
        drows = [r for r in rows if r["direction"] == d and r["slice"] == "all"]
        if not drows:
            continue
        ks = _shown_ks(sorted({r["k"] for r in drows if r["metric"] == "pass@k"}))
        lines += [f"### {DIRECTION_NAMES.get(d, d)}", ""]
        lines.append("| model | protocol | " + " | ".join(f"pass@{k}" for k in ks) +
                     " | MdR | MnR | queries | candidates |")
        lines.append("|---" * (len(ks) + 6) + "|")
        for e in entries:
            mine = {(r["metric"], r["k"]): r for r in drows if (r["model"], r["protocol"]) == e}
            if not mine:
                continue
            any_row = next(iter(mine.values()))
            cells = [_pct(mine[("pass@k", k)]) if ("pass@k", k) in mine else "-" for k in ks]
            cells.append(_rank(mine.get(("median_rank", 0)), "g"))
            cells.append(_rank(mine.get(("mean_rank", 0)), ".1f"))
            cand_total = any_row.get("num_candidates_total")
            cands = str(any_row["num_candidates"])
            if cand_total is not None and cand_total != any_row["num_candidates"]:
                cands += f" / {cand_total}"
            cells += [_queries(any_row), cands]
            lines.append(f"| {_name(e, oracle)} | {e[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _slice_tables(rows: list[dict[str, Any]], entries: list[Entry], plot: str | None) -> list[str]:
    k = slice_k(rows)
    sliced = [r for r in rows if r["metric"] == "pass@k" and r["k"] == k and r["slice"] != "all"]
    if not sliced:
        return []
    lines = ["### Slices", "",
             f"pass@{k} (%) by slice of the queries, with the number of queries; bins are documented in "
             "`lovr_hf/stats/slices.py` (docs/statistics.md). Slices of one kind partition the scored queries: "
             "weighted by their query counts they add up to the overall value.", ""]
    for d in ("text_to_clip", "clip_to_text", "text_to_video", "video_to_text"):
        for slicing in ("duration", "caption_words"):
            order = [s for s in slices.bin_order(slicing, d) if any(r["direction"] == d and r["slice"] == s
                                                                    for r in sliced)]
            if not order:
                continue
            lines += [f"{DIRECTION_NAMES[d]} by {'duration' if slicing == 'duration' else 'caption words'}:", "",
                      "| model | protocol | " + " | ".join(s.split(":", 1)[1] for s in order) + " |",
                      "|---|---" + "|---" * len(order) + "|"]
            for e in entries:
                mine = {r["slice"]: r for r in sliced if (r["model"], r["protocol"]) == e and r["direction"] == d}
                if mine:
                    cells = [f"{100 * mine[s]['value']:.1f} (n={mine[s]['num_queries']})" if s in mine else "-"
                             for s in order]
                    lines.append(f"| {_cell(e[0])} | {e[1]} | " + " | ".join(cells) + " |")
            lines.append("")
    per_video = [r for r in sliced if r["direction"] == "text_to_clip" and r["slice"].startswith("video:")]
    if per_video:
        lines += [f"text → clip pass@{k} per source video (`video:<id>` rows of the results config):", "",
                  "| model | protocol | videos | min | median | max |", "|---|---|---|---|---|---|"]
        for e in entries:
            vals = sorted(r["value"] for r in per_video if (r["model"], r["protocol"]) == e)
            if vals:
                med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
                lines.append(f"| {_cell(e[0])} | {e[1]} | {len(vals)} | {100 * vals[0]:.1f} | {100 * med:.1f} | "
                             f"{100 * vals[-1]:.1f} |")
        lines.append("")
    if plot:
        lines += [f"![pass@k by slice]({plot})", ""]
    return lines


def _truncation_table(rows: list[dict[str, Any]], entries: list[Entry]) -> list[str]:
    trunc = [r for r in rows if r["metric"] in ("truncation_rate", "truncated_captions")]
    if not trunc:
        return []
    lines = ["### Text limit", "",
             "Share of caption tokens past each model's text limit, and of captions that exceed it: cut under "
             "`--text-mode truncate` (the original), embedded in further chunks under `chunk-mean`.", "",
             "| model | protocol | text mode | caption kind | limit (tokens) | tokens past the limit | "
             "captions past the limit |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        mine = {(r["direction"], r["metric"]): r for r in trunc if (r["model"], r["protocol"]) == e}
        for kind in ("clip_caption", "video_caption", "theme_caption"):
            rate, caps = mine.get((kind, "truncation_rate")), mine.get((kind, "truncated_captions"))
            if rate and caps:
                lines.append(f"| {_cell(e[0])} | {e[1]} | {rate.get('text_mode') or '-'} | {kind} | "
                             f"{rate.get('text_limit') or 'none'} | {100 * rate['value']:.1f}% | "
                             f"{100 * caps['value']:.1f}% of {caps['num_queries']} |")
    return lines + [""]


def _availability_table(rows: list[dict[str, Any]], entries: list[Entry]) -> list[str]:
    alls = [r for r in rows if r["slice"] == "all" and r["metric"] == "mean_rank"]
    shown = [r for r in alls if r.get("num_unavailable") or r.get("num_needs_review")
             or json.loads(r.get("left_out") or "{}")]
    if not shown:
        return []
    lines = ["### Queries scored and left out", "",
             "Per direction: queries in the score / queries the direction defines; `needs_review` captions are "
             "included and flagged (`--exclude-needs-review` leaves them out); unavailable = own or gold "
             "embedding missing (protocol `lovr`: left out of the score; `original`: scored as misses).", "",
             "| model | protocol | direction | scored | defined | unavailable | needs_review (flagged) | left out |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        for r in (r for r in shown if (r["model"], r["protocol"]) == e):
            left = json.loads(r.get("left_out") or "{}")
            why = ", ".join(f"{k}: {v}" for k, v in left.items()) or "-"
            lines.append(f"| {_cell(e[0])} | {e[1]} | {DIRECTION_NAMES.get(r['direction'], r['direction'])} | "
                         f"{r['num_queries']} | {r.get('num_queries_total', '-')} | {r.get('num_unavailable') or 0}"
                         f" | {r.get('num_needs_review') or 0} | {why} |")
    return lines + [""]


def _cost_table(models: list[str], costs: dict[str, Any]) -> list[str]:
    """Decode, encode and (when recorded) model-load time per part: loading a model is not encoding."""
    costs = {m: costs.get(cost_key(m)) or costs.get(m) for m in models}
    cost_models = [m for m in models if costs[m]]
    if not cost_models:
        return []
    load = any("load_ms" in (costs[m].get(part) or {}) for m in cost_models for part in costs[m])
    lines = ["### Cost", "",
             "Decode (I/O) vs encode time in ms, summed over all processes; frames shared by a clip and "
             "its video are decoded and encoded once and counted in both rows."
             + (" Model loading is its own column, not part of any encode time." if load else ""), "",
             "| model | part | items | frames | I/O ms | encode ms |" + (" load ms |" if load else "") + " ms / item |",
             "|---|---|---|---|---|---|" + ("---|" if load else "") + "---|"]
    for m in cost_models:
        for part in ("clips", "videos", "captions", "total"):
            c = costs[m].get(part)
            if c:
                lines.append(f"| {_cell(display_name(m))} | {part} | {c['items']} | {c['frames']} | {c['io_ms']:.0f} | "
                             f"{c['encode_ms']:.0f} |" + (f" {c.get('load_ms', 0.0):.0f} |" if load else "")
                             + f" {c['ms_per_item']:.1f} |")
    return lines + [""]


def _reproduce(rows: list[dict[str, Any]], entries: list[Entry], repo_name: str) -> list[str]:
    lines = ["### How to reproduce this table", "",
             "Each model's rows come from the command below (it embeds what is missing, then scores; "
             "`--calc_pass` scores the stored embeddings only). `lovr eval --verify` recomputes every row from "
             "the stored embeddings and the `rankings-<model>` configs and fails on any difference.", "", "```bash"]
    for e in entries:
        lines.append(reproduce_command([r for r in rows if (r["model"], r["protocol"]) == e], repo_name))
    lines += [f"lovr eval --repo {shlex.quote(repo_name)} --verify", "```", ""]
    fps = sorted({r.get("dataset_fingerprint") for r in rows if r.get("dataset_fingerprint")})
    if fps:
        lines += [f"Dataset fingerprint: `{'`, `'.join(fps)}`" + (" (several: rows were scored on different data)"
                                                                   if len(fps) > 1 else ""), ""]
    vers = {(r.get("lovr_hf_version"), r.get("torch_version"), r.get("transformers_version"), r.get("numpy_version"))
            for r in rows}
    for v in sorted(vers, key=str):
        lines.append(f"- software: lovr_hf {v[0]}, torch {v[1]}, transformers {v[2]}, numpy {v[3]}")
    return lines + [""]


def entries_of(rows: list[dict[str, Any]], models: Sequence[str]) -> list[Entry]:
    """(model, protocol) pairs in model order, protocol ``lovr`` first."""
    out: list[Entry] = []
    for m in models:
        protos = sorted({r["protocol"] for r in rows if r["model"] == m}, key=lambda p: (p != "lovr", p or ""))
        out += [(m, p) for p in protos]
    return out


def render_markdown(rows: list[dict[str, Any]], models: list[str], costs: dict[str, Any],
                    plot: str | None, slice_plot: str | None = None, repo_name: str = "lovr") -> str:
    """Settings, one table per direction (models and protocols side by side, 95% intervals), slices, text
    limit, queries left out, cost, and how to reproduce it all."""
    entries = entries_of(rows, models)
    oracle = {(r["model"], r["protocol"]) for r in rows if r.get("oracle")}
    lines = ["pass@k (%) = share of queries whose gold item is among the top k by cosine similarity; "
             "MdR / MnR = median / mean rank of the gold item. Brackets: 95% interval (seeded bootstrap over "
             "the queries, docs/statistics.md); `lovr eval --compare A B` tests the difference of two models "
             "on the same queries.", ""]
    if not entries:
        return "\n".join(lines).rstrip() + "\n"
    lines += _settings(rows, entries, oracle)
    if oracle:
        lines += ["⚠ oracle: the visual embeddings used an oracle frame choice (the frame most similar to the gold "
                  "caption, as the original MM-Embed script did): not a retrieval result; compare with care.", ""]
    lines += _direction_tables(rows, entries, oracle)
    if plot:
        lines += [f"![pass@k vs k per direction and model]({plot})", ""]
    lines += _slice_tables(rows, entries, slice_plot)
    lines += _truncation_table(rows, entries)
    lines += _availability_table(rows, entries)
    lines += _cost_table(models, costs)
    lines += _reproduce(rows, entries, repo_name)
    return "\n".join(lines).rstrip() + "\n"


def repo_arg(root: Path) -> str:
    """``--repo`` as the reader of the card would type it: the path from the working directory when the
    repo is below it (``lovr_demo/lovr`` after ``lovr demo``), else the folder's name (never an absolute
    path: cards are published)."""
    try:
        rel = Path(root).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(root).name
    return str(rel) if str(rel) != "." else "."


def render_results(repo: BenchmarkRepo | str, models: Sequence[str] | None = None) -> str:
    """(Re)write ``results.md`` and the plots from the ``results`` config, refresh the card; returns the markdown.

    ``models``: which models, in this order (default: every model in the config). This is ``--compare``.
    """
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    rows = read_results(repo)
    for r in rows:  # rows of an older lovr_hf: whole-direction rows of the default protocol
        r["slice"] = r.get("slice") or "all"
        r["protocol"] = r.get("protocol") or "lovr"
    present = list(dict.fromkeys(r["model"] for r in rows))
    if models:
        unknown = [m for m in models if m not in present]
        if unknown:
            raise UnknownName(f"no results for {unknown}; results hold: {present}")
        present = list(models)
    rows = [r for r in rows if r["model"] in present]
    entries = entries_of(rows, present)
    plot = write_plot(repo, rows, entries)
    slice_plot = write_slice_plot(repo, rows, entries)
    md = render_markdown(rows, present, read_costs(repo), plot, slice_plot, repo_arg(repo.root))
    atomic_write_text(repo.root / RESULTS_MD, md)
    return md
