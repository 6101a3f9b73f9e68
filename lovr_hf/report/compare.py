"""``lovr eval --compare A B``: the difference between two models on the *same* queries.

Why: two independent 95% intervals that overlap do not mean "no difference" -- the queries are shared, and
most of the noise is which queries are easy. The paired comparison pairs each query's rank under A with its
rank under B (from the ``rankings-<model>`` configs), so the interval is that of the difference itself.
Per protocol, direction and k: A, B, A - B (points) with its paired-bootstrap interval (:mod:`lovr_hf.stats.bootstrap`),
the discordant counts (hit for A only / B only) and McNemar's exact p-value; for median and mean rank the
difference with its interval. Only queries scored for both models are paired (said so when they differ).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.evaluation.models import model_slug, protocol_slug
from lovr_hf.evaluation.results import read_results
from lovr_hf.failures import UnknownName
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.plots import DIRECTION_NAMES, short
from lovr_hf.stats.bootstrap import DEFAULT_ALPHA, Bootstrap, paired_comparison
from lovr_hf.stats.directions import DIRECTIONS
from lovr_hf.stats.rankings import read_rankings

logger = logging.getLogger(__name__)


def _keyed(rows: list[dict[str, Any]]) -> dict[str, dict[tuple[str, int], int]]:
    """direction -> {(query id, occurrence): gold rank}: occurrences keep repeated query ids apart."""
    out: dict[str, dict[tuple[str, int], int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for r in sorted(rows, key=lambda r: (r["direction"], r["query_index"])):
        n = seen.get((r["direction"], r["query_id"]), 0)
        seen[(r["direction"], r["query_id"])] = n + 1
        out.setdefault(r["direction"], {})[(r["query_id"], n)] = int(r["gold_rank"])
    return out


def paired(repo: BenchmarkRepo | str, model_a: str, model_b: str, *, alpha: float = DEFAULT_ALPHA,
           ) -> list[dict[str, Any]]:
    """Paired comparison rows of ``model_a`` minus ``model_b`` for every protocol both were scored under."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    if model_a == model_b:
        raise ValueError("--compare A B needs two different models")
    results = read_results(repo)
    res = {m: [r for r in results if r["model"] == m and r["slice"] == "all"] for m in (model_a, model_b)}
    for m, rs in res.items():
        if not rs:
            raise UnknownName(f"no results for {m!r}")
    protocols = sorted({r["protocol"] for r in res[model_a]} & {r["protocol"] for r in res[model_b]},
                       key=lambda p: (p != "lovr", p))
    if not protocols:
        raise ValueError(f"{model_a!r} and {model_b!r} share no protocol: nothing to pair")
    out: list[dict[str, Any]] = []
    for protocol in protocols:
        ra_rows = read_rankings(repo, protocol_slug(model_slug(model_a), protocol), protocol)
        rb_rows = read_rankings(repo, protocol_slug(model_slug(model_b), protocol), protocol)
        if not ra_rows or not rb_rows:
            missing = model_a if not ra_rows else model_b
            raise FileNotFoundError(f"{missing!r} has no rankings for protocol {protocol!r}: re-score it "
                                    "(lovr eval --calc_pass) to write rankings-<model>")
        ka, kb = _keyed(ra_rows), _keyed(rb_rows)
        mine_a = [r for r in res[model_a] if r["protocol"] == protocol]
        mine_b = [r for r in res[model_b] if r["protocol"] == protocol]
        r0 = next((r for r in mine_a if r["metric"] == "pass@k"), mine_a[0])
        boot = Bootstrap(int(r0.get("bootstrap_resamples") or 0), int(r0.get("bootstrap_seed") or 0),
                         float(r0.get("ci_level") or 0.95))
        for d in DIRECTIONS:
            if d not in ka or d not in kb:
                continue
            ks = sorted({r["k"] for r in mine_a if r["direction"] == d and r["metric"] == "pass@k"}
                        & {r["k"] for r in mine_b if r["direction"] == d and r["metric"] == "pass@k"})
            common = [q for q in ka[d] if q in kb[d]]
            if not common or not ks:
                continue
            if len(common) != len(ka[d]) or len(common) != len(kb[d]):
                logger.warning("%s %s: %d queries scored for both (%d for %s, %d for %s): pairing those",
                               protocol, d, len(common), len(ka[d]), model_a, len(kb[d]), model_b)
            cand = {m: next((r["num_candidates"] for r in rs if r["direction"] == d), None)
                    for m, rs in ((model_a, mine_a), (model_b, mine_b))}
            if cand[model_a] != cand[model_b]:
                logger.warning("%s %s: different candidate counts (%s): the difference includes the pool",
                               protocol, d, cand)
            ranks_a = np.array([ka[d][q] for q in common], dtype=np.int64)
            ranks_b = np.array([kb[d][q] for q in common], dtype=np.int64)
            for row in paired_comparison(ranks_a, ranks_b, ks, boot, d, "all", alpha=alpha):
                out.append({"model_a": model_a, "model_b": model_b, "protocol": protocol, "direction": d,
                            **row, "num_queries_a": len(ka[d]), "num_queries_b": len(kb[d]),
                            "bootstrap_resamples": boot.resamples, "bootstrap_seed": boot.seed,
                            "ci_level": boot.level, "alpha": alpha})
    return out


