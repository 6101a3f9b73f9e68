"""``lovr doctor``: check a benchmark repo's integrity, and with ``--fix`` repair what can be repaired here.

Checked: the card's YAML (the shard index); every listed shard against its name and recorded SHA-256;
every committed batch of the work state (``done.json`` parses, its parquet files match the hashes of the
commit); temp leftovers of writers that died; who holds a writer lock; credentials in ``run_config.json``
or the card. ``--fix``:

- an invalid card: the index is rebuilt from the shard files themselves (per config folder, the newest
  complete set whose bytes match the fingerprint in their names), then the card is re-rendered;
- a garbled batch: set aside as ``corrupt-batch-...`` (the next run of its stage recomputes its units);
- temp leftovers of dead writers: removed;
- credentials in run_config.json: rewritten through the one redaction rule (:mod:`lovr_hf.redact`);
- a corrupt shard: its config is taken out of the index (the shards kept under ``.lovr/corrupt/``) and
  doctor names the command whose plain rerun gathers it in full from the work state (a stage's own gather
  knows its rows; a release import re-imports).

Exit status: 0 when nothing is left to repair, 1 otherwise (problems left, or ``NEXT:`` commands to run).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from lovr_hf.engine.workdir import _stale_tmp, batch_problem
from lovr_hf.integrity import (
    CorruptCardError,
    name_fingerprint,
    parse_shard_name,
    read_hashes,
    rebuild_command,
    shard_problem,
)
from lovr_hf.locks import held_locks, writers_held
from lovr_hf.redact import find_secret
from lovr_hf.repo import CARD, DATA_DIR, RUN_CONFIG, TMP_PREFIX, BenchmarkRepo

logger = logging.getLogger(__name__)

class Report:
    """Problems found (each with what repairs it) and what ``--fix`` did."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.fixed: list[str] = []
        self.ok: list[str] = []
        self.todo: list[str] = []  # commands that finish a repair (a stage rerun rebuilding a config)

    def add(self, problem: str, fix: Callable[[], str] | None, do_fix: bool) -> None:
        if do_fix and fix is not None:
            self.fixed.append(f"{problem} -> {fix()}")
        else:
            self.problems.append(problem)

    def render(self) -> str:
        lines = [f"ok: {x}" for x in self.ok] + [f"fixed: {x}" for x in self.fixed]
        lines += [f"PROBLEM: {x}" for x in self.problems] + [f"NEXT: {x}" for x in dict.fromkeys(self.todo)]
        lines.append("doctor: OK" if not (self.problems or self.todo) else
                     f"doctor: {len(self.problems)} problem(s) left, {len(set(self.todo))} command(s) to run")
        return "\n".join(lines)


def index_from_shards(repo: BenchmarkRepo) -> dict[str, list[str]]:
    """config -> shard paths, rebuilt from ``data/<config>/``: the newest complete set of shards whose
    concatenated bytes match the fingerprint in their names (the checks of :mod:`lovr_hf.integrity`)."""
    out: dict[str, list[str]] = {}
    for folder in sorted(p for p in (repo.root / DATA_DIR).glob("*") if p.is_dir()):
        groups: dict[tuple[str, int], list[Path]] = {}
        for f in folder.glob("*.parquet"):
            parsed = parse_shard_name(f.name)
            if parsed and parsed[0] == folder.name:
                groups.setdefault((parsed[3], parsed[2]), []).append(f)
        best: tuple[float, list[str]] | None = None
        for (_, n), files in groups.items():
            files = sorted(files)
            rel = [f.relative_to(repo.root).as_posix() for f in files]
            if len(files) != n or shard_problem(repo.root, folder.name, rel, [f.read_bytes() for f in files], {}):
                continue
            newest = max(f.stat().st_mtime for f in files)
            if best is None or newest > best[0]:
                best = (newest, rel)
        if best is not None:
            out[folder.name] = best[1]
    return out


def _fix_card(repo: BenchmarkRepo) -> str:
    index = index_from_shards(repo)
    repo.card_path.unlink(missing_ok=True)  # the broken card goes; its body is re-rendered
    with repo.lock():
        repo._write_card(dict.fromkeys(repo._read_empty(), []) | index)
    return f"index rebuilt from the shards ({', '.join(sorted(index)) or 'no configs'}) and the card re-rendered"


