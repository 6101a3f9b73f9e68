"""Results of ``lovr eval`` as stored: the ``results`` config and the embedding cost report
(``assets/eval_cost.json``). Storage only: ``results.md`` and the plots are rendered from these by the report
layer (:mod:`lovr_hf.report.results_page`), once per command.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.repo import ASSETS_DIR, BenchmarkRepo, atomic_write_text

COST_JSON = f"{ASSETS_DIR}/eval_cost.json"


def _lock(repo: BenchmarkRepo):
    from filelock import FileLock

    repo.work_root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(repo.work_root / "results.lock"))


def read_results_table(repo: BenchmarkRepo) -> pa.Table:
    """The ``results`` config (shards written before columns were added read those as null, see
    :func:`lovr_hf.repo.conform`): a repo scored by an older lovr_hf keeps its rows until it is re-scored."""
    return repo.read_table(schema.RESULTS) if repo.has(schema.RESULTS) else schema.RESULTS_FEATURES.arrow_schema.empty_table()


def read_results(repo: BenchmarkRepo) -> list[dict[str, Any]]:
    return read_results_table(repo).to_pylist()


def stale_results(repo: BenchmarkRepo) -> list[str]:
    """``model (protocol)`` of every scored model whose rows were computed on other data than the repo holds now
    (their ``dataset_fingerprint`` differs from the current one: captions, clips or videos changed since):
    the card flags them, since a stored score is not recomputed until ``lovr eval`` runs again."""
    from lovr_hf.evaluation.provenance import dataset_fingerprint

    if not repo.has(schema.RESULTS):
        return []
    t = read_results_table(repo).select(["model", "protocol", "dataset_fingerprint"])
    now = dataset_fingerprint(repo)
    stale = {(m, p or "lovr") for m, p, fp in zip(*(t.column(c).to_pylist() for c in t.column_names))
             if fp and fp != now}
    return [f"{m} ({p})" for m, p in sorted(stale)]


def write_results(repo: BenchmarkRepo, model: str, rows: list[dict[str, Any]],
                  protocol: str | None = None) -> None:
    """Replace ``model``'s rows of each protocol in ``rows`` (or of ``protocol``) in the ``results`` config;
    other models' rows, and this model's rows of other protocols, stay."""
    from lovr_hf.repo import to_arrow

    protocols = sorted({r["protocol"] for r in rows} | ({protocol} if protocol else set()))
    new = to_arrow(rows, schema.RESULTS_FEATURES)
    with _lock(repo):
        if repo.has(schema.RESULTS):
            old = read_results_table(repo)
            mine = pc.and_(pc.equal(old["model"], model), pc.is_in(old["protocol"], value_set=pa.array(protocols)))
            new = pa.concat_tables([old.filter(pc.invert(pc.fill_null(mine, False))), new])
        repo.write(schema.RESULTS, new)


def read_costs(repo: BenchmarkRepo) -> dict[str, Any]:
    p = repo.root / COST_JSON
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except ValueError:
        return {}


def cost_key(model: str) -> str:
    """The key of a model in ``assets/eval_cost.json``: its label, never an absolute path (the file is published)."""
    from lovr_hf.model_labels import model_label

    return model_label(model)


def write_cost(repo: BenchmarkRepo, model: str, report: dict[str, Any]) -> None:
    with _lock(repo):
        costs = read_costs(repo)
        costs.pop(model, None)  # an older lovr_hf keyed it by the model string itself
        costs[cost_key(model)] = report
        atomic_write_text(repo.root / COST_JSON, json.dumps(costs, indent=2, sort_keys=True))
