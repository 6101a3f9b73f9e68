"""Ids and paths: a file's own name is its id whenever that is safe, and nothing can escape a folder.

An id (video id, clip id) becomes ONE path component (``clips/<video_id>/<clip_id>.mp4``), a key of every
table, and a name in results. The LoVR release's ids are YouTube-style (``-7wwfGJXEZg``: mixed case,
digits, ``_`` and ``-``, a leading ``-`` about once in 64), so a user who scores a model on the release, or
segments videos named after such ids, must get exactly those ids back. The rule is therefore permissive:
any name that is safe as one path component on the file systems a benchmark repo travels to (Linux,
macOS, Windows, the Hub) is kept verbatim, and only what could escape its folder or collide with another
name is refused, with the reason (:func:`id_problem`):

- empty, ``.`` or ``..`` (the folder itself or its parent);
- ``/`` or ``\\`` (path separators: a sub-folder or an escape), NUL and other control characters, Unicode
  line/paragraph separators and bidirectional-override characters (they hide what a name is);
- ``< > : " | ? *``, a trailing ``.`` or space, a leading space, or a Windows device name (``CON``, ``NUL``,
  ``COM1`` ...): on Windows ``:`` opens an NTFS stream, trailing dots and spaces are dropped (``a.`` and
  ``a`` would be one file) and device names are not files at all;
- a name not in Unicode NFC form (macOS stores names normalised, so two ids could name one file);
- more than :data:`MAX_ID_BYTES` UTF-8 bytes (file names are limited to 255 bytes; clip files and their
  temporary names append up to ~30 bytes to a video id).

A leading ``-`` is kept: lovr_hf never hands an id to a command line as a bare argument (clips are cut and
read in-process through PyAV, and paths are absolute).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

#: longest video id kept verbatim, in UTF-8 bytes (``<id>-Scene-NNNN`` plus clip temp names stay < 255)
MAX_ID_BYTES = 200
#: longest id accepted by :func:`check_id` (clip ids are a video id plus ``-Scene-NNN``)
MAX_CHECKED_ID_BYTES = 240
#: model slugs (config names such as ``embeddings-<slug>``) stay strictly ``[A-Za-z0-9_-]``
MAX_SLUG_LEN = 80

_STRICT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_WINDOWS_CHARS = set('<>:"|?*')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {f"{p}{i}" for p in ("COM", "LPT")
                                                                     for i in "123456789¹²³"}
_HIDDEN = {"\u2028", "\u2029"} | {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def id_problem(value: str, max_bytes: int = MAX_ID_BYTES) -> str | None:
    """Why ``value`` cannot be used verbatim as an id (one path component everywhere), or None if it can."""
    if not isinstance(value, str) or not value:
        return "an id cannot be empty"
    if value in (".", ".."):
        return f"{value!r} names a folder itself or its parent"
    for ch in value:
        if ch in "/\\":
            return f"contains {ch!r}, a path separator (the id would name a sub-folder or leave its folder)"
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return "is not valid Unicode (a lone surrogate)"
        if cat == "Cc" or ch in _HIDDEN:
            return f"contains the control character U+{ord(ch):04X}"
        if ch in _WINDOWS_CHARS:
            return f"contains {ch!r}, which Windows file names cannot hold (':' opens an NTFS stream)"
    if value[-1] in ". " or value[0] == " ":
        return "starts with a space or ends with '.' or a space (Windows drops those: two ids, one file)"
    if value.split(".")[0].upper() in _WINDOWS_DEVICES:
        return f"{value.split('.')[0]!r} is a reserved device name on Windows"
    if unicodedata.normalize("NFC", value) != value:
        return "is not in Unicode NFC form (macOS would store it as another name: two ids, one file)"
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        return f"is {size} bytes long (at most {max_bytes}: file names are limited to 255 bytes)"
    return None


def strip_video_extension(name: str) -> str:
    """``a.MP4`` -> ``a`` (only the known video extensions, case-insensitive)."""
    for ext in VIDEO_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def strict_slug(name: str, max_len: int = MAX_SLUG_LEN) -> str:
    """``[A-Za-z0-9_-]`` only, never starting with ``-``: for names that become config names or must be
    typed on a command line (model slugs). Safe names are kept; others are transliterated, slugged and
    suffixed with a hash of the original, so two different names never collide."""
    if name and not _STRICT_UNSAFE.search(name) and len(name) <= max_len and not name.startswith("-"):
        return name
    return _hashed_slug(name, name, max_len)


def _hashed_slug(text: str, hashed: str, max_len: int = MAX_SLUG_LEN) -> str:
    ascii_name = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _STRICT_UNSAFE.sub("_", ascii_name).strip("_-")[: max_len - 9]
    return f"{slug or 'video'}-{short_hash(hashed)}"


def safe_id(name: str) -> str:
    """The id of a file name (or relative path): its stem verbatim when :func:`id_problem` finds nothing.

    ``-7wwfGJXEZg.mp4`` -> ``-7wwfGJXEZg``; ``two seconds.mp4`` -> ``two seconds``. A stem that cannot be
    kept (``../x``, ``a/b``, a control character, too long, ...) becomes a ``[A-Za-z0-9_-]`` slug with a hash
    of the original name, so two different names never collide and nothing can escape a folder.
    """
    stem = strip_video_extension(name)
    if id_problem(stem) is None:
        return stem
    return _hashed_slug(stem, name)  # the hash covers the full name (as lovr_hf always did)


def check_id(value: str, max_bytes: int = MAX_CHECKED_ID_BYTES) -> str:
    """Raise ``ValueError`` (saying why) unless ``value`` is safe as one path component; else return it.

    Used on ids read back from files lovr_hf did not write (the official release, user tables).
    """
    problem = id_problem(value, max_bytes)
    if problem is not None:
        raise ValueError(f"unsafe id {value!r}: {problem}")
    return value


def check_video_id(value: str) -> str:
    """:func:`check_id` with the video-id length limit (its clip files must still fit in 255 bytes)."""
    return check_id(value, MAX_ID_BYTES)


def casefold_collisions(ids: Iterable[str]) -> dict[str, list[str]]:
    """Ids that differ only in case (``Ab`` / ``aB``): one folder on macOS and Windows. Key: the casefold."""
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(i.casefold(), []).append(i)
    return {k: sorted(set(v)) for k, v in groups.items() if len(set(v)) > 1}


def safe_join(root: str | os.PathLike[str], *parts: str) -> Path:
    """Join ``parts`` under ``root`` and refuse any result outside ``root`` (``..``, absolute parts, links)."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"path {os.path.join(*parts)!r} escapes {str(base)!r}")
    return target
