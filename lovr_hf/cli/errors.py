"""What ``lovr`` does with an exception that escapes a command: the exit codes of README.md "Exit codes".

* 2, one line on stderr, no traceback: a usage or setup error the user fixes and reruns: a wrong flag value
  (a ``ValueError`` lovr_hf raised itself, :class:`lovr_hf.failures.UsageError`), a backend that cannot start
  (:class:`lovr_hf.failures.SetupError`), chunks still missing under ``--gather``, a full disk or a permission
  refused (``ENOSPC``/``EDQUOT``/``EACCES``/``EPERM``/``EROFS``: the path, and what to do; finished work is kept
  and the rerun resumes);
* 1 with the traceback: anything else is a bug (in lovr_hf or a plug-in) and must be reported as one.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import traceback
from pathlib import Path

from lovr_hf.env_faults import os_error_in
from lovr_hf.failures import innermost_frame

logger = logging.getLogger("lovr_hf")

USAGE = 2
BUG = 1
_PACKAGE = str(Path(__file__).resolve().parents[1])  # lovr_hf/, not lovr_hf/cli/
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _raised_by_lovr(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc`` is lovr_hf's own code (a deliberate ``raise ValueError(...)``
    that checks a request, as opposed to one from deep inside a library, which is a bug)."""
    f = innermost_frame(exc)
    return f is not None and str(Path(f.filename).resolve()).startswith(_PACKAGE)


def _say(command: str, text: str) -> None:
    print(f"lovr {command}: {text}", file=sys.stderr)


def exit_code_for(command: str, exc: Exception, args: argparse.Namespace | None = None, *,
                  verbose: bool = False) -> int:
    """Report ``exc`` (escaped from ``lovr command``) and return the exit code (module docstring)."""
    from lovr_hf.engine.stage import MissingChunksError
    from lovr_hf.failures import SetupError, UnknownName, UsageError
    from lovr_hf.integrity import RepoError

    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, (SetupError, MissingChunksError, UsageError, RepoError, UnknownName)):  # RepoError: + its repair
        _say(command, str(exc))
        return USAGE
    os_exc = os_error_in(exc, _DISK_FULL | _DENIED)
    if os_exc is not None:
        path = os_exc.filename or getattr(args, "repo", None) or "(path not reported)"
        if os_exc.errno in _DISK_FULL:
            _say(command, f"no space left on the device writing {path}: free space then rerun "
                          "(finished work is kept; the rerun resumes)")
        else:
            _say(command, f"{os_exc.strerror or 'permission denied'}: {path}: fix its permissions (or pick "
                          "another folder) then rerun")
        return USAGE
    if isinstance(exc, ValueError) and _raised_by_lovr(exc):
        _say(command, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return USAGE
    if not verbose:
        traceback.print_exception(exc, file=sys.stderr)
    _say(command, f"internal error ({type(exc).__name__}), a bug: please report it with the traceback above")
    return BUG
