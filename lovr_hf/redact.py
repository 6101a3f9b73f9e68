"""The one redaction rule: what a credential looks like, wherever it appears (run configs, cards, assets, logs).

A benchmark repo is published with its run configuration and card, and ``-v`` logs are pasted into issues,
so the same rule strips credentials everywhere:

- a value under a key that names a credential (``api_key``, ``hf_token``, ``password``, ``Authorization``...),
  judged by whole words of the key (``max_new_tokens`` and ``keyframes`` are kept);
- the user-info part of a URL (``http://user:pw@host/v1`` -> ``http://<redacted>@host/v1``);
- query-string parameters named like a credential (``?api_key=...``, ``&token=...``, ``sig=``);
- bearer tokens and the token formats of the services lovr_hf talks to (``hf_...``, ``sk-...``).

Log records of the ``lovr_hf`` and ``builders`` loggers go through the same rule: :func:`install_log_redaction`
wraps the log record factory (it survives ``logging.basicConfig(force=True)``, which replaces handlers and
their filters).
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS = {"token", "key", "apikey", "secret", "password", "passwd", "pwd", "authorization", "auth",
                "credential", "credentials", "cookie", "sig", "signature"}
#: keys whose words look secret but hold no credential
_NOT_SECRET = {"max_new_tokens", "max_tokens", "num_tokens", "tokens", "key_frames", "input_key", "sort_key"}

_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/\s@?#<>\"']+)@")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#\s\"'<>]*)")
_TOKENS = re.compile(r"\b(?:hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{20,})\b")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/\-]{8,}=*")


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a credential: whole words only (``api_key`` yes, ``keyframes`` no)."""
    low = str(key).lower()
    if low in _NOT_SECRET:
        return False
    return any(part in SECRET_WORDS for part in re.split(r"[_\-.\s]", low))


def redact_text(text: str) -> str:
    """``text`` with URL credentials, secret query parameters, bearer and service tokens replaced."""
    if not text or not isinstance(text, str):
        return text
    out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    out = _QUERY_PARAM.sub(
        lambda m: f"{m.group('sep')}{m.group('name')}={REDACTED}" if is_secret_key(m.group("name")) and m.group(
            "value") else m.group(0), out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    return _TOKENS.sub(REDACTED, out)


def redact(obj: Any) -> Any:
    """Recursively: values under credential keys become ``<redacted>``; every string goes through
    :func:`redact_text`. Run configs, card inputs and assets are written through this."""
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and v not in (None, "", [], {}) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def find_secret(text: str) -> str | None:
    """A short description of the first credential in ``text`` (for the publish check), or None."""
    if not text:
        return None
    for what, pat in (("a URL with a user name/password", _URL_USERINFO), ("a service token", _TOKENS),
                      ("a bearer/basic credential", _BEARER)):
        m = pat.search(text)
        if m and REDACTED not in m.group(0):
            return what
    for m in _QUERY_PARAM.finditer(text):
        if is_secret_key(m.group("name")) and m.group("value") and m.group("value") != REDACTED:
            return f"a secret query parameter ({m.group('name')}=)"
    return None


# ---- logging ----------------------------------------------------------------------------------------------

_LOGGERS = ("lovr_hf", "builders", "httpx", "openai", "huggingface_hub")


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Format the record's message once and redact it (args dropped: the text is final)."""
    try:
        msg = record.getMessage()
    except Exception:  # a broken format string: leave it to logging's own error report
        return record
    clean = redact_text(msg)
    if clean != msg:
        record.msg, record.args = clean, ()
    return record


_installed = False


def install_log_redaction() -> None:
    """Redact every record of the ``lovr_hf``/``builders`` loggers at creation (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.split(".", 1)[0] in _LOGGERS:
            redact_record(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
