"""``lovr push``: publish a benchmark repo to the Hub (:func:`lovr_hf.hub.push.push_to_hub`); argument
parsing, printing and exit codes only."""

from __future__ import annotations

import argparse
import logging

from lovr_hf.hub.push import DEFAULT_MESSAGE, PushError, push_to_hub
from lovr_hf.integrity import RepoError

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", nargs="?", default=None, help="benchmark repo folder (default ./lovr)")
    # every other command names its repo with --repo: push takes it too (without it, argparse's prefix matching
    # read `--repo R` as `--repo-id R` and pushed ./lovr to the Hub id R)
    p.add_argument("--repo", dest="repo_option", default=None, help="the same, as the other commands spell it")
    p.add_argument("--repo-id", required=True, help="Hub dataset id, ORG/NAME")
    p.add_argument("--private", action="store_true",
                   help="create the Hub dataset repo as private (create_repo; an existing repo keeps its visibility)")
    p.add_argument("--revision", default=None, help="the Hub branch to commit to (default: main)")
    p.add_argument("--no-media", "--no-clips", dest="no_media", action="store_true",
                   help="index only: publish no clip or video file (clips as frame ranges, videos as size + "
                        "SHA-256; rebuild with `lovr materialize`)")
    p.add_argument("--dry-run", action="store_true", help="stage what would be published and stop")
    p.add_argument("-m", "--commit-message", dest="commit_message", default=DEFAULT_MESSAGE,
                   help="the commit message on the Hub")


def main(args: argparse.Namespace) -> int:
    from lovr_hf.failures import UsageError
    from lovr_hf.hub.publish import PublishError

    if args.repo and args.repo_option and args.repo != args.repo_option:
        raise UsageError(f"two repos given: {args.repo} and --repo {args.repo_option}")
    repo = args.repo_option or args.repo or "lovr"
    try:
        url = push_to_hub(repo, args.repo_id, private=args.private or None, revision=args.revision,
                          commit_message=args.commit_message, no_media=args.no_media, dry_run=args.dry_run)
    except PushError as exc:
        logger.error("lovr push: %s", exc)
        return exc.exit_code
    except (PublishError, FileNotFoundError, RepoError) as exc:
        logger.error("lovr push: %s", exc)
        return 2
    if not args.dry_run:
        logger.info("pushed: %s  (load with datasets.load_dataset(%r, 'clip_captions'))", url, args.repo_id)
    return 0