def _unlist(repo: BenchmarkRepo, config: str, files: list[str]) -> Callable[[], str]:
    """Take a corrupt config out of the index (its shards kept under ``.lovr/corrupt/`` as evidence): the
    stage's next run finds it absent and gathers it in full from the work state."""
    def fix() -> str:
        aside = repo.work_root / "corrupt"
        aside.mkdir(parents=True, exist_ok=True)
        with repo.lock():
            listing = repo.config_files()
            listing.pop(config, None)
            repo._write_card(listing)
            for f in files:
                if (repo.root / f).is_file():
                    (repo.root / f).rename(aside / Path(f).name)
        return f"taken out of the index (shards kept in .lovr/corrupt/); now run: {rebuild_command(config, repo.root)}"
    return fix


def _set_aside(batch: Path) -> Callable[[], str]:
    def fix() -> str:
        aside = batch.with_name("corrupt-" + batch.name)
        batch.rename(aside)
        return f"set aside as {aside.name} (the next run of its stage recomputes its units)"
    return fix


def check_batches(repo: BenchmarkRepo, report: Report, fix: bool) -> None:
    work = repo.work_dir()
    n = 0
    for batch in sorted(work.glob("*/*/batch-*")):
        n += 1
        problem = batch_problem(batch)
        if problem:
            report.add(f"{batch.relative_to(repo.root)}/{problem}", _set_aside(batch), fix)
    report.ok.append(f"work state: {n} committed batches checked")


def check_tmp(repo: BenchmarkRepo, report: Report, fix: bool) -> None:
    for tmp in sorted(repo.root.rglob(f"{TMP_PREFIX}*")):
        if "publish" in tmp.relative_to(repo.root).parts or not _stale_tmp(tmp):
            continue

        def remove(t: Path = tmp) -> str:
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)
            return "removed"
        report.add(f"{tmp.relative_to(repo.root)}: left by a writer that is gone", remove, fix)


def check_secrets(repo: BenchmarkRepo, report: Report, fix: bool) -> None:
    rc = repo.root / RUN_CONFIG
    if rc.is_file():
        text = rc.read_text(encoding="utf-8", errors="replace")
        secret = find_secret(text)
        if secret:
            def rewrite() -> str:
                repo.write_run_config(json.loads(text))  # redacted; the command renders the card when it ends
                return "rewritten redacted (and the card re-rendered)"
            report.add(f"{RUN_CONFIG} contains {secret}", rewrite, fix)


def diagnose(repo: BenchmarkRepo, fix: bool = False) -> Report:
    """Check ``repo`` (and repair what can be repaired here with ``fix``, holding every stage's writer lock
    meanwhile, so that no writer starts in the middle of a repair)."""
    if not fix:
        report = Report()
        for holder in held_locks(repo.work_root):
            report.problems.append(f"a writer is running ({holder}): run doctor again once it is done")
        return report if report.problems else _diagnose(repo, report, fix)
    stages = sorted(p.name for p in repo.work_dir().glob("*") if p.is_dir())
    with writers_held(repo.work_root, stages) as busy:
        report = Report()
        for holder in busy:
            report.problems.append(f"a writer is running ({holder}): run doctor again once it is done")
        return report if busy else _diagnose(repo, report, fix)  # never repair under a running writer


def _diagnose(repo: BenchmarkRepo, report: Report, fix: bool) -> Report:
    try:
        listing = repo.config_files()
        report.ok.append(f"{CARD}: index of {len(listing)} configs")
    except CorruptCardError as exc:
        report.add(str(exc).split("; repair:")[0], lambda: _fix_card(repo), fix)
        try:
            listing = repo.config_files()
        except CorruptCardError:
            return report
    check_secrets(repo, report, fix)
    recorded = read_hashes(repo.work_root)
    bad = repo.verify()
    for cfg, why in sorted(bad.items()):
        report.add(f"{cfg}: {why}", _unlist(repo, cfg, listing.get(cfg) or []), fix)
        if fix:
            report.todo.append(rebuild_command(cfg, repo.root))
    report.ok.append(f"{sum(len(v) for c, v in listing.items() if c not in bad)} shards match their names"
                     f" ({sum(1 for c in listing for f in listing[c] if f in recorded)} with a recorded SHA-256)")
    for files in listing.values():
        for f in files:
            if name_fingerprint(f) is None:
                report.problems.append(f"{f}: not a fingerprinted shard name (written by hand?)")
    check_batches(repo, report, fix)
    check_tmp(repo, report, fix)
    return report


__all__ = ["Report", "diagnose", "index_from_shards"]
