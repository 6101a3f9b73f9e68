"""The resumable ``Dataset.map`` engine every stage runs on: every table a pure function of its inputs.

A stage is a config dataclass plus ``process(batch) -> {config: columns}``. A *unit* of work is one input
row, named by ``input_key`` and identified by a **digest of its inputs** (by default a stable hash of the
whole row minus its key: a clip's source file, frame range and mode; a cluster's member captions; a
video's clusters; an embedding's text or clip list). ``Stage.apply`` runs one ``Dataset.map(batched=True)``
over the units this process owns whose *(key, digest)* is not committed yet; each finished batch is
committed as one directory renamed into place (atomic), holding a parquet file per output config, the
keys it completed and their digests. A kill -9 loses at most the batch in flight.

``gather`` then builds each output config from the *current* input only: for every input unit, the rows of
the latest batch that committed it with its current digest. So a rerun recomputes exactly the units whose
inputs changed, reuses the rest (also after a settings round trip: older commits stay valid for their
digest), and rows of units that no longer exist are dropped, logged. ``--rerun`` and ``--retry-failed``
supersede older rows instead of duplicating them.

Work lives in ``<repo>/.lovr/work/<stage>/<fingerprint>/``: a changed model, prompt or parameter is a
different fingerprint, hence a fresh computation, never a mix. A fingerprint covers only what changes
that stage's output; what its input rows say is in the digests.

Chunks and ranks: shards are contiguous blocks of the full input in a fixed order. Whoever finds every
unit committed gathers (rank 0 under ``accelerate launch``, after a barrier; with manual chunks, the chunk
that finishes last, in any order). ``gather`` with units missing raises :class:`MissingChunksError` naming
the chunks, unless ``allow_partial`` (then the run config, shown in the card, records what is missing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset

from lovr_hf import __version__, schema
from lovr_hf.dist import Shard, barrier, shard_range
from lovr_hf.repo import (
    TMP_PREFIX,
    BenchmarkRepo,
    atomic_write_bytes,
    atomic_write_text,
    redact,
    table_to_parquet_bytes,
    to_arrow,
)

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"
INPUTS_FILE = "inputs.parquet"  # the (key, digest) list of the latest apply: what --gather builds from
GATHERED_FILE = "gathered.json"  # what the last gather wrote (a rerun with nothing new skips the write)
GATHERED_OWNERS = "gathered-owners.parquet"  # unit -> batch of the last gather (the next one patches it)
RETRYABLE = (schema.FAILED, schema.ERROR)
PARTIAL_KEY = "partial"  # run_config.json entry listing configs gathered with units missing


class MissingChunksError(ValueError):
    """``--gather`` found units not committed: which chunks still have work, and how to proceed."""


def unit_keys(ds: Dataset, col: str) -> list[str]:
    """The key column as strings, through Arrow (a datasets Column iterates row by row: slow at 40k rows)."""
    if not len(ds):
        return []
    return [str(k) for k in ds.with_format("arrow")[col].to_pylist()]


def _feed(h: Any, v: Any) -> None:
    """Type-tagged, length-prefixed bytes of a JSON-like value into a hash (dict keys sorted)."""
    if v is None:
        h.update(b"N")
    elif isinstance(v, bool):
        h.update(b"T" if v else b"F")
    elif isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(b))
        h.update(b)
    elif isinstance(v, (int, float)):
        h.update(b"n" + repr(v).encode() + b";")
    elif isinstance(v, dict):
        h.update(b"d%d:" % len(v))
        for k in sorted(v, key=str):
            _feed(h, str(k))
            _feed(h, v[k])
    elif isinstance(v, (list, tuple)):
        h.update(b"l%d:" % len(v))
        for x in v:
            if type(x) is str:  # the common case (captions, ids) without a call per element
                b = x.encode("utf-8", "surrogatepass")
                h.update(b"s%d:" % len(b))
                h.update(b)
            else:
                _feed(h, x)
    else:
        _feed(h, str(v))


def value_digest(obj: Any, n: int = 16) -> str:
    """Stable digest of a row (sha256 over a tagged encoding: no JSON escaping of 40k captions)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()[:n]


def stable_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ).hexdigest()[:n]


@dataclasses.dataclass
class StageResult:
    """What one ``apply`` did (for summaries); the rows themselves are in the repo after ``gather``."""

    processed: int = 0
    skipped_done: int = 0
    batches: int = 0
    seconds: float = 0.0
    outputs: dict[str, Dataset] = dataclasses.field(default_factory=dict)
    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    #: every unit of the (whole) input is committed with its current digest
    complete: bool = False
    #: units still missing after this apply (other chunks' share, or failed commits)
    missing: int = 0
    #: whether this apply wrote the repo configs
    gathered: bool = False


