"""``lovr eval --verify``: recompute every results row from the stored embeddings and rankings; fail on any
difference.

For each (model, protocol) in the ``results`` config, with the settings recorded on its rows:

1. **from the embeddings**: score again (:func:`lovr_hf.evaluation.scoring.score`: the same query sets, ranks, top-20
   lists, intervals, slices, availability counts, text-limit rows and provenance) and compare with the stored
   ``rankings-<model>`` rows (ids, ranks and attributes exactly; float32 scores to 1e-6) and the stored
   ``results`` rows (every column; the software versions are reported as notes, not differences);
2. **from the rankings alone**: recompute every pass@k / median / mean rank row, interval and slice from the
   stored ``rankings-<model>`` rows (:func:`lovr_hf.stats.rankings.metric_rows`) and compare with ``results``.

So an altered embedding value (the ``embeddings_fingerprint`` and usually scores change), edited captions
(``dataset_fingerprint``), a changed model folder (``model_revision``), an edited results row or a ranking
that does not imply its row all fail. Text-limit rows are recounted with the recorded limit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from lovr_hf import schema
from lovr_hf.evaluation.models import model_slug, protocol_slug
from lovr_hf.evaluation.results import read_results
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stats.bootstrap import Bootstrap
from lovr_hf.stats.rankings import metric_rows, read_rankings, scored_directions

logger = logging.getLogger(__name__)

SCORE_TOL = 1e-6
_NOTE_ONLY = ("lovr_hf_version", "torch_version", "transformers_version", "numpy_version")
_SHOWN = 12  # differences listed per (model, protocol); the rest are counted


@dataclasses.dataclass
class VerifyReport:
    checked: list[str] = dataclasses.field(default_factory=list)
    differences: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def render(self) -> str:
        lines = [f"checked {c}" for c in self.checked] + [f"note: {n}" for n in self.notes]
        lines += [f"DIFFERENCE: {d}" for d in self.differences]
        lines.append("verify: OK" if self.ok else f"verify: FAILED ({len(self.differences)} difference lines)")
        return "\n".join(lines)


def _same(a: Any, b: Any, tol: float = 0.0) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b if tol == 0 else abs(a - b) <= tol
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    return a == b


def _diff_rows(what: str, stored: dict[Any, dict[str, Any]], fresh: dict[Any, dict[str, Any]],
               columns: list[str], tol: dict[str, float], out: list[str], notes: set[str]) -> None:
    for key in sorted(set(stored) | set(fresh), key=str):
        if key not in fresh:
            out.append(f"{what} {key}: stored but not recomputed")
            continue
        if key not in stored:
            out.append(f"{what} {key}: recomputed but not stored")
            continue
        for col in columns:
            a, b = stored[key].get(col), fresh[key].get(col)
            if not _same(a, b, tol.get(col, 0.0)):
                if col in _NOTE_ONLY:
                    notes.add(f"{col}: stored {a}, now {b}")
                else:
                    out.append(f"{what} {key} {col}: stored {a!r}, recomputed {b!r}")


def _recount_truncation(repo: BenchmarkRepo, config: Any, stored: list[dict[str, Any]]) -> dict[Any, dict[str, Any]] | None:
    """Text-limit rows recounted with the recorded limit (an explicit ``--max-text-tokens`` is not on the
    rows, the limit it gave is); None when the tokenizer is not available here."""
    from lovr_hf.evaluation.scoring import Catalog, _read_embeddings, _split_kinds, truncation_texts
    from lovr_hf.evaluation.truncation import token_counter, truncation_rows

    counter = token_counter(config)
    if counter is None:
        return None
    sets, _ = _split_kinds(_read_embeddings(repo, config.slug()), config.slug())
    texts = truncation_texts(sets, repo, Catalog.read(repo))
    out = {}
    for r in stored:
        if r["metric"] == "truncation_rate" and r["direction"] in texts:
            for row in truncation_rows(counter, {r["direction"]: texts[r["direction"]]}, room=r.get("text_limit")):
                out[("all", row["direction"], row["metric"], 0)] = row
    return out


def verify_entry(repo: BenchmarkRepo, model: str, protocol: str, stored: list[dict[str, Any]],
                 report: VerifyReport, ref: str | None = None) -> None:
    """Recompute one (model, protocol)'s rows; ``ref``: what ``--model`` named (a local folder's path, which
    the rows never record: they name it by its label)."""
    from lovr_hf.evaluation.scoring import config_from_rows, score

    diffs: list[str] = []
    notes: set[str] = set()
    ks = sorted({r["k"] for r in stored if r["metric"] == "pass@k"})
    r0 = next((r for r in stored if r["slice"] == "all" and r["metric"] == "pass@k"), stored[0])
    config = config_from_rows(stored)
    if ref:
        config = dataclasses.replace(config, model=ref)
    elif str(r0.get("model_revision") or "").startswith("sha256:") and not Path(config.model).expanduser().exists():
        report.differences.append(f"{model} [{protocol}]: scored from a local model folder, which the rows name by "
                                  "its label only: give the folder again (lovr eval --verify --model FOLDER)")
        return
    slug = protocol_slug(model_slug(model), protocol)
    stored_rank = read_rankings(repo, slug, protocol)
    if not stored_rank:
        report.differences.append(f"{model} [{protocol}]: no {schema.rankings_config(slug)} rows: scored by an "
                                  "older lovr_hf? re-score it (lovr eval --calc_pass) to make it verifiable")
        return
    try:
        fresh = score(repo, config)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        report.differences.append(f"{model} [{protocol}]: cannot recompute: {exc}")
        return
    # 1. rankings and results from the embeddings
    rank_cols = [c for c in schema.RANKINGS_FEATURES if c not in ("model", "protocol", "direction", "query_index")]
    _diff_rows("rankings", {(r["direction"], r["query_index"]): r for r in stored_rank},
               {(r["direction"], r["query_index"]): r for r in fresh.rankings}, rank_cols,
               {"gold_score": SCORE_TOL, "top_scores": SCORE_TOL}, diffs, notes)
    key = ("slice", "direction", "metric", "k")
    res_cols = [c for c in schema.RESULTS_FEATURES if c not in key]
    text_limit = ("truncation_rate", "truncated_captions")
    stored_rows = {tuple(r[c] for c in key): r for r in stored}
    fresh_rows = {tuple(r[c] for c in key): r for r in fresh.rows}
    _diff_rows("results", {k: v for k, v in stored_rows.items() if k[2] not in text_limit},
               {k: v for k, v in fresh_rows.items() if k[2] not in text_limit}, res_cols, {}, diffs, notes)
    stored_trunc = {k: v for k, v in stored_rows.items() if k[2] in text_limit}
    if stored_trunc:
        recount = _recount_truncation(repo, config, stored)
        if recount is None:
            notes.add("text-limit rows not recounted: the model's tokenizer is not available here")
        else:
            _diff_rows("results", stored_trunc, recount, ["value", "num_queries", "text_limit"], {}, diffs, notes)
    # 2. results from the stored rankings alone
    boot = Bootstrap(int(r0.get("bootstrap_resamples") or 0), int(r0.get("bootstrap_seed") or 0),
                     float(r0.get("ci_level") or 0.95))
    n_cand = {r["direction"]: r["num_candidates"] for r in stored if r["slice"] == "all"}
    derived = {}
    for sd in scored_directions(stored_rank, n_cand).values():
        for r in metric_rows(sd, ks, boot):
            derived[tuple(r[c] for c in key)] = r
    metric_keys = {k: v for k, v in stored_rows.items() if v["metric"] in ("pass@k", "median_rank", "mean_rank")}
    _diff_rows("results-from-rankings", metric_keys, derived,
               ["value", "num_queries", "ci_low", "ci_high", "num_needs_review"], {}, diffs, notes)
    report.checked.append(f"{model} [{protocol}]: {len(stored)} results rows, {len(stored_rank)} rankings rows")
    report.notes.extend(sorted(f"{model} [{protocol}] {n}" for n in notes))
    if diffs:
        shown = diffs[:_SHOWN] + ([f"... and {len(diffs) - _SHOWN} more"] if len(diffs) > _SHOWN else [])
        report.differences.extend(f"{model} [{protocol}] {d}" for d in shown)


def verify(repo: BenchmarkRepo | str, models: list[str] | None = None,
           refs: dict[str, str] | None = None) -> VerifyReport:
    """Verify every (model, protocol) of the results config (or of ``models``, results labels); ``refs``:
    label -> the model to load for it (a local folder, named in the rows by its label only)."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    report = VerifyReport()
    # every shard against its name and recorded SHA-256 first: a tampered table must not verify as OK
    from lovr_hf.integrity import rebuild_command

    bad = repo.verify()
    for cfg, why in sorted(bad.items()):
        report.differences.append(f"shard {why}; rebuild it with: {rebuild_command(cfg, repo.root)}")
    if bad:
        return report
    report.checked.append(f"{sum(len(f) for f in repo.config_files().values())} shards match their names and hashes")
    if not repo.has(schema.RESULTS):
        report.differences.append(f"{repo.root} has no results config")
        return report
    rows = read_results(repo)
    present = list(dict.fromkeys(r["model"] for r in rows))
    wanted = models or present
    for m in wanted:
        if m not in present:
            report.differences.append(f"{m}: no results rows")
            continue
        for protocol in sorted({r["protocol"] for r in rows if r["model"] == m}):
            stored = [r for r in rows if r["model"] == m and r["protocol"] == protocol]
            logger.info("verifying %s [%s]: %d rows", m, protocol, len(stored))
            verify_entry(repo, m, protocol, stored, report, (refs or {}).get(m))
    return report
