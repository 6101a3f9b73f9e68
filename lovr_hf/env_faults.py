"""Which exceptions are the machine's fault (a full disk, a permission, too many open files), not the input's.

Why: the engine records a bad input as an ``error`` row (retrying cannot help) and a failed call or an
environment fault as a ``failed`` row (``--retry-failed`` re-processes it once the disk has room again).
A clip that cannot be written because the disk is full says nothing about the video, so it must not be
recorded as a bad video. :func:`lovr_hf.failures.input_failure` is the one rule that turns an exception into a
row status (bugs included); this module only knows the environment's errnos. The cutters wrap FFmpeg errors in :class:`lovr_hf.video.frame_index.VideoError` (``raise ...
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
        errno.EIO,  # an I/O error of the disk or network file system
        getattr(errno, "ESTALE", None),  # a stale network file handle
    )
    if code is not None
)


def chain(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else ``__context__``), outermost first: the one walk
    of an exception chain (a cycle or a very long chain stops it)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not e for e in out) and len(out) < limit:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def os_error_in(exc: BaseException, errnos: frozenset[int] | set[int]) -> OSError | None:
    """The first ``OSError`` in ``exc``'s chain whose errno is one of ``errnos``, else None."""
    return next((e for e in chain(exc) if isinstance(e, OSError) and e.errno in errnos), None)


def environment_fault(exc: BaseException) -> OSError | None:
    """The first ``OSError`` with an environment errno in ``exc``'s cause/context chain, else None."""
    return os_error_in(exc, ENVIRONMENT_ERRNOS)


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, with the environment fault behind it when that is another exception."""
    text = f"{type(exc).__name__}: {exc}"
    fault = environment_fault(exc)
    if fault is not None and fault is not exc and str(fault) not in text:
        text += f" ({type(fault).__name__}: {fault})"
    return text


__all__ = ["ENVIRONMENT_ERRNOS", "chain", "describe", "environment_fault", "os_error_in"]
