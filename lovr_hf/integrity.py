"""Nothing tampered is trusted: shard files are checked against their names and recorded hashes on every read.

A shard's name carries a fingerprint: the first 12 hex digits of the SHA-256 of all the config's shard
bytes, in order (:meth:`lovr_hf.repo.BenchmarkRepo.write`). Every write also records each shard's full
SHA-256 in the work state (:data:`SHARD_HASHES`, ``.lovr/shards.json``). A read (and ``lovr eval --verify``,
``lovr doctor``) recomputes both, so a shard rewritten under the same name (rows dropped, a byte flipped,
a truncated copy) stops the command with ONE line naming the file and the command that repairs it, instead
of flowing silently into captions, merges and scores. A published repo downloaded elsewhere has no work
state: its shards are still checked against their names.

The errors here are user-facing (:class:`RepoError` and subclasses: ``ValueError``): a command prints the
message and exits 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from lovr_hf.env_faults import ENVIRONMENT_ERRNOS

SHARD_HASHES = "shards.json"  # under the repo's work folder: {relative shard path: sha256}
_SHARD_NAME = re.compile(r"^(?P<cfg>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})-(?P<fp>[0-9a-f]{12})\.parquet$")


class RepoError(ValueError):
    """A problem with a repo the user can act on: shown as one line (with the command that fixes it)."""


class CorruptShardError(RepoError):
    """A shard file whose content does not match its name or its recorded SHA-256 (or cannot be read)."""


class CorruptCardError(RepoError):
    """README.md's YAML front matter (the shard index) cannot be parsed."""


class CorruptStateError(RepoError):
    """A file of the work state (a batch's done.json or parquet) is garbled."""


class EnvironmentFault(RepoError):
    """The machine refused a write (disk full, quota, permissions, read-only file system)."""


#: the command that rebuilds each config (from the work state or the inputs)
_REBUILT_BY = (("clips", "segment"), ("videos", "segment"), ("clip_captions", "caption"),
               ("cluster", "merge"), ("video_captions", "merge"), ("embeddings-", "eval"),
               ("rankings-", "eval"), ("results", "eval"))
RELEASE_CONFIGS = ("clips", "clip_captions", "video_captions", "theme_captions", "splits")


def rebuild_command(config: str, root: Path) -> str:
    """``lovr <stage> --repo <root>`` for ``config`` (``lovr import-release`` for a release import)."""
    if (root / "lovr_release.json").is_file() and config in RELEASE_CONFIGS:
        return f"lovr import-release <release folder> --repo {root}"
    for prefix, cmd in _REBUILT_BY:
        if config.startswith(prefix):
            return f"lovr {cmd} --repo {root}"
    return f"lovr doctor --repo {root}"


def parse_shard_name(name: str) -> tuple[str, int, int, str] | None:
    """``(config, index, count, fingerprint)`` of a shard file name (``<config>-00000-of-00001-<fp>.parquet``),
    or None for a name lovr_hf did not write."""
    m = _SHARD_NAME.match(Path(name).name)
    return (m.group("cfg"), int(m.group("i")), int(m.group("n")), m.group("fp")) if m else None


def name_fingerprint(name: str) -> str | None:
    parsed = parse_shard_name(name)
    return parsed[3] if parsed else None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_hashes(work_root: Path) -> dict[str, str]:
    p = work_root / SHARD_HASHES
    try:
        data = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}  # a garbled record is no record: shards are still checked against their names
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def shard_problem(root: Path, config: str, files: list[str], blobs: list[bytes],
                  recorded: dict[str, str]) -> str | None:
    """Why the shards of ``config`` (``files`` with contents ``blobs``) are not what was written, or None."""
    for f, blob in zip(files, blobs):
        want = recorded.get(f)
        if want and sha256_hex(blob) != want:
            return f"{f}: content ({len(blob)} bytes) does not match the SHA-256 recorded when it was written"
    fps = {name_fingerprint(f) for f in files}
    if len(fps) == 1 and None not in fps:
        h = hashlib.sha256()
        for blob in blobs:
            h.update(blob)
        if h.hexdigest()[:12] != next(iter(fps)):
            return f"{files[0]}: content does not match the fingerprint in its name"
    return None


#: shard sets this process read and found intact: (path, size, mtime_ns, inode) of each file, and the recorded
#: hashes checked against. A command that reads one config several times hashes it once.
_VERIFIED: set[tuple[tuple[tuple[str, int, int, int], ...], tuple[str | None, ...]]] = set()
_VERIFIED_MAX = 4096
#: a file modified less than this long before it was hashed is not remembered as intact: the file system's
#: clock is coarse (a jiffy), so a same-size rewrite within that tick would keep its mtime ("racy git")
_SETTLED_NS = 2_000_000_000


def _identity(path: Path) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def check_shards(root: Path, config: str, files: list[str], recorded: dict[str, str]) -> str | None:
    """:func:`shard_problem` of ``config``'s shard files as they are on disk, reading and hashing them unless this
    process already found these very files (same path, size, mtime, inode) intact against the same record.
    Raises ``FileNotFoundError`` for a shard gone (a writer switched the index: the caller reads it again)."""
    before = tuple(_identity(root / f) for f in files)
    key = (before, tuple(recorded.get(f) for f in files))
    if key in _VERIFIED:
        return None
    problem = shard_problem(root, config, files, [(root / f).read_bytes() for f in files], recorded)
    settled = time.time_ns() - _SETTLED_NS
    if problem is None and all(mtime < settled for _, _, mtime, _ in before) \
            and tuple(_identity(root / f) for f in files) == before:
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED.add(key)
    return problem


def corrupt_message(root: Path, config: str, why: str) -> str:
    return (f"corrupt shard in {root}: {why}; repair: lovr doctor --repo {root} --fix, then "
            f"{rebuild_command(config, root)} (rebuilds {config})")


def verify_listed(root: Path, listing: dict[str, list[str]], recorded: dict[str, str],
                  configs: Iterable[str] | None = None) -> dict[str, str]:
    """config -> problem for every listed config whose shards are missing, unreadable or altered."""
    out: dict[str, str] = {}
    for cfg in configs if configs is not None else listing:
        files = listing.get(cfg) or []
        try:
            blobs = [(root / f).read_bytes() for f in files]
        except OSError as exc:
            out[cfg] = f"{exc.filename or cfg}: cannot be read ({exc.strerror or exc})"
            continue
        problem = shard_problem(root, cfg, files, blobs, recorded)
        if problem:
            out[cfg] = problem
    return out


#: how the machine's refusals (:data:`lovr_hf.env_faults.ENVIRONMENT_ERRNOS`, the one list) read in a row's
#: error text (rows failed by them retry without --retry-failed)
ENV_FAULT_TEXT = re.compile(
    r"\[Errno (?:" + "|".join(str(c) for c in sorted(ENVIRONMENT_ERRNOS)) + r")\]|"
    + "|".join(re.escape(os.strerror(c)) for c in sorted(ENVIRONMENT_ERRNOS)))


def environment_fault(exc: BaseException, what: str) -> EnvironmentFault | None:
    """An :class:`EnvironmentFault` saying ``what`` failed and how to resume, for an OSError the machine
    raised (disk full, permissions...); None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return EnvironmentFault(f"{what}: {os.strerror(exc.errno).lower()}{where} [Errno {exc.errno}]; nothing half-written "
                            "was kept: fix the machine (free space, permissions) and rerun the same command "
                            "(it resumes)")
