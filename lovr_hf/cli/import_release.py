"""``lovr import-release``: the official LoVR release -> a benchmark repo
(:func:`lovr_hf.hub.release.import_release`); argument parsing and printing only."""

from __future__ import annotations

import argparse
import logging

from lovr_hf.hub.release import import_release

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("release_dir", help="folder of the official LoVR release (caption_data/, video_data/)")
    p.add_argument("--repo", default="lovr", help="benchmark repo folder to write (default ./lovr)")
    p.add_argument("--no-clips", action="store_true", help="skip probing clip video files")


def main(args: argparse.Namespace) -> int:
    try:
        counts = import_release(args.release_dir, args.repo, clips=not args.no_clips)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("lovr import-release: %s", exc)
        return 2
    for config, n in counts.items():
        logger.info("%-16s %8d rows", config, n)
    return 0
