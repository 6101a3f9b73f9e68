"""The release marker (``lovr_release.json`` at the repo root), read by the scoring side.

``lovr import-release`` (:mod:`lovr_hf.hub.release`) writes it; ``lovr eval`` reads it to score text->clip on
exactly the released query list. The reader sits here, below both, so that scoring never imports the hub
layer; the marker's fields are documented in :mod:`lovr_hf.hub.release`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lovr_hf.repo import BenchmarkRepo

MARKER = "lovr_release.json"
MARKER_SCHEMA = "lovr_release/1"


def read_release_marker(repo: BenchmarkRepo | str | Path) -> dict[str, Any] | None:
    """The import marker of ``repo`` (None when the repo is not an imported release)."""
    root = repo.root if isinstance(repo, BenchmarkRepo) else Path(repo)
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != MARKER_SCHEMA:
        raise ValueError(f"{path}: unknown marker schema {data.get('schema')!r} (expected {MARKER_SCHEMA!r})")
    return data


def released_query_ids(repo: BenchmarkRepo | str | Path) -> list[str] | None:
    """The released text->clip query list (clip ids, file order), or None for a repo that is no release."""
    marker = read_release_marker(repo)
    return None if marker is None else list(marker["query_set"]["ids"])
