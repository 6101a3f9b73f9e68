"""Provenance of a score: which data, which embeddings, which exact model, which software.

Why: the same embedder has been reported at R@1 31.6 in one harness and 53.8 in another; without the
exact model revision, the exact data and the exact software on the row, nobody can tell which number is
right. Every ``results`` row carries the values below; ``lovr eval --verify`` re-checks the fingerprints.

- ``dataset_fingerprint``: sha256 over the data configs (every config except ``results``, ``embeddings-*``
  and ``rankings-*``) and their shard file names. Shard names carry a hash of their bytes
  (:meth:`lovr_hf.repo.BenchmarkRepo.write`), so this changes whenever any caption, clip or video row does.
- ``embeddings_fingerprint``: sha256 of the embedding rows that were scored, in table order: kind, item id,
  status and the float32 vector bytes (not the file names: a value edited in place is caught too).
- ``model_revision``: a Hub id -> the commit hash of the snapshot in the local Hugging Face cache
  (``<cache>/models--org--name/refs/<revision>``; a 40-hex ``--revision`` as given); a local folder ->
  ``sha256:`` + a hash over its files' relative paths and contents (cached per file size and mtime under
  ``<repo>/.lovr/``); a ``module:Class`` plug-in -> ``module:`` + the hash of its source file; the built-in
  dummy, describer -> ``builtin:lovr_hf-<version>``; otherwise ``unresolved:<revision or main>`` (never a guess).
- versions of lovr_hf, torch, transformers and numpy, read from the installed distributions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import __version__, schema
from lovr_hf.repo import BenchmarkRepo, atomic_write_text

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DERIVED = (schema.RESULTS,)
HASH_CACHE = "model_hashes.json"


def is_derived_config(config: str) -> bool:
    """Configs computed from the data (scores, embeddings, rankings): not part of the dataset fingerprint."""
    return (config in _DERIVED or config.startswith(schema.EMBEDDINGS_PREFIX + "-")
            or config.startswith(schema.RANKINGS_PREFIX + "-"))


def dataset_fingerprint(repo: BenchmarkRepo) -> str:
    h = hashlib.sha256()
    for config, files in sorted(repo.config_files().items()):
        if is_derived_config(config):
            continue
        h.update(config.encode() + b"\0" + "\0".join(sorted(files)).encode() + b"\n")
    return h.hexdigest()[:16]


def embeddings_fingerprint(table: pa.Table) -> str:
    """sha256 (16 hex) of the rows' kind, item id, status and vector bytes, in table order."""
    h = hashlib.sha256()
    for name in ("kind", "item_id", schema.STATUS):
        h.update("\0".join(str(v) for v in table.column(name).to_pylist()).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    emb = table.column("embedding").combine_chunks()
    lengths = pc.list_value_length(emb).fill_null(-1).to_numpy(zero_copy_only=False)
    h.update(lengths.astype(np.int64).tobytes())
    h.update(emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32).tobytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str | None]:
    def dist(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"lovr_hf_version": __version__, "torch_version": dist("torch"),
            "transformers_version": dist("transformers"), "numpy_version": np.__version__}


# ---------------------------------------------------------------------------------------------------------
# model revision
# ---------------------------------------------------------------------------------------------------------


def hub_commit(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The commit hash ``revision`` (default ``main``) points to in the local Hub cache, or None."""
    if revision and _COMMIT.match(revision):
        return revision
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    ref = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_hash(folder: Path, cache_file: Path | None = None) -> str:
    """sha256 over (relative path, file sha256) of every file below ``folder`` (hidden ones excluded).

    File hashes are cached by (path, size, mtime_ns) in ``cache_file``: multi-GB weights are read once.
    """
    folder = folder.resolve()
    cache: dict[str, Any] = {}
    if cache_file is not None and cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
        except ValueError:
            cache = {}
    changed = False
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for p in files:
        st = p.stat()
        key = str(p)
        entry = cache.get(key)
        if not entry or entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _file_sha(p)}
            cache[key] = entry
            changed = True
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + entry["sha256"].encode() + b"\n")
    if changed and cache_file is not None:
        atomic_write_text(cache_file, json.dumps(cache, sort_keys=True))
    return h.hexdigest()[:16]


#: backends that are lovr_hf's own code, not a model: their revision is lovr_hf's version
BUILTIN_BACKENDS = ("dummy", "describer")


def model_revision(model: str, backend: str, revision: str | None = None, repo: BenchmarkRepo | None = None,
                   cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The exact model a score came from, as far as this machine can tell (see the module doc)."""
    cache_file = repo.work_root / HASH_CACHE if repo is not None else None
    if backend in BUILTIN_BACKENDS:  # code of lovr_hf itself (test doubles, the demo's describer)
        return f"builtin:lovr_hf-{__version__}"
    if backend == model and ":" in model:  # module:Class plug-in
        module = model.split(":", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            return f"module:{_file_sha(Path(spec.origin))[:16]}"
        return f"unresolved:{model}"
    text = model
    for prefix in ("local-dir:", "hf-hub:", "open_clip:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return f"sha256:{folder_hash(path, cache_file)}"
        return f"sha256:{_file_sha(path)[:16]}"
    if _HUB_ID.match(text):
        commit = hub_commit(text, revision, cache_dir)
        if commit:
            return commit
    return f"unresolved:{revision or 'main'}"


def uses_oracle_frames(table: pa.Table) -> bool:
    """True when a visual embedding row's ``frame_rule`` marks an oracle frame choice (``oracle...``)."""
    if "frame_rule" not in table.column_names or table.num_rows == 0:
        return False
    rules = table.column("frame_rule").combine_chunks()
    hit = pc.starts_with(rules.fill_null(""), pattern="oracle")
    return bool(pc.any(hit).as_py())