# ---------------------------------------------------------------------------------------------------------
# the index of a work directory: which (key, digest) each committed batch holds
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    batch: int  # index into WorkIndex.batches
    failed: bool


class WorkIndex:
    """Committed batches of one work directory and, per unit key, the latest commit for each digest.

    Batches of versions before digests existed carry none: such a commit is reused for a key that has no
    digest-carrying commit (logged), so upgrading never recomputes a finished benchmark.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.batches = committed_batches(work)
        self.done: list[dict[str, Any]] = []
        self.entries: dict[str, dict[str | None, _Entry]] = {}
        for i, b in enumerate(self.batches):
            d = _read_done(b)
            self.done.append(d)
            failed = set(d.get("failed", []))
            digests = d.get("digests") or [None] * len(d["keys"])
            for k, dg in zip(d["keys"], digests):
                self.entries.setdefault(k, {})[dg] = _Entry(i, k in failed)

    def batch_name(self, i: int) -> str:
        return self.batches[i].name[len("batch-"):]

    def lookup(self, key: str, digest: str) -> _Entry | None:
        per = self.entries.get(key)
        if not per:
            return None
        hit = per.get(digest)
        if hit is None and None in per and len(per) == 1:
            return per[None]  # a commit from before digests: trusted (see class docstring)
        return hit

    def is_done(self, key: str, digest: str, *, since: str = "", retry_failed: bool = False) -> bool:
        e = self.lookup(key, digest)
        if e is None:
            return False
        if since and self.batch_name(e.batch) < since:
            return False
        return not (retry_failed and e.failed)

    def legacy_units(self, keys: Iterable[str], digests: Iterable[str]) -> int:
        return sum(1 for k, d in zip(keys, digests) if self.lookup(k, d) is not None and d not in self.entries[k])


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------


class Stage(ABC):
    """Base of segment / caption / merge / embed.

    Subclasses set ``name``, ``input_key`` (column identifying a unit of work in the input rows),
    ``outputs`` (configs produced; rows of ``status_config`` carry ``input_key`` and a status) and
    implement ``process``. Runtime-only fields of the config (paths, worker counts) are listed in
    ``runtime_fields`` so they do not change the fingerprint.

    Optional, per stage (or set on an instance by the caller):

    - ``unit_digest(row)``: what identifies a unit's inputs (default: the whole row minus its key);
    - ``digest_files``: input columns naming files whose identity (size, mtime) enters the digest, so a
      file replaced under the same name is recomputed;
    - ``verify_unit(key, rows)``: check a reused unit's outputs still hold (e.g. its clip files exist);
      a unit that fails is recomputed;
    - ``owned_files``: ``{config: (path column, root folder)}``: files this stage created for its rows
      (relative paths are relative to the repo root). Their size and mtime are committed with each unit:
      a reused unit whose file is missing or was rewritten since (another setting cut a file of the same
      name) is recomputed. A file referenced by a row that a gather drops, and by no row kept, is deleted
      (only inside ``root``).
    """

    name: ClassVar[str]
    input_key: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    status_config: ClassVar[str]
    runtime_fields: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"
    digest_files: tuple[str, ...] = ()
    owned_files: dict[str, tuple[str, str]] = {}  # noqa: RUF012 - instances assign their own dict
    #: refresh the card after a gather (a command running several stages turns it off and refreshes once)
    card_refresh: bool = True
    #: gather by patching the previous tables (only changed units' batches are read)
    incremental_gather: bool = True

    def __init__(self, config: Any) -> None:
        self.config = config
        self.batch_size = int(getattr(config, "batch_size", 1) or 1)
        self.wrote = False  # set by a gather that changed the repo

    # ---- identity ----------------------------------------------------------------------------------
    def fingerprint_payload(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
        for f in self.runtime_fields:
            cfg.pop(f, None)
        # credentials (api_key in backend_options...) never enter a fingerprint or the stage manifest
        return {"stage": self.name, "version": self.version, "config": redact(cfg)}

    def fingerprint(self) -> str:
        return stable_hash(self.fingerprint_payload())

    def unit_digest(self, row: dict[str, Any]) -> str:
        """Digest of one unit's inputs: the row minus its key (plus file identities of ``digest_files``)."""
        body = {k: v for k, v in row.items() if k != self.input_key}
        for col in self.digest_files:
            body[f"{col}@file"] = _file_identity(row.get(col))
        return value_digest(body)

    def unit_digests(self, ds: Dataset) -> list[str]:
        if not len(ds):
            return []
        table = ds.with_format("arrow")[:] if not isinstance(ds, pa.Table) else ds
        out: list[str] = []
        for batch in table.to_batches(max_chunksize=4096):
            out.extend(self.unit_digest(r) for r in batch.to_pylist())
        return out

    # ---- work --------------------------------------------------------------------------------------
    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models etc. Called lazily in the process that runs ``process`` (never pickled)."""

    def prepare(self, todo: Dataset) -> None:  # noqa: B027 - optional hook
        """Called once with the rows about to be processed (e.g. to prefetch ahead of the map)."""

    def batch_meta(self) -> dict[str, Any]:
        """Extra numbers stored with each committed batch (timings, token counts) for summaries."""
        return {}

    def verify_unit(self, key: str, rows: dict[str, list[dict[str, Any]]]) -> bool:
        """Whether a committed unit's outputs can be reused as they are (default: always)."""
        return True

    @abstractmethod
    def process(self, batch: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]] | list[dict[str, Any]]]:
        """One batch of input rows -> rows per output config (column dict or list of row dicts)."""

    def __getstate__(self) -> dict[str, Any]:
        # models and clients stay in the process that loaded them (datasets pickles the map function)
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    # ---- the map -----------------------------------------------------------------------------------
    def apply(
        self,
        ds: Dataset,
        repo: BenchmarkRepo,
        *,
        shard: Shard | None = None,
        num_proc: int | None = None,
        rerun: bool = False,
        retry_failed: bool = False,
        gather: bool = True,
    ) -> StageResult:
        """Process the units of ``ds`` owned by ``shard`` not committed with their current digest, then
        gather when every unit is committed (rank 0 of a launched job; else whoever finds it so)."""
        shard = shard or Shard()
        t0 = time.perf_counter()
        work = self.work_path(repo)
        work.mkdir(parents=True, exist_ok=True)
        self._write_manifest(work)
        keys = unit_keys(ds, self.input_key)
        _check_unique(keys, self.name, self.input_key)
        digests = self.unit_digests(ds)
        if gather:  # the full input of this stage (a subset apply with gather=False must not replace it)
            _write_inputs(work, keys, digests)
        if shard.world_size > 1 and not shard.launched:
            _mark_chunk(work, shard)
        mine = list(shard_range(len(keys), shard)) if shard.world_size > 1 else list(range(len(keys)))
        index = WorkIndex(work)
        since = self._started_marker(work, shard) if rerun else ""
        todo_idx = [i for i in mine if not index.is_done(keys[i], digests[i], since=since, retry_failed=retry_failed)]
        pending = set(todo_idx)
        todo_idx = sorted(pending | set(self._failed_verification(index, keys, digests,
                                                                   [i for i in mine if i not in pending])))
        legacy = index.legacy_units((keys[i] for i in mine), (digests[i] for i in mine))
        if legacy:
            logger.warning("%s: %d units committed by an older lovr_hf (no input digest) are reused as they are; "
                           "--rerun recomputes them", self.name, legacy)
        todo = ds.select(todo_idx)
        res = StageResult(processed=len(todo), skipped_done=len(mine) - len(todo))
        logger.info(
            "%s (%s): %d to do, %d already done [%s]",
            self.name, shard.describe(), len(todo), res.skipped_done, self.fingerprint(),
        )
        if len(todo):
            primary = self.outputs[0]
            self.prepare(todo)
            fn = _BatchRunner(self, str(work), {keys[i]: digests[i] for i in todo_idx}, str(repo.root))
            out = todo.map(
                fn,
                batched=True,
                batch_size=self.batch_size,
                num_proc=num_proc if num_proc and num_proc > 1 and len(todo) > 1 else None,
                features=schema.features_for(primary),
                remove_columns=todo.column_names,
                new_fingerprint=stable_hash([self.fingerprint(), todo._fingerprint, shard.rank]),
                desc=f"{self.name} ({shard.describe()})",
                load_from_cache_file=False,
            )
            res.batches = -(-len(todo) // self.batch_size)
            res.outputs[primary] = out
        barrier(shard)
        try:
            index = WorkIndex(work) if len(todo) or shard.world_size > 1 else index
            res.missing = sum(1 for k, d in zip(keys, digests) if index.lookup(k, d) is None)
            res.complete = res.missing == 0
            if gather and (shard.is_main or not shard.launched) and res.complete:
                res.outputs.update(self.gather(repo, keys=keys, digests=digests, index=index))
                res.gathered = True
            elif gather and not shard.launched and shard.world_size > 1:
                logger.info("%s: %d units still to be committed by other chunks; the chunk that finishes last "
                            "gathers (or run again with --gather once all are done)", self.name, res.missing)
        finally:
            barrier(shard)  # every rank reads the repo only after rank 0 has gathered
        res.seconds = time.perf_counter() - t0
        return res

    def _failed_verification(self, index: WorkIndex, keys: list[str], digests: list[str],
                             done_idx: list[int]) -> list[int]:
        """Indices of reused units whose outputs no longer hold: an owned file (a clip file) missing or
        rewritten since the unit was committed (another setting cut a file of the same name, a user
        deleted it), or rejected by the stage's own ``verify_unit``. Those units are recomputed."""
        bad: set[int] = set()
        if self.owned_files and done_idx:
            for i in done_idx:
                e = index.lookup(keys[i], digests[i])
                recorded = index.done[e.batch].get("files", {}).get(keys[i]) if e is not None else None
                if recorded and any(_file_identity(p) != [size, mtime] for p, size, mtime in recorded):
                    bad.add(i)
            if bad:
                logger.warning("%s: %d reused units have clip files missing or rewritten since; recomputing "
                               "them", self.name, len(bad))
        if type(self).verify_unit is not Stage.verify_unit and done_idx:
            rest = [i for i in done_idx if i not in bad]
            owner = {keys[i]: e.batch for i in rest if (e := index.lookup(keys[i], digests[i])) is not None}
            rows = _unit_rows(index, self.outputs, owner, self.input_key)
            failed = [i for i in rest if not self.verify_unit(keys[i], rows.get(keys[i], {}))]
            if failed:
                logger.warning("%s: %d reused units failed verification; recomputing them", self.name, len(failed))
            bad.update(failed)
        return sorted(bad)

    def work_path(self, repo: BenchmarkRepo) -> Path:
        return repo.work_dir(self.name, self.fingerprint())

    def _write_manifest(self, work: Path) -> None:
        manifest = work / "stage.json"
        if not manifest.exists():
            atomic_write_text(manifest, json.dumps(self.fingerprint_payload(), indent=2, default=str))

    def _started_marker(self, work: Path, shard: Shard) -> str:
        """--rerun: only batches committed after this moment count as done (older ones get superseded)."""
        marker = work / f"rerun-{shard.rank}-of-{shard.world_size}.json"
        if not marker.exists():
            atomic_write_text(marker, json.dumps({"since": _batch_prefix()}))
        return json.loads(marker.read_text())["since"]

    def all_done(self, ds: Dataset, work: Path) -> bool:
        return not self.missing_units(ds, work)

    def missing_units(self, ds: Dataset, work: Path) -> list[str]:
        """Keys of ``ds`` not committed with their current digest in ``work``."""
        keys = unit_keys(ds, self.input_key)
        index = WorkIndex(work)
        return [k for k, d in zip(keys, self.unit_digests(ds)) if index.lookup(k, d) is None]

    # ---- gather ------------------------------------------------------------------------------------
    def gather(
        self,
        repo: BenchmarkRepo,
        ds: Dataset | None = None,
        *,
        allow_partial: bool = False,
        keys: Sequence[str] | None = None,
        digests: Sequence[str] | None = None,
        index: WorkIndex | None = None,
    ) -> dict[str, Dataset]:
        """Committed batches -> one table per output config, for exactly the current input's units.

        The input is ``ds`` (or ``keys``/``digests``), else the one recorded by the latest ``apply``.
        Units not committed raise :class:`MissingChunksError` unless ``allow_partial``.
        """
        work = self.work_path(repo)
        index = index or WorkIndex(work)
        if ds is not None:
            keys = unit_keys(ds, self.input_key)
            digests = self.unit_digests(ds)
        elif keys is None or digests is None:
            recorded = _read_inputs(work)
            if recorded is None:  # nothing recorded (work of an older version): every committed unit
                keys = sorted(index.entries)
                digests = [_latest_digest(index, k) for k in keys]
            else:
                keys, digests = recorded
        owner: dict[str, int] = {}
        missing: list[int] = []
        for i, (k, d) in enumerate(zip(keys, digests)):
            e = index.lookup(k, d)
            if e is None:
                missing.append(i)
            else:
                owner[k] = e.batch
        if missing and not allow_partial:
            raise MissingChunksError(_missing_message(self.name, work, len(keys), missing))
        if missing:
            logger.warning("%s: gathering with %d of %d units missing (--allow-partial)", self.name, len(missing),
                           len(keys))
        owners = {k: index.batch_name(b) for k, b in owner.items()}
        signature = stable_hash([self.fingerprint(), sorted(owners.items())])
        prev = _read_gathered(repo, work, self.outputs)
        out: dict[str, Dataset] = {}
        if prev is not None and prev[0] == signature:
            logger.info("%s: nothing changed since the last gather; configs kept", self.name)
        else:
            olds = {cfg: repo.read_table(cfg) if repo.has(cfg) else None for cfg in self.outputs}
            if prev is not None and self.incremental_gather:
                changed = {k: b for k, b in owner.items() if prev[1].get(k) != owners[k]}
                dropped = (set(prev[1]) - set(owners)) | set(changed)
                tables = {cfg: _patched(olds[cfg], index, cfg, changed, dropped, self.input_key) for cfg in self.outputs}
                logger.info("%s: %d units changed, %d removed since the last gather", self.name, len(changed),
                            len(set(prev[1]) - set(owners)))
            else:
                tables = {cfg: select_rows(index, cfg, owner, self.input_key) for cfg in self.outputs}
            self.write_outputs(repo, tables, set(keys), olds)
            self.wrote = True
            _record_gathered(repo, work, signature, self.outputs, owners)
            if self.card_refresh:
                repo.refresh_card()
            out = {cfg: _dataset_of(repo, cfg) for cfg in self.outputs if repo.has(cfg)}
        _record_partial(repo, self.outputs, len(missing), len(keys))
        for marker in work.glob("rerun-*.json"):
            marker.unlink(missing_ok=True)
        return out

    def gather_result(self, repo: BenchmarkRepo, ds: Dataset, *, allow_partial: bool = False) -> StageResult:
        """``--gather`` of a stage command: gather ``ds``'s units, as a :class:`StageResult`."""
        res = StageResult(outputs=self.gather(repo, ds, allow_partial=allow_partial), gathered=True)
        res.missing = len(self.missing_units(ds, self.work_path(repo))) if allow_partial else 0
        res.complete = res.missing == 0
        return res

    def write_outputs(self, repo: BenchmarkRepo, tables: dict[str, pa.Table], units: set[str],
                      olds: dict[str, pa.Table | None] | None = None) -> None:
        """Replace each output config with its gathered table; log what went; delete owned files of it.
        The card is refreshed by the caller (once per gather, or once per command: ``card_refresh``)."""
        for cfg, table in tables.items():
            old = olds[cfg] if olds is not None else (repo.read_table(cfg) if repo.has(cfg) else None)
            log_removed(self.name, cfg, old, table, self.input_key, units)
            self._write_with_prune(repo, cfg, old, table, update_card=False)

    def _write_with_prune(self, repo: BenchmarkRepo, cfg: str, old: pa.Table | None, table: pa.Table,
                          **write_kw: Any) -> list[str]:
        spec = self.owned_files.get(cfg)
        work = self.work_path(repo)
        pending = work / f"prune-{cfg}.json"
        if spec is not None and old is not None:
            gone = _dropped_files(repo, old, table, *spec)
            if gone:  # recorded before the table changes: a kill between the two never leaks the files
                atomic_write_text(pending, json.dumps(sorted(gone)))
        rel = repo.write(cfg, table, **write_kw)
        if spec is not None:
            _prune_pending(repo, pending, table, *spec)
        return rel


def _dataset_of(repo: BenchmarkRepo, cfg: str) -> Dataset:
    """A config as a Dataset without datasets hashing the table for a fingerprint (never used for caching)."""
    from datasets import DatasetInfo

    return Dataset(repo.read_table(cfg), info=DatasetInfo(features=schema.features_for(cfg)),
                   fingerprint=uuid.uuid4().hex)


def _check_unique(keys: list[str], stage: str, key: str) -> None:
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dup = sorted({k for k in keys if k in seen or seen.add(k)})  # type: ignore[func-returns-value]
        raise ValueError(f"{stage}: input has repeated {key} values {dup[:5]}")


def _file_identity(path: Any) -> list[int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _batch_prefix() -> str:
    return f"{time.time_ns():020d}"


def _latest_digest(index: WorkIndex, key: str) -> str | None:
    per = index.entries[key]
    return max(per, key=lambda d: per[d].batch)


# ---------------------------------------------------------------------------------------------------------
# inputs, chunks, partial gathers
# ---------------------------------------------------------------------------------------------------------


def _write_inputs(work: Path, keys: list[str], digests: list[str]) -> None:
    table = pa.table({"key": pa.array(keys, pa.string()), "digest": pa.array(digests, pa.string())})
    blob = table_to_parquet_bytes(table)
    p = work / INPUTS_FILE
    if p.exists() and p.read_bytes() == blob:
        return
    atomic_write_bytes(p, blob)


def _read_inputs(work: Path) -> tuple[list[str], list[str]] | None:
    p = work / INPUTS_FILE
    if not p.exists():
        return None
    t = pq.read_table(p)
    return t.column("key").to_pylist(), t.column("digest").to_pylist()


def _mark_chunk(work: Path, shard: Shard) -> None:
    p = work / f"chunks-{shard.world_size}.json"
    if not p.exists():
        atomic_write_text(p, json.dumps({"num_chunks": shard.world_size}))


def _chunk_counts(work: Path) -> list[int]:
    out = []
    for p in work.glob("chunks-*.json"):
        try:
            out.append(int(json.loads(p.read_text())["num_chunks"]))
        except (ValueError, KeyError):
            continue
    return sorted(set(out))


def _missing_message(stage: str, work: Path, n: int, missing: list[int]) -> str:
    parts = [f"{stage}: {len(missing)} of {n} units are not committed"]
    for chunks in _chunk_counts(work) or []:
        miss = set(missing)
        per = []
        for i in range(chunks):
            rng = shard_range(n, Shard(i, chunks))
            left = sum(1 for j in rng if j in miss)
            if left:
                per.append(f"--chunk-idx {i} ({left} of {len(rng)} left)")
        if per:
            parts.append(f"with --num-chunks {chunks}, still to finish: " + ", ".join(per))
    parts.append("finish them (rerun the same command resumes), or gather what is there with --allow-partial "
                 "(the card then says the data are partial)")
    return "; ".join(parts)


def _record_partial(repo: BenchmarkRepo, configs: Sequence[str], missing: int, total: int) -> None:
    """Note (or clear) in run_config.json, which the card shows, that a config lacks units."""
    with repo.lock():
        run = repo.run_config()
        partial = dict(run.get(PARTIAL_KEY) or {})
        before = dict(partial)
        for cfg in configs:
            if missing:
                partial[cfg] = f"{missing} of {total} units missing (gathered with --allow-partial)"
            else:
                partial.pop(cfg, None)
        if partial == before:
            return
        if partial:
            run[PARTIAL_KEY] = partial
        else:
            run.pop(PARTIAL_KEY, None)
        repo.write_run_config(run)
    if missing:
        repo.refresh_card()


def _record_gathered(repo: BenchmarkRepo, work: Path, signature: str, configs: Sequence[str],
                     owners: dict[str, str]) -> None:
    """What this gather wrote: its signature, the configs' shard files and each unit's batch (parquet)."""
    keys = sorted(owners)
    atomic_write_bytes(work / GATHERED_OWNERS, table_to_parquet_bytes(pa.table(
        {"key": pa.array(keys, pa.string()), "batch": pa.array([owners[k] for k in keys], pa.string())})))
    files = repo.config_files()
    atomic_write_text(work / GATHERED_FILE, json.dumps(
        {"signature": signature, "configs": {c: files.get(c) for c in configs}}, sort_keys=True))


def _read_gathered(repo: BenchmarkRepo, work: Path, configs: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """(signature, unit -> batch) of the last gather, if the configs are still exactly what it wrote."""
    p, o = work / GATHERED_FILE, work / GATHERED_OWNERS
    if not (p.exists() and o.exists()) or _pending_prunes(work):
        return None
    try:
        rec = json.loads(p.read_text())
        t = pq.ParquetFile(o).read()
    except (ValueError, OSError, pa.ArrowException):
        return None
    files = repo.config_files()
    if any(files.get(cfg) != rec.get("configs", {}).get(cfg) or files.get(cfg) is None for cfg in configs):
        return None  # written since by someone else (another stage, a manual write): rebuild in full
    return rec.get("signature", ""), dict(zip(t.column("key").to_pylist(), t.column("batch").to_pylist()))


def _patched(old: pa.Table | None, index: WorkIndex, cfg: str, changed: dict[str, int], dropped: set[str],
             unit_col: str) -> pa.Table:
    """The previous table of ``cfg`` minus the rows of ``dropped`` units, plus the ``changed`` units' rows."""
    feats = schema.features_for(cfg)
    fresh = select_rows(index, cfg, changed, unit_col)
    if old is None or unit_col not in old.column_names:
        raise ValueError(f"incremental gather of {cfg} needs its previous table with {unit_col}")
    keep = old.filter(pc.invert(pc.is_in(old[unit_col], value_set=pa.array(sorted(dropped), pa.string()))))
    return _dedupe_latest(pa.concat_tables([keep.cast(feats.arrow_schema), fresh]), schema.primary_key(cfg))


def log_removed(stage: str, cfg: str, old: pa.Table | None, new: pa.Table, unit_col: str, units: set[str]) -> int:
    """Log rows of the previous ``cfg`` table that the new one no longer has, and why. Returns how many."""
    if old is None or not old.num_rows:
        return 0
    pk = schema.primary_key(cfg)
    new_keys = set(zip(*[new.column(c).to_pylist() for c in pk])) if new.num_rows else set()
    old_keys = list(zip(*[old.column(c).to_pylist() for c in pk]))
    old_units = old.column(unit_col).to_pylist() if unit_col in old.column_names else [None] * old.num_rows
    gone_unit = gone_rows = 0
    gone_ids: set[str] = set()
    for k, u in zip(old_keys, old_units):
        if k in new_keys:
            continue
        if u is not None and u not in units:
            gone_unit += 1
            gone_ids.add(u)
        else:
            gone_rows += 1
    if gone_unit:
        sample = ", ".join(sorted(gone_ids)[:5]) + (", ..." if len(gone_ids) > 5 else "")
        logger.warning("%s: removed %d %s rows of %d %s(s) no longer in the input (%s)", stage, gone_unit, cfg,
                       len(gone_ids), unit_col, sample)
    if gone_rows:
        logger.warning("%s: removed %d %s rows that their recomputed units no longer produce", stage, gone_rows, cfg)
    return gone_unit + gone_rows


# ---------------------------------------------------------------------------------------------------------
# owned files (clip files of removed clips)
# ---------------------------------------------------------------------------------------------------------


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


def _dropped_files(repo: BenchmarkRepo, old: pa.Table, new: pa.Table, col: str, root: str) -> set[str]:
    keep = _paths(repo, new, col)
    return {p for p in _paths(repo, old, col) - keep if _inside(Path(p), Path(root))}


def _pending_prunes(work: Path) -> bool:
    return any(work.glob("prune-*.json"))


def _prune_pending(repo: BenchmarkRepo, pending: Path, current: pa.Table, col: str, root: str) -> int:
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


class _BatchRunner:
    """The picklable map function: process a batch, commit it atomically, return the primary rows."""

    def __init__(self, stage: Stage, work: str, digests: dict[str, str], repo_root: str = "") -> None:
        self.stage = stage
        self.work = work
        self.digests = digests
        self.repo_root = repo_root
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage, "work": self.work, "digests": self.digests, "repo_root": self.repo_root,
                "_ready": False}

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not self._ready:
            self.stage.setup()
            self._ready = True
        results = self.stage.process(batch)
        tables = {
            cfg: to_arrow(_as_rows(results.get(cfg, [])), schema.features_for(cfg)) for cfg in self.stage.outputs
        }
        keys = [str(k) for k in batch[self.stage.input_key]]
        files = _owned_identities(self.stage, tables, self.repo_root)
        commit_batch(Path(self.work), tables, keys, self.stage, [self.digests.get(k) for k in keys], files)
        return tables[self.stage.outputs[0]].to_pydict()


def _owned_identities(stage: Stage, tables: dict[str, pa.Table], repo_root: str) -> dict[str, list[list[Any]]]:
    """unit -> [[file, size, mtime_ns], ...] of the files its rows own, as they are at commit time."""
    out: dict[str, list[list[Any]]] = {}
    for cfg, spec in stage.owned_files.items():
        t = tables.get(cfg)
        if t is None or not t.num_rows or stage.input_key not in t.column_names or spec[0] not in t.column_names:
            continue
        modes = t.column("clip_mode").to_pylist() if "clip_mode" in t.column_names else [None] * t.num_rows
        for unit, p, mode in zip(t.column(stage.input_key).to_pylist(), t.column(spec[0]).to_pylist(), modes):
            if not p or mode == "virtual":
                continue
            path = p if os.path.isabs(p) else os.path.join(repo_root, p)
            ident = _file_identity(path)
            if ident is not None:
                out.setdefault(str(unit), []).append([path, *ident])
    return out


def _as_rows(value: dict[str, list[Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        cols = list(value)
        n = len(value[cols[0]]) if cols else 0
        return [{c: value[c][i] for c in cols} for i in range(n)]
    return list(value)


def commit_batch(work: Path, tables: dict[str, pa.Table], keys: Iterable[str], stage: Stage,
                 digests: Sequence[str | None] | None = None,
                 files: dict[str, list[list[Any]]] | None = None) -> Path:
    """Write a batch into a temp directory, then rename it into place: a batch is all there or absent."""
    keys = list(keys)
    status_rows = tables[stage.status_config]
    failed: set[str] = set()
    if status_rows.num_rows and stage.input_key in status_rows.column_names:
        for k, st in zip(status_rows.column(stage.input_key).to_pylist(), status_rows.column("status").to_pylist()):
            if st in RETRYABLE:
                failed.add(k)
    name = f"{_batch_prefix()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp = work / f"{TMP_PREFIX}{name}"
    tmp.mkdir(parents=True)
    for cfg, table in tables.items():
        blob = table_to_parquet_bytes(table)
        with open(tmp / f"{cfg}.parquet", "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
    done: dict[str, Any] = {"keys": keys, "failed": sorted(failed), "meta": stage.batch_meta()}
    if digests is not None:
        done["digests"] = list(digests)
    if files:
        done["files"] = files
    with open(tmp / DONE_FILE, "w") as f:
        json.dump(done, f)
        f.flush()
        os.fsync(f.fileno())
    final = work / f"batch-{name}"
    os.rename(tmp, final)
    return final


def committed_batches(work: Path) -> list[Path]:
    """Committed batch directories in commit order; half-written temp dirs are removed on the way."""
    if not work.exists():
        return []
    for tmp in work.glob(f"{TMP_PREFIX}*"):
        if tmp.is_dir() and time.time() - tmp.stat().st_mtime > 3600:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in work.glob("batch-*") if p.is_dir())


def _read_done(batch: Path) -> dict[str, Any]:
    return json.loads((batch / DONE_FILE).read_text())


def completed_keys(work: Path, retry_failed: bool = False) -> set[str]:
    """Input keys committed in ``work`` (any digest); with ``retry_failed``, minus those whose latest
    outcome failed. Progress reports use it; what is *done* for a given input is :class:`WorkIndex`'s."""
    status: dict[str, bool] = {}
    for b in committed_batches(work):
        d = _read_done(b)
        failed = set(d.get("failed", []))
        for k in d["keys"]:
            status[k] = k in failed
    return {k for k, bad in status.items() if not (retry_failed and bad)}


def batch_metas(work: Path, since: str = "") -> list[dict[str, Any]]:
    """The ``meta`` of every committed batch (optionally only those committed after ``since``)."""
    return [
        _read_done(b).get("meta", {}) for b in committed_batches(work) if b.name[len("batch-"):] >= since
    ]


def live_batch_metas(stage: Stage, repo: BenchmarkRepo, ds: Dataset) -> list[dict[str, Any]]:
    """Metas of the batches whose rows the current input's units come from (cost of what is in the repo)."""
    index = WorkIndex(stage.work_path(repo))
    keys = unit_keys(ds, stage.input_key)
    owners = {e.batch for k, d in zip(keys, stage.unit_digests(ds)) if (e := index.lookup(k, d)) is not None}
    return [index.done[i].get("meta", {}) for i in sorted(owners)]


def keys_committed_since(work: Path, since: str) -> set[str]:
    done: set[str] = set()
    for b in committed_batches(work):
        if b.name[len("batch-"):] >= since:
            done.update(_read_done(b)["keys"])
    return done


def select_rows(index: WorkIndex, config: str, owner: dict[str, int], unit_col: str) -> pa.Table:
    """Rows of ``config`` for the units in ``owner`` (unit key -> the batch whose commit is current)."""
    feats = schema.features_for(config)
    by_batch: dict[int, list[str]] = {}
    for k, b in owner.items():
        by_batch.setdefault(b, []).append(k)
    parts: list[pa.Table] = []
    for b in sorted(by_batch):
        t = pq.ParquetFile(index.batches[b] / f"{config}.parquet").read().cast(feats.arrow_schema)
        if not t.num_rows:
            continue
        if unit_col in t.column_names:
            t = t.filter(pc.is_in(t[unit_col], value_set=pa.array(by_batch[b], pa.string())))
        parts.append(t)
    if not parts:
        return feats.arrow_schema.empty_table()
    table = pa.concat_tables(parts)
    return _dedupe_latest(table, schema.primary_key(config))


def _dedupe_latest(table: pa.Table, pk: tuple[str, ...]) -> pa.Table:
    """Keep the last row per primary key (rows come in commit order): a safety net, units never overlap."""
    keys = list(zip(*[table.column(c).to_pylist() for c in pk]))
    last = {k: i for i, k in enumerate(keys)}
    if len(last) == len(keys):
        return table
    return table.take(pa.array(sorted(last.values()), pa.int64()))


def _unit_rows(index: WorkIndex, configs: Sequence[str], owner: dict[str, int],
               unit_col: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for cfg in configs:
        t = select_rows(index, cfg, owner, unit_col)
        if unit_col not in t.column_names:
            continue
        for r in t.to_pylist():
            out.setdefault(str(r[unit_col]), {}).setdefault(cfg, []).append(r)
    return out


def gather_table(work: Path, config: str, unit_col: str = "") -> pa.Table:
    """All committed rows of ``config`` (every unit ever committed, latest commit per unit wins).

    Kept for tools that read a work directory without its input; stages gather with :meth:`Stage.gather`,
    which keeps only the current input's units.
    """
    index = WorkIndex(work)
    owner = {k: max(per.values(), key=lambda e: e.batch).batch for k, per in index.entries.items()}
    return select_rows(index, config, owner, unit_col)


__all__ = [
    "MissingChunksError", "Stage", "StageResult", "WorkIndex", "commit_batch", "completed_keys", "gather_table",
    "select_rows", "stable_hash", "__version__",
]