def render_paired(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one table per protocol and direction."""
    if not rows:
        return "No paired comparison (no common directions).\n"
    a, b = rows[0]["model_a"], rows[0]["model_b"]
    r0 = rows[0]
    lines = [f"## Paired comparison: A = {short(a)}, B = {short(b)}", "",
             f"Same queries for both models. Δ = A − B in points; {100 * r0['ci_level']:.0f}% paired-bootstrap "
             f"interval ({r0['bootstrap_resamples']} resamples, seed {r0['bootstrap_seed']}); McNemar = exact "
             f"two-sided test on the queries only one model hits at k; * = significant at α = {r0['alpha']:g}.",
             ""]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["protocol"], r["direction"]), []).append(r)
    for (protocol, d), rs in groups.items():
        ks = sorted({r["k"] for r in rs if r["metric"] == "pass@k"})
        if len(ks) > 6:  # the table shows the usual cut-offs; the returned rows hold every k
            shown = {k for k in (1, 5, 10, 20, 50, 100) if k in ks} or set(ks[:6])
            rs = [r for r in rs if r["metric"] != "pass@k" or r["k"] in shown]
        n = rs[0]["num_queries"]
        note = "" if n == rs[0]["num_queries_a"] == rs[0]["num_queries_b"] else \
            f" ({rs[0]['num_queries_a']} / {rs[0]['num_queries_b']} scored for A / B)"
        lines += [f"### {DIRECTION_NAMES.get(d, d)} (protocol {protocol}, {n} paired queries{note})", "",
                  "| metric | A | B | Δ | 95% interval | A only | B only | McNemar p |", "|---|---|---|---|---|---|---|---|"]
        for r in rs:
            if r["metric"] == "pass@k":
                name, scale, fmt = f"pass@{r['k']}", 100.0, ".1f"
            else:
                name, scale, fmt = ("MdR" if r["metric"] == "median_rank" else "MnR"), 1.0, ".2f"
            ci = "-" if r["ci_low"] is None else f"[{format(scale * r['ci_low'], fmt)}, {format(scale * r['ci_high'], fmt)}]"
            p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
            star = " *" if r["significant"] else ""
            lines.append(f"| {name} | {format(scale * r['value_a'], fmt)} | {format(scale * r['value_b'], fmt)} | "
                         f"{format(scale * r['diff'], '+' + fmt)}{star} | {ci} | "
                         f"{'-' if r['a_only'] is None else r['a_only']} | {'-' if r['b_only'] is None else r['b_only']}"
                         f" | {p} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

