"""Safe ids and paths: nothing derived from a file name may escape an output folder."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ID_LEN = 80


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def safe_id(name: str) -> str:
    """Turn a file name (or relative path) into an id of ``[A-Za-z0-9_-]`` only.

    Names that are already safe are kept as they are (the LoVR release ids survive unchanged); any
    other name is transliterated, slugged and suffixed with a hash of the original, so two different
    names never collide and ``../x`` can never become a path component.
    """
    stem = name
    for ext in (".mp4", ".mkv", ".avi", ".webm", ".mov"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    if stem and not _UNSAFE.search(stem) and len(stem) <= MAX_ID_LEN and not stem.startswith("-"):
        return stem
    ascii_name = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("_", ascii_name).strip("_-")[: MAX_ID_LEN - 9]
    return f"{slug or 'video'}-{short_hash(name)}"


def check_id(value: str) -> str:
    """Raise unless ``value`` is a safe id (used on ids read back from files we did not write)."""
    if not value or _UNSAFE.search(value) or value.startswith("-") or len(value) > 4 * MAX_ID_LEN:
        raise ValueError(f"unsafe id {value!r}: ids may only hold letters, digits, '_' and '-'")
    return value


def safe_join(root: str | os.PathLike[str], *parts: str) -> Path:
    """Join ``parts`` under ``root`` and refuse any result outside ``root`` (``..``, absolute parts, links)."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"path {os.path.join(*parts)!r} escapes {str(base)!r}")
    return target
