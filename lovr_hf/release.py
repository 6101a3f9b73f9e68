"""``lovr import-release``: the official LoVR release -> a benchmark repo, through the datasets builder."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from lovr_hf import schema
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


def import_release(release_dir: str | Path, repo_dir: str | Path, *, clips: bool = True) -> dict[str, int]:
    """Build every config the release holds and write it into ``repo_dir``; returns rows per config.

    ``clips=False`` skips probing the clip files (40,804 files in the full release), keeping captions only.
    """
    from builders.lovr_release import SPLIT_FILES, THEME_JSONL, VIDEO_JSONL, LoVRRelease

    root = Path(release_dir).expanduser().resolve()
    repo = BenchmarkRepo(repo_dir)
    wanted = [schema.CLIP_CAPTIONS]
    if clips:
        wanted.append(schema.CLIPS)
    if (root / VIDEO_JSONL).exists():
        wanted.append(schema.VIDEO_CAPTIONS)
    if (root / THEME_JSONL).exists():
        wanted.append(schema.THEME_CAPTIONS)
    if any((root / f).exists() for f in SPLIT_FILES.values()):
        wanted.append(schema.SPLITS)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="lovr-release-") as cache:
        for config in wanted:
            builder = LoVRRelease(config_name=config, data_dir=str(root), cache_dir=cache)
            builder.download_and_prepare()
            ds = builder.as_dataset(split="train")
            repo.write(config, ds)
            counts[config] = ds.num_rows
            logger.info("imported %s: %d rows", config, ds.num_rows)
    repo.write_run_config({"import_release": {"release_dir": str(root), "configs": counts}})
    repo.refresh_card()
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("release_dir", help="folder of the official LoVR release (caption_data/, video_data/)")
    p.add_argument("--repo", default="lovr", help="benchmark repo folder to write (default ./lovr)")
    p.add_argument("--no-clips", action="store_true", help="skip probing clip video files")


def main(args: argparse.Namespace) -> int:
    counts = import_release(args.release_dir, args.repo, clips=not args.no_clips)
    for config, n in counts.items():
        logger.info("%-16s %8d rows", config, n)
    return 0
