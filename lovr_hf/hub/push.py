"""``lovr push``: publish a benchmark repo to the Hub, legally and at LoVR scale.

What is published is staged first (:mod:`lovr_hf.hub.publish`: no local path, optionally no video bytes at
all); then ``create_repo`` and an upload that sends only what changed: the Hub's ``preupload`` answer gives
each path's remote oid and unchanged files are dropped from the commit, so pushing again after a new eval
uploads the new shards and the card only. Files of the managed folders that the repo no longer holds (old
fingerprinted shards, clips of a re-segmented video, all clips after ``--no-media``) are deleted in the same
push. A large repo (LoVR: 40,804 clip files) is never one giant commit (the known failure mode of video
datasets): with ``hf_xet`` installed, huggingface_hub's own upload is a resumable multi-commit pipeline;
huggingface_hub 1.x has ``upload_large_folder`` for it; otherwise lovr_hf commits in batches of at most
:data:`FILES_PER_COMMIT` files / :data:`BYTES_PER_COMMIT` bytes (the Hub allows about 128 commits per hour),
and rerunning an interrupted push skips every batch already committed.

The token comes from ``HF_TOKEN`` or ``hf auth login`` (huggingface_hub resolves it); it is never printed,
logged or written.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lovr_hf.hub.publish import Publication, stage
from lovr_hf.integrity import RepoError
from lovr_hf.repo import BenchmarkRepo

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: paths lovr_hf owns in a published repo: remote files under these that the repo no longer has are deleted
MANAGED_PATTERNS = ["data/*", "assets/*", "clips/*", "README.md", "results.md", "run_config.json"]
LARGE_FILES = 1_000  # more files than this, or more bytes than LARGE_BYTES: a large (multi-commit) push
LARGE_BYTES = 2 * 1024**3
FILES_PER_COMMIT = 2_000
BYTES_PER_COMMIT = 1024**3
DEFAULT_MESSAGE = "Upload LoVR-style benchmark built with lovr_hf"
ATTEMPTS = 3  # a 5xx answer or a dropped connection is retried this many times in all
RETRY_WAIT_S = 2.0  # times the attempt number


class PushError(RepoError):
    """The Hub refused or failed the push: one line saying why and what to do (``exit_code`` for the CLI)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _http_status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def with_retries(fn: Callable[[], T], repo_id: str, rerun: str) -> T:
    """``fn()``; an HTTP error of the Hub becomes one :class:`PushError` line (401/403: the token; 5xx and
    dropped connections: retried, then what to rerun). The token itself never appears."""
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, ATTEMPTS + 1):
        try:
            return fn()
        except HfHubHTTPError as exc:
            code = _http_status(exc)
            if code in (401, 403):
                raise PushError(f"token rejected for {repo_id} (HTTP {code}): set HF_TOKEN or run `hf auth login` "
                                "with a token that can write to it", exit_code=2) from None
            if code is None or code < 500:
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise PushError(f"the Hub refused the push to {repo_id} (HTTP {code}): {first}") from None
            why = f"HTTP {code}"
        except (ConnectionError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:120]}"
        except Exception as exc:  # httpx transport errors (their own hierarchy)
            if type(exc).__module__.split(".")[0] != "httpx":
                raise
            why = f"{type(exc).__name__}: {str(exc)[:120]}"
        if attempt < ATTEMPTS:
            logger.warning("push: the Hub failed (%s); retrying (%d/%d)", why, attempt, ATTEMPTS - 1)
            time.sleep(RETRY_WAIT_S * attempt)
    raise PushError(f"the Hub failed the push to {repo_id} ({why}) {ATTEMPTS} times: rerun `{rerun}` later "
                    "(files already uploaded are skipped)")


def _xet_available() -> bool:
    try:
        from huggingface_hub.utils._runtime import is_xet_available
    except ImportError:  # pragma: no cover - older layouts
        return False
    return bool(is_xet_available())


def is_large(pub: Publication) -> bool:
    return len(pub.files) > LARGE_FILES or pub.total_bytes > LARGE_BYTES


