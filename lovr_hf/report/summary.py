"""Run summaries: rows per stage and status, and the exit code every stage command shares.

Exit 1 (README.md "Exit codes") when any row records a programming error (its ``error`` text carries
:data:`lovr_hf.failures.BUG_MARKER`), when a stage config has rows but not one succeeded (every row ``error`` or
``failed``), or, under ``--strict``, when any row is ``error`` (bad input) or ``failed`` (a backend call
failed). Counts are printed per stage and status either way, so a run that "succeeded" with failures still
says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)

#: the configs whose rows each stage command writes (eval: every ``embeddings-*`` config it touched)
STAGE_CONFIGS: dict[str, tuple[str, ...]] = {
    "segment": (schema.VIDEOS, schema.CLIPS),
    "caption": (schema.CLIP_CAPTIONS,),
    "merge": (schema.CLUSTERS, schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS),
}
BAD_STATUSES = (schema.ERROR, schema.FAILED)
GOOD_STATUSES = (schema.OK, schema.NEEDS_REVIEW)


def status_counts(repo: BenchmarkRepo, configs: Iterable[str]) -> dict[str, dict[str, int]]:
    """config -> status -> rows (configs the repo does not have are left out)."""
    out: dict[str, dict[str, int]] = {}
    for cfg in configs:
        if not repo.has(cfg):
            continue
        col = repo.read_table(cfg).column(schema.STATUS)
        counts = pc.value_counts(col).to_pylist() if len(col) else []
        out[cfg] = {str(c["values"]): int(c["counts"]) for c in sorted(counts, key=lambda c: str(c["values"]))}
    return out


def stage_counts(repo: BenchmarkRepo, stages: Mapping[str, Sequence[str]]) -> dict[str, dict[str, dict[str, int]]]:
    """stage -> config -> status -> rows."""
    return {stage: status_counts(repo, cfgs) for stage, cfgs in stages.items()}


def bad_rows(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, int]:
    """``"<stage>/<config>/<status>" -> rows`` for every error/failed count above zero."""
    return {f"{stage}/{cfg}/{st}": n for stage, per in counts.items() for cfg, sts in per.items()
            for st, n in sts.items() if st in BAD_STATUSES and n}


def format_counts(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> str:
    """One line per stage and config: ``merge  clusters  ok 40, failed 2``."""
    lines = []
    for stage, per in counts.items():
        for cfg, sts in per.items():
            lines.append(f"{stage:<8} {cfg:<22} " + ", ".join(f"{s} {n}" for s, n in sts.items()))
    return "\n".join(lines)


def bug_rows(repo: BenchmarkRepo, configs: Iterable[str]) -> dict[str, tuple[int, str]]:
    """config -> (rows whose error records a programming error, the first such error text)."""
    from lovr_hf.failures import is_bug_text

    out: dict[str, tuple[int, str]] = {}
    for cfg in configs:
        if not repo.has(cfg):
            continue
        table = repo.read_table(cfg)
        if schema.ERROR_COL not in table.column_names:
            continue
        bugs = [e for e in table.column(schema.ERROR_COL).to_pylist() if is_bug_text(e)]
        if bugs:
            out[cfg] = (len(bugs), str(bugs[0]))
    return out


def nothing_succeeded(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> list[str]:
    """``"<stage>/<config>"`` of every config with error/failed rows and not one ok or needs_review row."""
    return [f"{stage}/{cfg}" for stage, per in counts.items() for cfg, sts in per.items()
            if any(sts.get(s) for s in BAD_STATUSES) and not any(sts.get(s) for s in GOOD_STATUSES)]


def strict_exit(repo: BenchmarkRepo, stages: Mapping[str, Sequence[str]], *, strict: bool) -> int:
    """Log the rows per stage and status; 1 when a row records a bug, when a config's rows all failed, or
    when ``strict`` and any row is error/failed; else 0."""
    counts = stage_counts(repo, stages)
    text = format_counts(counts)
    if text:
        logger.info("rows per stage and status:\n%s", text)
    bugs = bug_rows(repo, [cfg for cfgs in stages.values() for cfg in cfgs])
    if bugs:
        for cfg, (n, first) in bugs.items():
            logger.error("%s: %d rows failed by a programming error (a bug in lovr_hf or the plug-in; exit 1), "
                         "e.g. %s", cfg, n, first)
        return 1
    empty = nothing_succeeded(counts)
    if empty:
        logger.error("nothing succeeded in %s: every row is error or failed (exit 1; --retry-failed retries "
                     "the failed ones)", ", ".join(empty))
        return 1
    bad = bad_rows(counts)
    if bad and strict:
        logger.error("--strict: %s", ", ".join(f"{k} {n}" for k, n in bad.items()))
        return 1
    if bad:
        logger.warning("rows with errors or failures: %s (--strict makes this a non-zero exit; "
                       "--retry-failed retries the failed ones)", ", ".join(f"{k} {n}" for k, n in bad.items()))
    return 0


def embedding_configs(repo: BenchmarkRepo, slugs: Iterable[str]) -> tuple[str, ...]:
    return tuple(c for c in (schema.embeddings_config(s) for s in slugs) if repo.has(c))


def merge_line(s: Mapping[str, object]) -> str:
    """The run summary's one line on who wrote the merged texts.

    Every join and integration asked of the LLM ends one of three ways: the LLM's reply kept, the original
    text kept (a failed call or a reply the merge stage's guard rejected), or, with the demo's merger
    (:mod:`lovr_hf.backends.standins.demo_merge`), the labelled stand-in joiner's text in place of a reply that
    merger's guard rejected. ``merge_stand_in`` / ``merge_stand_in_llm`` are that merger's tally of this
    process (absent without it); when the tally does not cover every call (a resumed run), it says so.
    """
    def num(key: str) -> int:
        v = s.get(key, 0)
        return int(v) if isinstance(v, (int, float)) else 0

    calls, kept, rejected = num("merge_calls"), num("merge_failed_calls"), num("merge_rejected_replies")
    what = f"{num('merge_join_calls')} joins + {num('merge_integrate_calls')} integrations"
    failed = max(0, kept - rejected)
    if "merge_stand_in" not in s:
        return (f"merge texts: {calls} ({what}): {max(0, calls - kept)} by the LLM, {kept} kept the original text "
                f"({rejected} LLM replies rejected by the reply guard, {failed} failed calls)")
    stand, llm = num("merge_stand_in"), num("merge_stand_in_llm")
    if stand + llm == calls - kept:
        return (f"merge texts: {calls} ({what}): {llm} by the LLM, {stand} by the labelled stand-in joiner, "
                f"{kept} kept the original text; {stand + rejected} LLM replies rejected ({failed} failed calls)")
    return (f"merge texts: {calls} ({what}): {kept} kept the original text ({rejected} LLM replies rejected by "
            f"the reply guard, {failed} failed calls); of the {stand + llm} written in this process, {llm} by "
            f"the LLM and {stand} by the labelled stand-in joiner (its LLM reply rejected)")
