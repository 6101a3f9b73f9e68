"""``lovr report``: static HTML pages of the results (:func:`lovr_hf.report.html.write_report`); argument
parsing and printing only."""

from __future__ import annotations

import argparse
import logging

from lovr_hf import schema
from lovr_hf.failures import UnknownName
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.html import write_report

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", default="lovr", help="benchmark repo folder with results")
    p.add_argument("--model", action="append", default=None, help="a scored model (repeatable; default: all)")
    p.add_argument("--out", required=True, help="folder for the HTML pages, plots and thumbnails")
    p.add_argument("--protocol", default="lovr", help="whose rows the pages show: lovr or original")
    p.add_argument("--samples", type=int, default=6, help="gallery queries per direction")
    p.add_argument("--seed", type=int, default=0, help="seed of the gallery's query draw")


def main(args: argparse.Namespace) -> int:
    repo = BenchmarkRepo(args.repo)
    if not repo.has(schema.RESULTS):
        logger.error("%s has no results: run `lovr eval --repo %s --model M` first", repo.root, args.repo)
        return 2
    try:
        pages = write_report(repo, args.out, args.model, protocol=args.protocol, samples=args.samples, seed=args.seed)
    except UnknownName as exc:  # a --model without results (a KeyError bug keeps its traceback)
        logger.error("%s", exc)
        return 2
    for page in pages:
        print(page)
    return 0
