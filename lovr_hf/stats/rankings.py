"""Per-query rankings (``rankings-<model>``) and the results rows they imply.

Why: a results row is one number; the rankings are the evidence. For every scored query they hold the gold
ids, the gold's rank and score and the 20 best candidates with their scores (tie-break rule of
:mod:`lovr_hf.stats.retrieval`), plus the attributes the slices use. Every pass@k, median / mean rank, interval
and slice row of ``results`` is :func:`metric_rows` of these rows -- nothing else -- so anyone can
re-derive the table from the rankings alone, see which queries moved between two models
(:mod:`lovr_hf.report.compare`), and ``lovr eval --verify`` can check both against the stored embeddings.

Rows are the *scored* queries, in the direction's query order (``query_index``): under ``--protocol lovr``
queries whose own or gold embedding is missing are left out (counted on the results rows); under
``original`` they are in, ranked last with an empty top list, as the original counted them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.repo import BenchmarkRepo, to_arrow
from lovr_hf.stats import slices
from lovr_hf.stats.bootstrap import Bootstrap, rank_intervals
from lovr_hf.stats.directions import DirectionRanking
from lovr_hf.stats.retrieval import defined_ks, rank_metrics

TOP_N = 20  # candidates kept per query


@dataclasses.dataclass
class ScoredDirection:
    """The scored queries of one direction: ranks and slice attributes, in query order."""

    direction: str
    ranks: np.ndarray
    num_candidates: int
    video_ids: list[str | None]
    durations_s: list[float | None]
    caption_words: list[int | None]
    needs_review: np.ndarray

    def __len__(self) -> int:
        return int(self.ranks.size)


def metric_rows(sd: ScoredDirection, ks: Sequence[int], boot: Bootstrap) -> list[dict[str, Any]]:
    """pass@k / median_rank / mean_rank rows with intervals: the whole direction (``slice = "all"``) and
    every slice of :func:`lovr_hf.stats.slices.slices_for`."""
    if len(sd) == 0:
        return []
    ks = defined_ks(ks, sd.num_candidates)
    groups = {"all": np.arange(len(sd))}
    groups.update(slices.slices_for(sd.direction, sd.video_ids, sd.durations_s, sd.caption_words))
    rows = []
    for label, idx in groups.items():
        ranks = sd.ranks[idx]
        values = rank_metrics(ranks, ks)
        cis = rank_intervals(ranks, ks, boot, sd.direction, label)
        for name, value in values.items():
            metric, k = ("pass@k", int(name[5:])) if name.startswith("pass@") else (name, 0)
            lo, hi = cis.get(name, (None, None))
            rows.append({"slice": label, "direction": sd.direction, "metric": metric, "k": k, "value": value,
                         "num_queries": int(idx.size), "num_candidates": sd.num_candidates,
                         "num_needs_review": int(sd.needs_review[idx].sum()), "ci_low": lo, "ci_high": hi,
                         "ci_level": boot.level if cis else None, "bootstrap_resamples": boot.resamples,
                         "bootstrap_seed": boot.seed})
    return rows


def ranking_rows(model: str, protocol: str, ranking: DirectionRanking,
                 attrs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rankings`` rows of one direction; ``attrs[i]``: video_id, duration_s, caption_words, needs_review."""
    rows = []
    for i, (qid, gold, rank, gscore, tids, tsc) in enumerate(zip(
            ranking.query_ids, ranking.gold, ranking.ranks.tolist(), ranking.gold_scores.tolist(),
            ranking.top_ids, ranking.top_scores)):
        a = attrs[i]
        rows.append({"model": model, "protocol": protocol, "direction": ranking.direction, "query_index": i,
                     "query_id": qid, "gold_ids": list(gold), "gold_rank": int(rank),
                     "gold_score": None if not np.isfinite(gscore) else float(gscore),
                     "top_ids": list(tids), "top_scores": list(tsc), schema.VIDEO_ID: a.get(schema.VIDEO_ID),
                     "duration_s": a.get("duration_s"), "caption_words": a.get("caption_words"),
                     "needs_review": bool(a.get("needs_review", False))})
    return rows


def scored_directions(rows: Sequence[dict[str, Any]], num_candidates: dict[str, int]) -> dict[str, ScoredDirection]:
    """Rankings rows (one protocol) -> :class:`ScoredDirection` per direction, in query order."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["direction"], []).append(r)
    out = {}
    for d, rs in by.items():
        rs = sorted(rs, key=lambda r: r["query_index"])
        out[d] = ScoredDirection(d, np.array([r["gold_rank"] for r in rs], dtype=np.int64),
                                 int(num_candidates.get(d, 0)), [r[schema.VIDEO_ID] for r in rs],
                                 [r["duration_s"] for r in rs], [r["caption_words"] for r in rs],
                                 np.array([bool(r["needs_review"]) for r in rs], dtype=bool))
    return out


def scored_direction(ranking: DirectionRanking, attrs: Sequence[dict[str, Any]]) -> ScoredDirection:
    return ScoredDirection(ranking.direction, ranking.ranks, ranking.num_candidates,
                           [a.get(schema.VIDEO_ID) for a in attrs], [a.get("duration_s") for a in attrs],
                           [a.get("caption_words") for a in attrs],
                           np.array([bool(a.get("needs_review", False)) for a in attrs], dtype=bool))


def write_rankings(repo: BenchmarkRepo, slug: str, protocol: str, rows: list[dict[str, Any]]) -> None:
    """Replace ``protocol``'s rows of ``rankings-<slug>`` (other protocols' rows stay)."""
    config = schema.rankings_config(slug)
    new = to_arrow(rows, schema.RANKINGS_FEATURES)
    if repo.has(config):
        old = repo.read_table(config)
        new = pa.concat_tables([old.filter(pc.not_equal(old["protocol"], protocol)), new])
    repo.write(config, new)


def read_rankings(repo: BenchmarkRepo, slug: str, protocol: str | None = None) -> list[dict[str, Any]]:
    config = schema.rankings_config(slug)
    if not repo.has(config):
        return []
    t = repo.read_table(config)
    if protocol is not None:
        t = t.filter(pc.equal(t["protocol"], protocol))
    return t.to_pylist()
