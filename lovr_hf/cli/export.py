"""``lovr export``: a benchmark repo -> the original LoVR file layout (:func:`lovr_hf.hub.export.export_original`);
argument parsing and exit codes only."""

from __future__ import annotations

import argparse
import logging

from lovr_hf.hub.export import FORMATS, export_original

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", default="lovr", help="benchmark repo folder (default ./lovr)")
    p.add_argument("--format", choices=FORMATS, default="original", help="output layout (original LoVR)")
    p.add_argument("--out", required=True, help="folder to write (outside the repo)")
    p.add_argument("--clip-queries", "--clip_queries", dest="clip_queries", default=None,
                   help="query captions for all_clip.jsonl: a count drawn with --seed, or 'all' "
                        "(default: the released list of an imported release, else 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query caption draw")
    p.add_argument("--clips", choices=("link", "copy", "none"), default="link",
                   help="clip files under video_data/long_video_clip: symlinks (default), copies, or none")
    p.add_argument("--model", dest="models", action="append", default=None,
                   help="export this model's embeddings and results (repeat; default: every model)")


def main(args: argparse.Namespace) -> int:
    try:
        manifest = export_original(args.repo, args.out, clip_queries=args.clip_queries, seed=args.seed,
                                   clips=args.clips, models=args.models)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        logger.error("lovr export: %s", exc)
        return 2
    return 1 if manifest["errors"] else 0
