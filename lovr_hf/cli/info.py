"""``lovr info``: what a benchmark repo (or one parquet file) holds (:mod:`lovr_hf.report.info`); argument
parsing and printing only."""

from __future__ import annotations

import argparse
import json
import logging

from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.info import file_summary, repo_status

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", default=None, help="a parquet file to summarise (else --repo)")
    p.add_argument("--repo", default="lovr", help="benchmark repo folder")
    p.add_argument("--model", default=None, help="only this model's embedding progress")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    if args.target and args.target.endswith(".parquet"):
        info = file_summary(args.target)
    else:
        repo = BenchmarkRepo(args.target or args.repo)
        if not repo.card_path.exists():
            logger.error("%s is not a benchmark repo (no README.md)", repo.root)
            return 2
        info = repo_status(repo, args.model)
    code = 1 if info.get("integrity_problems") else 0  # a repo that does not verify is not "fine"
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return code
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
        elif isinstance(value, list):
            print(f"{key}:")
            for v in value:
                print(f"  {v}")
        else:
            print(f"{key}: {value}")
    return code
