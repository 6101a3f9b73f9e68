"""Every line of a LoVR release checked before anything is imported: ``file:line: what is wrong``.

The release's files are read by lovr_hf, not written by it: a line without ``vid``, a ``{"vid": null}``
(which became a video named ``None``), a caption that is a number or a list (stored as its repr), a bad
split parquet (a traceback and a half-imported repo), or repeated lines (kept twice, then ``lovr eval``
failed on a "repeated item_id") are all caught here, while the repo is still untouched. Repeated video,
theme and split lines are dropped (the first is kept), counted and logged, as repeated query lines are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

ID_KEYS = ("clip_id", "path", "video", "vid")  # where a line names its clip (the original reads ``path``)


class ReleaseError(ValueError):
    """A release file that cannot be imported as it is (the message says file:line and what is wrong)."""


def jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-empty line; anything but a JSON object is an error."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise ReleaseError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with f:
        try:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ReleaseError(f"{path}:{line_no}: not JSON ({exc})") from None
                if not isinstance(rec, dict):
                    raise ReleaseError(f"{path}:{line_no}: expected a JSON object, got {type(rec).__name__}")
                yield line_no, rec
        except UnicodeDecodeError as exc:
            raise ReleaseError(f"{path}: not UTF-8 text ({exc})") from None


def string_field(rec: dict[str, Any], keys: tuple[str, ...], where: str, what: str) -> str:
    """The first of ``keys`` present in ``rec``: it must be a non-empty string (null and numbers refused)."""
    for key in keys:
        if key in rec:
            value = rec[key]
            if value is None:
                raise ReleaseError(f"{where}: {key!r} is null (expected the {what} as a string)")
            if not isinstance(value, str):
                raise ReleaseError(f"{where}: {key!r} is {type(value).__name__} {value!r:.40} (expected the "
                                   f"{what} as a string)")
            if not value.strip():
                raise ReleaseError(f"{where}: {key!r} is empty (expected the {what})")
            return value
    raise ReleaseError(f"{where}: no {' / '.join(repr(k) for k in keys)} field (the {what}); has {sorted(rec)}")


def caption_field(rec: dict[str, Any], where: str) -> str:
    """``cap``: a string ("" is kept: an empty caption is an ``error`` row); null, missing or non-string refused."""
    if "cap" not in rec:
        raise ReleaseError(f"{where}: no 'cap' field (the caption); has {sorted(rec)}")
    cap = rec["cap"]
    if not isinstance(cap, str):
        raise ReleaseError(f"{where}: 'cap' is {'null' if cap is None else type(cap).__name__} "
                           "(expected the caption as a string)")
    return cap


def deduplicated(items: list[tuple[str, Any]], what: str, source: str) -> tuple[list[tuple[str, Any]], int]:
    """``items`` (key, value) with repeated keys dropped (the first kept); logs how many went."""
    seen: set[str] = set()
    out = []
    dups: list[str] = []
    for key, value in items:
        if key in seen:
            dups.append(key)
            continue
        seen.add(key)
        out.append((key, value))
    if dups:
        logger.warning("release: %d repeated %s lines in %s dropped (first kept): %s", len(dups), what, source,
                       dups[:5])
    return out, len(dups)


def split_values(path: Path) -> list[tuple[int, str]]:
    """(row, clip path or id) of a split parquet: its ``clip_id``/``path``/``video``/``vid``/``id`` column."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReleaseError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0][:160]})") from None
    col = next((c for c in (*ID_KEYS, "id") if c in table.column_names), None)
    if col is None:
        raise ReleaseError(f"{path}: no clip id column among {table.column_names}")
    out = []
    for i, value in enumerate(table.column(col).to_pylist()):
        if not isinstance(value, str) or not value.strip():
            raise ReleaseError(f"{path}: row {i}: {col!r} is {value!r:.40} (expected a clip path or id string)")
        out.append((i, value))
    return out
