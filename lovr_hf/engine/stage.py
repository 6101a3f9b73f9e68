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

The state on disk (batches, their index, records of inputs and gathers) is :mod:`lovr_hf.engine.workdir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.engine.batch_runner import BatchRunner as _BatchRunner
from lovr_hf.engine.dist import Shard, barrier, shard_range
from lovr_hf.engine.workdir import (
    WorkIndex,
    batch_prefix,
    file_identity,
    latest_digest,
    log_removed,
    mark_chunk,
    missing_message,
    patched,
    read_gathered,
    read_inputs,
    record_gathered,
    select_rows,
    stable_hash,
    unit_rows,
    value_digest,
    write_inputs,
)
from lovr_hf.locks import gather_locked, writer_lock
from lovr_hf.redact import redact
from lovr_hf.repo import BenchmarkRepo, atomic_write_text

logger = logging.getLogger(__name__)

PARTIAL_KEY = "partial"  # run_config.json entry listing configs gathered with units missing


class MissingChunksError(ValueError):
    """``--gather`` found units not committed: which chunks still have work, and how to proceed."""


def unit_keys(ds: Dataset, col: str) -> list[str]:
    """The key column as strings, through Arrow (a datasets Column iterates row by row: slow at 40k rows)."""
    if not len(ds):
        return []
    return [str(k) for k in ds.with_format("arrow")[col].to_pylist()]


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


class Stage(ABC):
    """Base of segment / caption / merge / embed.

    Subclasses set ``name``, ``input_key`` (column identifying a unit of work in the input rows),
    ``outputs`` (configs produced; rows of ``status_config`` carry ``input_key`` and a status) and
    implement ``process``. The fingerprint is declared, not coded: ``fingerprint_fields`` names the config
    fields that change the output (default: all but the runtime-only ones listed in ``runtime_fields``: paths,
    worker counts), ``fingerprint_config`` normalises them and ``fingerprint_extra`` adds what is not a field.

    Optional, per stage (or set on an instance by the caller):

    - ``unit_digest(row)``: what identifies a unit's inputs (default: the whole row minus its key);
    - ``digest_files``: input columns naming files whose identity (size, mtime) enters the digest, so a
      file replaced under the same name is recomputed;
    - ``verify_unit(key, rows)``: check a reused unit's outputs still hold (e.g. its clip files exist);
      a unit that fails is recomputed;
    - ``digest_column``: a column of the primary output that receives the digest of the row's unit (rows
      carry their unit key under ``input_key``), so a reader of the published table can tell a row made
      for other inputs than the current ones without the work state (``lovr eval --calc_pass``).
    """

    name: ClassVar[str]
    input_key: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    status_config: ClassVar[str]
    runtime_fields: ClassVar[tuple[str, ...]] = ()
    #: the config fields that change this stage's output (its fingerprint); None: every field of the config
    #: except ``runtime_fields``
    fingerprint_fields: ClassVar[tuple[str, ...] | None] = None
    #: the payload key of the selected config fields; None for a stage whose identity is not its config's
    #: fields (embeddings: the model's payload; merge: the LLM's identity): all of it is its fingerprint_extra
    fingerprint_config_key: ClassVar[str | None] = "config"
    version: ClassVar[str] = "1"
    digest_files: tuple[str, ...] = ()
    digest_column: ClassVar[str | None] = None
    #: gather by patching the previous tables (only changed units' batches are read)
    incremental_gather: bool = True

    def __init__(self, config: Any) -> None:
        self.config = config
        self.batch_size = int(getattr(config, "batch_size", 1) or 1)
        self.wrote = False  # set by a gather that changed the repo

    # ---- identity ----------------------------------------------------------------------------------
    def fingerprint_payload(self) -> dict[str, Any]:
        """What the fingerprint hashes, built from the declarations: ``fingerprint_fields`` (or every config
        field but ``runtime_fields``), normalised by :meth:`fingerprint_config`, plus :meth:`fingerprint_extra`."""
        payload: dict[str, Any] = {"stage": self.name, "version": self.version}
        if self.fingerprint_config_key is not None:
            cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
            if self.fingerprint_fields is not None:
                cfg = {f: cfg[f] for f in self.fingerprint_fields if f in cfg}
            for f in self.runtime_fields:
                cfg.pop(f, None)
            # credentials (api_key in backend_options...) never enter a fingerprint or the stage manifest
            payload[self.fingerprint_config_key] = redact(self.fingerprint_config(cfg))
        return {**payload, **self.fingerprint_extra()}

    def fingerprint_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """Hook: the selected config fields in one spelling per setting, without those that do not apply (e.g.
        encoder settings of a mode that encodes nothing). Default: as they are."""
        return cfg

    def fingerprint_extra(self) -> dict[str, Any]:
        """Hook: entries beside ``config`` that change the output without being config fields (a prompt's hash,
        a resolved model revision). Default: none."""
        return {}

    def fingerprint(self) -> str:
        return stable_hash(self.fingerprint_payload())

    def unit_digest(self, row: dict[str, Any]) -> str:
        """Digest of one unit's inputs: the row minus its key (plus file identities of ``digest_files``)."""
        body = {k: v for k, v in row.items() if k != self.input_key}
        for col in self.digest_files:
            body[f"{col}@file"] = file_identity(row.get(col))
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
    def apply(self, ds: Dataset, repo: BenchmarkRepo, *, shard: Shard | None = None, **kw: Any) -> StageResult:
        """Process the units of ``ds`` owned by ``shard`` not committed with their current digest, then
        gather when every unit is committed (rank 0 of a launched job; else whoever finds it so).

        One writer per (stage, chunk) at a time (:func:`lovr_hf.locks.writer_lock`): a second run of the
        same stage on the same repo waits, then finds the work committed."""
        shard = shard or Shard()
        with writer_lock(repo.work_root, self.name, shard.rank, shard.world_size):
            return self._apply(ds, repo, shard=shard, **kw)

    def _apply(
        self,
        ds: Dataset,
        repo: BenchmarkRepo,
        *,
        shard: Shard,
        num_proc: int | None = None,
        rerun: bool = False,
        retry_failed: bool = False,
        gather: bool = True,
    ) -> StageResult:
        t0 = time.perf_counter()
        work = self.work_path(repo)
        work.mkdir(parents=True, exist_ok=True)
        self._write_manifest(work)
        keys = unit_keys(ds, self.input_key)
        _check_unique(keys, self.name, self.input_key)
        digests = self.unit_digests(ds)
        if gather:  # the full input of this stage (a subset apply with gather=False must not replace it)
            write_inputs(work, keys, digests)
        if shard.world_size > 1 and not shard.launched:
            mark_chunk(work, shard)
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
            fn = _BatchRunner(self, str(work), {keys[i]: digests[i] for i in todo_idx})
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
        """Indices of reused units whose outputs no longer hold: rejected by the stage's own ``verify_unit``
        (a clip file missing or rewritten since the unit was committed). Those units are recomputed."""
        bad: set[int] = set()
        if type(self).verify_unit is not Stage.verify_unit and done_idx:
            rest = done_idx
            owner = {keys[i]: e.batch for i in rest if (e := index.lookup(keys[i], digests[i])) is not None}
            rows = unit_rows(index, self.outputs, owner, self.input_key)
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
            atomic_write_text(marker, json.dumps({"since": batch_prefix()}))
        return json.loads(marker.read_text())["since"]

    def committed_owners(self, index: WorkIndex, ds: Dataset) -> dict[str, int]:
        """unit key -> index of the batch holding its commit with the current digest (committed units only)."""
        keys = unit_keys(ds, self.input_key)
        return {k: e.batch for k, d in zip(keys, self.unit_digests(ds)) if (e := index.lookup(k, d)) is not None}

    def committed_rows(self, repo: BenchmarkRepo, ds: Dataset, config: str) -> pa.Table:
        """Rows of ``config`` for the units of ``ds`` committed so far (no gather: other chunks may be running)."""
        index = WorkIndex(self.work_path(repo))
        return select_rows(index, config, self.committed_owners(index, ds), self.input_key)

    def all_done(self, ds: Dataset, work: Path) -> bool:
        return not self.missing_units(ds, work)

    def missing_units(self, ds: Dataset, work: Path) -> list[str]:
        """Keys of ``ds`` not committed with their current digest in ``work``."""
        keys = unit_keys(ds, self.input_key)
        index = WorkIndex(work)
        return [k for k, d in zip(keys, self.unit_digests(ds)) if index.lookup(k, d) is None]

    # ---- gather ------------------------------------------------------------------------------------
    @gather_locked
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
            recorded = read_inputs(work)
            if recorded is None:  # nothing recorded (work of an older version): every committed unit
                keys = sorted(index.entries)
                digests = [latest_digest(index, k) for k in keys]
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
            raise MissingChunksError(missing_message(self.name, work, len(keys), missing))
        if missing:
            logger.warning("%s: gathering with %d of %d units missing (--allow-partial)", self.name, len(missing),
                           len(keys))
        owners = {k: index.batch_name(b) for k, b in owner.items()}
        signature = stable_hash([self.fingerprint(), sorted(owners.items())])
        prev = read_gathered(repo, work, self.outputs)
        broken = repo.verify([cfg for cfg in self.outputs if repo.has(cfg)])
        for cfg, why in broken.items():  # a tampered or truncated output: rebuilt in full from the work state
            logger.warning("%s: %s is corrupt (%s): rebuilding it from the work state", self.name, cfg, why)
            prev = None
        out: dict[str, Dataset] = {}
        if prev is not None and prev[0] == signature:
            logger.info("%s: nothing changed since the last gather; configs kept", self.name)
        else:
            olds = {cfg: repo.read_table(cfg) if repo.has(cfg) and cfg not in broken else None
                    for cfg in self.outputs}
            if prev is not None and self.incremental_gather:
                changed = {k: b for k, b in owner.items() if prev[1].get(k) != owners[k]}
                dropped = (set(prev[1]) - set(owners)) | set(changed)
                tables = {cfg: patched(olds[cfg], index, cfg, changed, dropped, self.input_key) for cfg in self.outputs}
                logger.info("%s: %d units changed, %d removed since the last gather", self.name, len(changed),
                            len(set(prev[1]) - set(owners)))
            else:
                tables = {cfg: select_rows(index, cfg, owner, self.input_key) for cfg in self.outputs}
            self.write_outputs(repo, tables, set(keys), olds)
            self.wrote = True
            record_gathered(repo, work, signature, self.outputs, owners)
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
        """Replace each output config with its gathered table; log what went."""
        for cfg, table in tables.items():
            old = olds[cfg] if olds is not None else (repo.read_table(cfg) if repo.has(cfg) else None)
            log_removed(self.name, cfg, old, table, self.input_key, units)
            repo.write(cfg, table)


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


def live_batch_metas(stage: Stage, repo: BenchmarkRepo, ds: Dataset) -> list[dict[str, Any]]:
    """Metas of the batches whose rows the current input's units come from (cost of what is in the repo)."""
    index = WorkIndex(stage.work_path(repo))
    return [index.done[i].get("meta", {}) for i in sorted(set(stage.committed_owners(index, ds).values()))]


__all__ = ["MissingChunksError", "Stage", "StageResult", "live_batch_metas"]
