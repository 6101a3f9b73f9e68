"""``lovr doctor``: check a benchmark repo's integrity; ``--fix`` repairs (the checks: :mod:`lovr_hf.engine.doctor`)."""

from __future__ import annotations

import argparse
import logging

from lovr_hf.engine.doctor import diagnose
from lovr_hf.integrity import RepoError
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", default="lovr", help="benchmark repo folder (default ./lovr)")
    p.add_argument("--fix", action="store_true", help="repair what can be repaired here (see lovr doctor docs)")


def main(args: argparse.Namespace) -> int:
    repo = BenchmarkRepo(args.repo)
    if not repo.root.is_dir():
        logger.error("lovr doctor: %s is not a folder", repo.root)
        return 2
    try:
        report = diagnose(repo, fix=args.fix)
    except RepoError as exc:
        logger.error("lovr doctor: %s", exc)
        return 2
    for line in report.render().splitlines():
        (logger.warning if line.startswith(("PROBLEM", "NEXT")) else logger.info)("%s", line)
    return 0 if not (report.problems or report.todo) else 1
