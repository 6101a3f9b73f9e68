"""Files a stage owns for its rows (clip files): delete those no kept row references; record their identity.

A gather that drops clip rows (a removed video, a re-segmented one) deletes the clip files only those rows
referenced, inside the stage's root folder; the list is written before the table changes, so a kill in
between never leaks the files. A virtual clip's ``path`` is the source video and is never touched.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from lovr_hf.engine.workdir import file_identity
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _paths(repo: BenchmarkRepo, table: pa.Table, col: str) -> set[str]:
    if not table.num_rows or col not in table.column_names:
        return set()
    vals = table.column(col).to_pylist()
    modes = table.column("clip_mode").to_pylist() if "clip_mode" in table.column_names else [None] * len(vals)
    # a virtual clip's path is the SOURCE video: never a file this stage owns
    return {str(repo.resolve(v)) for v, m in zip(vals, modes) if v and m != "virtual"}


def dropped_files(repo: BenchmarkRepo, old: pa.Table, new: pa.Table, col: str, root: str) -> set[str]:
    keep = _paths(repo, new, col)
    return {p for p in _paths(repo, old, col) - keep if _inside(Path(p), Path(root))}


def pending_prunes(work: Path) -> bool:
    return any(work.glob("prune-*.json"))


def prune_pending(repo: BenchmarkRepo, pending: Path, current: pa.Table, col: str, root: str) -> int:
    if not pending.exists():
        return 0
    keep = _paths(repo, current, col)
    removed = 0
    for p in json.loads(pending.read_text()):
        path = Path(p)
        if p in keep or not _inside(path, Path(root)):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
        parent = path.parent
        if parent != Path(root) and _inside(parent, Path(root)) and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
    pending.unlink(missing_ok=True)
    if removed:
        logger.warning("removed %d clip file(s) no longer referenced by any %s row", removed, pending.stem[6:])
    return removed


# ---------------------------------------------------------------------------------------------------------
# commits
# ---------------------------------------------------------------------------------------------------------


def owned_identities(owned: dict[str, tuple[str, str]], input_key: str, tables: dict[str, pa.Table],
                     repo_root: str) -> dict[str, list[list[Any]]]:
    """unit -> [[file, size, mtime_ns], ...] of the files its rows own, as they are at commit time."""
    out: dict[str, list[list[Any]]] = {}
    for cfg, spec in owned.items():
        t = tables.get(cfg)
        if t is None or not t.num_rows or input_key not in t.column_names or spec[0] not in t.column_names:
            continue
        modes = t.column("clip_mode").to_pylist() if "clip_mode" in t.column_names else [None] * t.num_rows
        for unit, p, mode in zip(t.column(input_key).to_pylist(), t.column(spec[0]).to_pylist(), modes):
            if not p or mode == "virtual":
                continue
            path = p if os.path.isabs(p) else os.path.join(repo_root, p)
            ident = file_identity(path)
            if ident is not None:
                out.setdefault(str(unit), []).append([path, *ident])
    return out
