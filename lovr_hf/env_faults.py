"""Which exceptions are the machine's fault (a full disk, a permission, too many open files), not the input's.

Why: the engine records a bad input as an ``error`` row (retrying cannot help) and a failed call or an
environment fault as a ``failed`` row (``--retry-failed`` re-processes it once the disk has room again).
A clip that cannot be written because the disk is full says nothing about the video, so it must not be
recorded as a bad video; nor must a bug in lovr_hf (an ``AttributeError`` once failed every video of
``--max_workers 2`` as if each were corrupt). The cutters wrap FFmpeg errors in :class:`lovr_hf.video.VideoError` (``raise ...
from None`` keeps the original as ``__context__``), so the whole chain is searched.
"""

from __future__ import annotations

import errno

ENVIRONMENT_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,  # no space left on device
        getattr(errno, "EDQUOT", None),  # disk quota exceeded
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.EROFS,  # read-only file system
        errno.EMFILE,  # too many open files (this process)
        errno.ENFILE,  # too many open files (the system)
        errno.ENOMEM,  # out of memory
    )
    if code is not None
)


def environment_fault(exc: BaseException) -> OSError | None:
    """The first ``OSError`` with an environment errno in ``exc``'s cause/context chain, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in ENVIRONMENT_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


# exceptions that only a bug in lovr_hf (or a library it calls wrongly) raises, never a property of the video
PROGRAMMING_ERRORS = (AttributeError, NameError, ImportError, AssertionError, NotImplementedError, RecursionError)


def classify(exc: BaseException) -> tuple[str, str]:
    """``(status, message)`` of a unit that raised ``exc``: ``failed`` (retryable) for an environment fault
    or a programming error (prefixed "internal error", so nobody blames the video), else ``error`` (bad input)."""
    from lovr_hf import schema

    if environment_fault(exc) is not None:
        return schema.FAILED, describe(exc)
    if isinstance(exc, PROGRAMMING_ERRORS):
        return schema.FAILED, f"internal error (a bug, not this video): {describe(exc)}"
    return schema.ERROR, describe(exc)


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, with the environment fault behind it when that is another exception."""
    text = f"{type(exc).__name__}: {exc}"
    fault = environment_fault(exc)
    if fault is not None and fault is not exc and str(fault) not in text:
        text += f" ({type(fault).__name__}: {fault})"
    return text


__all__ = ["ENVIRONMENT_ERRNOS", "PROGRAMMING_ERRORS", "classify", "describe", "environment_fault"]
