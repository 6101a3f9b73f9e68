"""Publish a benchmark repo: create_repo -> upload the folder (work state excluded) -> card already inside.

The token comes from ``HF_TOKEN`` or ``hf auth login`` (huggingface_hub resolves it); it is never printed,
logged or written. Pushing a repo made on disk gives the same configs on the Hub, because the card lists
the shard files by their repo-relative paths.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lovr_hf.repo import CARD, WORK_DIR, BenchmarkRepo

logger = logging.getLogger(__name__)

#: never uploaded: work state, locks, temp files, caches
IGNORE_PATTERNS = [f"{WORK_DIR}/**", f"**/{WORK_DIR}/**", "**/.tmp-*", ".tmp-*", "**/__pycache__/**", "*.lock"]


def push_to_hub(
    repo_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload LoVR-style benchmark built with lovr_hf",
    include_clips: bool = True,
    api: Any = None,
) -> str:
    """Upload ``repo_dir`` as the dataset repo ``repo_id``; returns the repo URL."""
    from huggingface_hub import HfApi

    repo = BenchmarkRepo(repo_dir)
    if not repo.card_path.exists():
        raise FileNotFoundError(f"{repo.root} has no {CARD}: not a benchmark repo (run a stage first)")
    api = api or HfApi()
    repo.refresh_card()
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    ignore = list(IGNORE_PATTERNS) + ([] if include_clips else ["clips/**"])
    logger.info("uploading %s to %s (dataset)", repo.root, repo_id)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(repo.root),
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=ignore,
    )
    return str(url)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", nargs="?", default="lovr", help="benchmark repo folder (default ./lovr)")
    p.add_argument("--repo-id", required=True, help="Hub dataset id, ORG/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None)
    p.add_argument("--no-clips", action="store_true", help="do not upload clip video files")


def main(args: argparse.Namespace) -> int:
    url = push_to_hub(args.repo, args.repo_id, private=args.private or None, revision=args.revision,
                      include_clips=not args.no_clips)
    logger.info("pushed: %s  (load with datasets.load_dataset(%r, 'clips'))", url, args.repo_id)
    return 0
