"""One rule for what a failure is, used by every stage: which status a row gets and what its error says.

* bad input (a clip that does not decode, an empty caption) -> ``error``: decided by the stage that sees the
  input, never by an exception type;
* a failed call or an environment fault (network, HTTP, a full disk, a permission) -> ``failed``: retryable
  (``--retry-failed``), the real message kept;
* a programming error (``AttributeError``, ``TypeError``, ``KeyError``, ``NameError``... in lovr_hf or a
  plug-in) -> ``failed`` too, but its stored text starts with :data:`BUG_MARKER` and names where it was raised,
  so that :mod:`lovr_hf.report.summary` can tell from the tables alone that the command must exit non-zero.

A backend that cannot start at all (a model that does not load, an LLM server that does not answer) is not
a row failure: :class:`SetupError` stops the command before any row with one line, exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lovr_hf import schema
from lovr_hf.env_faults import ENVIRONMENT_ERRNOS, chain, describe, environment_fault

#: the stored error text of a row failed by a programming error starts with this (after any "clip X: ")
BUG_MARKER = "bug: "
#: exception types that mean the code is wrong, not the input or the environment
BUG_TYPES: tuple[type[BaseException], ...] = (
    AttributeError, TypeError, KeyError, NameError, IndexError, AssertionError, NotImplementedError,
    SyntaxError, RecursionError,
)
_BUG_RE = re.compile(r"(^|: )bug: \w+")


class Startable(Protocol):
    """What :func:`start_backend` calls (``lovr_hf.backends.base.Backend`` declares both; this module sits
    below the backends and imports none of them)."""

    def load(self) -> Any: ...

    def check_server(self, what: str = "model") -> None: ...


T = TypeVar("T", bound=Startable)


class UnknownName(KeyError):
    """A name the user gave (a model's results, a backend, a family, a config) that is not there: a usage
    error (exit 2). Raised instead of a bare ``KeyError`` so that a ``KeyError`` bug is never mistaken for it."""

    def __str__(self) -> str:  # the message, without KeyError's repr quotes
        return str(self.args[0]) if self.args else ""


class UsageError(ValueError):
    """A request lovr cannot act on as given (a required input missing, a repo that is not a benchmark repo):
    one line and exit 2. A ``ValueError`` so library callers that catch those keep working."""


class SetupError(RuntimeError):
    """A backend could not start (model not loadable, server unreachable, key refused): the command stops
    before any row and ``lovr`` prints the message as one line (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """What one exception means for a row: its status, the text stored in ``error``, and whether it is a bug."""

    status: str
    message: str
    bug: bool


def is_bug(exc: BaseException) -> bool:
    """A programming error (never bad input, never an environment fault)."""
    return isinstance(exc, BUG_TYPES)


def innermost_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The frame that raised ``exc`` (the last of its traceback), or None without a traceback: the one helper
    behind "where was it raised" (a bug's stored text, a loader's error, whether lovr_hf raised a ValueError)."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    return frames[-1] if frames else None


def _where(exc: BaseException) -> str:
    """``file.py:LINE in func`` of the innermost frame that raised ``exc`` (empty without a traceback)."""
    f = innermost_frame(exc)
    if f is None:
        return ""
    return f" (at {Path(f.filename).name}:{f.lineno} in {f.name})"


def _text(exc: BaseException) -> str:
    msg = str(exc).strip()
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def classify(exc: BaseException) -> Failure:
    """The row status and stored message for ``exc`` raised by a backend call or a stage's own code."""
    if is_bug(exc):
        return Failure(schema.FAILED, f"{BUG_MARKER}{_text(exc)}{_where(exc)}", True)
    return Failure(schema.FAILED, _text(exc), False)


def message(exc: BaseException) -> str:
    """The text to store in a row's ``error`` column for ``exc`` (bug-marked when it is a programming error)."""
    return classify(exc).message


def is_bug_text(text: str | None) -> bool:
    """Whether a stored ``error`` text records a programming error (see :data:`BUG_MARKER`)."""
    return bool(text) and _BUG_RE.search(str(text)) is not None


# ---------------------------------------------------------------------------------------------------------
# a backend that cannot start: one line saying why
# ---------------------------------------------------------------------------------------------------------


def looks_local(model: str) -> bool:
    """A model string that names a folder rather than a Hub id (``./x``, ``../x``, ``/x``, ``~/x``, ``a/b/c``)."""
    m = str(model)
    return m.startswith((".", "/", "~")) or m.count("/") > 1 or (os.sep != "/" and os.sep in m)


def _status_code(exc: BaseException) -> int | None:
    resp = getattr(exc, "response", None)
    code = getattr(resp, "status_code", None) or getattr(exc, "status_code", None)
    return int(code) if isinstance(code, int) else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_error_line(exc: BaseException, model: str, what: str = "model") -> str:
    """One line saying why ``model`` could not be loaded: folder missing, not cached while offline, Hub
    unreachable, access refused (401/403), not on the Hub, or the loader's own first line."""
    links = chain(exc)
    names = {type(e).__name__ for e in links}
    text = " ".join(str(e) for e in links)
    codes = [c for e in links if (c := _status_code(e)) is not None]
    if looks_local(model) and not Path(model).expanduser().exists():
        return f"{what} {model}: local folder {Path(model).expanduser().resolve()} does not exist"
    if names & {"GatedRepoError"} or 401 in codes or 403 in codes or " 401 " in f" {text} ":
        return (f"{what} {model}: the Hugging Face Hub refused access (401/403): log in (`hf auth login`) or set "
                "HF_TOKEN; gated models also need their terms accepted on the Hub")
    if names & {"RepositoryNotFoundError", "RevisionNotFoundError"} or 404 in codes:
        return f"{what} {model}: not found on the Hugging Face Hub (check the id and --revision)"
    if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled"} or (_offline() and "offline" in text.lower()):
        if _offline():
            return (f"{what} {model}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it "
                    "once online (or unset HF_HUB_OFFLINE), or pass a local folder")
        return (f"{what} {model}: the Hugging Face Hub is unreachable and the model is not in the local cache: "
                "check the network, or pass a local folder")
    if names & {"ConnectError", "ConnectionError", "ConnectTimeout", "Timeout", "ReadTimeout"}:
        return f"{what} {model}: the Hugging Face Hub is unreachable ({_text(links[-1])}); check the network"
    first = _text(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{what} {model} cannot be loaded: {first}"


def loader_error(exc: BaseException) -> bool:
    """A ``KeyError``/``TypeError`` raised inside a model loader about the checkpoint (an unknown model type in
    its ``config.json``): the model is unusable, a setup error, not a bug in lovr_hf."""
    f = innermost_frame(exc)
    return f is not None and any(s in f.filename for s in (
        "/transformers/", "/huggingface_hub/", "/open_clip/", "/safetensors/"))


def start_backend(factory: Callable[[], T], model: str, what: str = "model") -> T:
    """``factory()`` with its weights loaded and its server and key checked once (``load()`` and
    ``check_server(what)``, declared with defaults on :class:`lovr_hf.backends.base.Backend`): before any row,
    so that a backend that cannot start stops the command with one line (:class:`SetupError`) instead of
    failing every row in turn. A programming error propagates with its traceback."""
    try:
        backend = factory()
        backend.load()
        backend.check_server(what)
    except SetupError:
        raise
    except Exception as exc:
        if is_bug(exc) and not loader_error(exc):
            raise
        raise SetupError(load_error_line(exc, model, what)) from exc
    return backend


def input_failure(exc: BaseException) -> Failure:
    """Classify an exception raised while *reading an input* (decoding a clip): a bad input is ``error``, but
    a permission refused, a full disk or an I/O fault is the environment's (``failed``, retryable) and a
    programming error is a bug (``failed``, bug-marked)."""
    if is_bug(exc):
        return classify(exc)
    if environment_fault(exc) is not None:  # anywhere in the chain: the cutters wrap FFmpeg's errors
        return Failure(schema.FAILED, describe(exc), False)
    return Failure(schema.ERROR, _text(exc), False)


_ENV_RE = re.compile(r"\[Errno (" + "|".join(str(n) for n in sorted(ENVIRONMENT_ERRNOS)) + r")\]")


def reason_status(reason: str | None) -> str:
    """The row status of an input that could not be read, from its stored reason text (decoders hand back text):
    ``failed`` for a bug or an environment fault (permission, full disk, I/O), else ``error`` (bad input)."""
    if is_bug_text(reason) or _ENV_RE.search(str(reason or "")):
        return schema.FAILED
    return schema.ERROR