def _managed(path: str) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in MANAGED_PATTERNS)


def _batches(pub: Publication) -> list[list[str]]:
    """Files in commit batches (README last, so the card never lists shards that are not there yet)."""
    files = [f for f in pub.files if f != "README.md"]
    out: list[list[str]] = [[]]
    size = 0
    for f in files:
        n = (pub.root / f).stat().st_size
        if out[-1] and (len(out[-1]) >= FILES_PER_COMMIT or size + n > BYTES_PER_COMMIT):
            out.append([])
            size = 0
        out[-1].append(f)
        size += n
    out[-1].append("README.md")
    return out


def _stale_remote(api: Any, repo_id: str, revision: str | None, keep: set[str]) -> list[str]:
    remote = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    return sorted(f for f in remote if _managed(f) and f not in keep)


def _commit_batches(api: Any, pub: Publication, repo_id: str, revision: str | None, message: str) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    batches = _batches(pub)
    stale = _stale_remote(api, repo_id, revision, set(pub.files))
    for i, files in enumerate(batches, 1):
        ops: list[Any] = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(pub.root / f)) for f in files]
        if i == len(batches):
            ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        logger.info("push: commit %d/%d (%d files%s)", i, len(batches), len(files),
                    f", {len(stale)} deletions" if i == len(batches) and stale else "")
        api.create_commit(repo_id=repo_id, repo_type="dataset", revision=revision, operations=ops,
                          commit_message=message if len(batches) == 1 else f"{message} (part {i}/{len(batches)})")


def upload(api: Any, pub: Publication, repo_id: str, *, private: bool | None = None, revision: str | None = None,
           commit_message: str = DEFAULT_MESSAGE) -> str:
    """``create_repo`` then upload ``pub`` (see the module docstring for how); returns the repo URL."""
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    large = is_large(pub)
    logger.info("uploading %d files (%.1f MB) to %s (dataset)%s", len(pub.files), pub.total_bytes / 1e6, repo_id,
                ", large push" if large else "")
    if large and hasattr(api, "upload_large_folder"):  # huggingface_hub 1.x: resumable, multi-commit
        api.upload_large_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(pub.root), revision=revision,
                                ignore_patterns=[".lovr/**"])
        stale = _stale_remote(api, repo_id, revision, set(pub.files))
        if stale:
            from huggingface_hub import CommitOperationDelete

            api.create_commit(repo_id=repo_id, repo_type="dataset", revision=revision,
                              operations=[CommitOperationDelete(path_in_repo=f) for f in stale],
                              commit_message=f"{commit_message}: remove {len(stale)} files no longer in the repo")
    elif large and not _xet_available():
        _commit_batches(api, pub, repo_id, revision, commit_message)
    else:  # small, or huggingface_hub >= 2 with hf_xet: upload_folder is itself multi-commit and resumable
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(pub.root), revision=revision,
                          commit_message=commit_message, ignore_patterns=[".lovr/**"],
                          delete_patterns=MANAGED_PATTERNS)
    return str(url)


def push_to_hub(
    repo_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = DEFAULT_MESSAGE,
    no_media: bool = False,
    dry_run: bool = False,
    api: Any = None,
) -> str:
    """Stage ``repo_dir`` for publication and upload it as the dataset repo ``repo_id``; returns the repo URL
    (with ``dry_run``, the staged folder, uploading nothing)."""
    pub = stage(BenchmarkRepo(repo_dir), no_media=no_media, repo_id=repo_id, revision=revision)
    for note in pub.notes:
        logger.info("publish: %s", note)
    if dry_run:
        logger.info("dry run: %d files (%.1f MB) staged in %s; nothing uploaded", len(pub.files),
                    pub.total_bytes / 1e6, pub.root)
        return str(pub.root)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    rerun = f"lovr push {repo_dir} --repo-id {repo_id}" + (" --no-media" if no_media else "")
    return with_retries(lambda: upload(api, pub, repo_id, private=private, revision=revision,
                                       commit_message=commit_message), repo_id, rerun)
