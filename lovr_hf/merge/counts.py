"""How the merge went, read back from its tables: LLM calls asked, how many kept the original text, how many of
those were replies the reply guard rejected (the run summary and the merge stage's stats)."""

from __future__ import annotations

import logging
from collections import Counter

from lovr_hf import schema
from lovr_hf.backends.llms.reply_checks import REJECTED
from lovr_hf.merge.inputs import read_columns
from lovr_hf.merge.text import rejected_count
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


def merge_call_counts(repo: BenchmarkRepo) -> dict[str, int]:
    """Joins (inside clusters) and integrations (across them) asked of the merge LLM, how many kept the
    original text, and how many of those were replies rejected by the reply guard: read from the tables' own
    count columns. Only rows of an older lovr_hf, whose ``rejected_replies`` is null, fall back to counting
    the rejections in their ``error`` text."""
    out: dict[str, int] = {}
    join_rejected: Counter[str] = Counter()
    if repo.has(schema.CLUSTERS):
        cl = repo.read_columns(schema.CLUSTERS, [schema.VIDEO_ID, "llm_calls", "failed_calls", "rejected_replies",
                                                 schema.ERROR_COL]).to_pydict()
        for vid, n, err in zip(cl[schema.VIDEO_ID], cl["rejected_replies"], cl[schema.ERROR_COL]):
            join_rejected[vid] += int(n) if n is not None else rejected_count([err])
        out.update(join_calls=sum(int(n or 0) for n in cl["llm_calls"]),
                   join_failed_calls=sum(int(n or 0) for n in cl["failed_calls"]),
                   join_rejected=sum(join_rejected.values()))
    if repo.has(schema.VIDEO_CAPTIONS):
        vc = repo.read_columns(schema.VIDEO_CAPTIONS, [schema.VIDEO_ID, "llm_calls", "failed_calls",
                                                       "rejected_replies", schema.ERROR_COL]).to_pydict()
        rejected = 0
        for vid, n, err in zip(vc[schema.VIDEO_ID], vc["rejected_replies"], vc[schema.ERROR_COL]):
            if n is not None:  # a video's count holds its clusters' rejected joins too: those are counted above
                rejected += max(0, int(n) - join_rejected[vid])
            else:
                rejected += sum(p.count(REJECTED) for p in (err or "").split("; ") if p.startswith(("step ", "level ")))
        out.update(integrate_calls=sum(int(n or 0) for n in vc["llm_calls"]),
                   integrate_failed_calls=sum(int(n or 0) for n in vc["failed_calls"]), integrate_rejected=rejected)
    out["rejected_replies"] = out.get("join_rejected", 0) + out.get("integrate_rejected", 0)
    return out


def summarize(repo: BenchmarkRepo) -> dict[str, float]:
    """Merge counts for the run summary: joins and integrations asked of the LLM, how many fell back (a failed
    call or a rejected reply: the text kept), how many of those were rejected replies; themes likewise."""
    stats: dict[str, float] = dict(merge_call_counts(repo))  # rejected_replies: joins and integrations
    if repo.has(schema.CLUSTERS):
        cl = read_columns(repo, schema.CLUSTERS, ["llm_calls", "failed_calls", schema.STATUS]).to_pydict()
        stats.update(clusters=len(cl["llm_calls"]), llm_calls=sum(cl["llm_calls"]),
                     failed_calls=sum(cl["failed_calls"]),
                     clusters_failed=sum(s in (schema.FAILED, schema.ERROR) for s in cl[schema.STATUS]))
    if repo.has(schema.VIDEO_CAPTIONS):
        vc = read_columns(repo, schema.VIDEO_CAPTIONS, ["llm_calls", "failed_calls", "join_failed_calls",
                                                        schema.STATUS]).to_pydict()
        stats.update(video_captions=len(vc["llm_calls"]), video_llm_calls=sum(vc["llm_calls"]),
                     video_failed_calls=sum(vc["failed_calls"]),
                     videos_with_join_fallbacks=sum(1 for n in vc["join_failed_calls"] if n),
                     videos_failed=sum(s in (schema.FAILED, schema.ERROR) for s in vc[schema.STATUS]))
    if repo.has(schema.THEME_CAPTIONS):
        th = read_columns(repo, schema.THEME_CAPTIONS, [schema.STATUS, schema.ERROR_COL]).to_pydict()
        stats.update(themes=len(th[schema.STATUS]), themes_failed=sum(s != schema.OK for s in th[schema.STATUS]),
                     themes_rejected=rejected_count(th[schema.ERROR_COL]))
    logger.info("merge: %s", ", ".join(f"{k} {v:g}" for k, v in stats.items()))
    return stats
