"""Run summaries: rows per stage and status, and the ``--strict`` exit code every command shares.

``--strict`` means: exit non-zero when any row of any stage the command ran is ``error`` (bad input) or
``failed`` (a backend call failed). Counts are printed per stage and status either way, so a run that
"succeeded" with failures still says so.
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


def strict_exit(repo: BenchmarkRepo, stages: Mapping[str, Sequence[str]], *, strict: bool) -> int:
    """Log the rows per stage and status; 1 when ``strict`` and any row is error/failed, else 0."""
    counts = stage_counts(repo, stages)
    text = format_counts(counts)
    if text:
        logger.info("rows per stage and status:\n%s", text)
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
