"""The resumable ``Dataset.map`` engine every stage runs on.

A stage is a config dataclass plus ``process(batch) -> {config: columns}``. ``Stage.apply`` runs one
``Dataset.map(batched=True)`` over the rows this process owns and not yet done; each finished batch is
committed as one directory renamed into place (atomic), holding a parquet file per output config and
the input keys it completed. A kill -9 loses at most the batch in flight; a rerun skips committed keys.
``gather`` then turns all committed batches into the repo's configs (latest commit wins per primary key,
so ``--rerun`` and ``--retry-failed`` supersede older rows instead of duplicating them).

Work lives in ``<repo>/.lovr/work/<stage>/<fingerprint>/``: a changed model, prompt or parameter is a
different fingerprint, hence a fresh computation, never a mix.
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from datasets.distributed import split_dataset_by_node

from lovr_hf import __version__, schema
from lovr_hf.dist import Shard, barrier
from lovr_hf.repo import TMP_PREFIX, BenchmarkRepo, redact, table_to_parquet_bytes, to_arrow

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"
RETRYABLE = (schema.FAILED, schema.ERROR)


def stable_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclasses.dataclass
class StageResult:
    """What one ``apply`` did (for summaries); the rows themselves are in the repo after ``gather``."""

    processed: int = 0
    skipped_done: int = 0
    batches: int = 0
    seconds: float = 0.0
    outputs: dict[str, Dataset] = dataclasses.field(default_factory=dict)
    stats: dict[str, float] = dataclasses.field(default_factory=dict)


class Stage(ABC):
    """Base of segment / caption / merge / embed.

    Subclasses set ``name``, ``input_key`` (column identifying a unit of work in the input rows),
    ``outputs`` (configs produced; rows of ``status_config`` carry ``input_key`` and a status) and
    implement ``process``. Runtime-only fields of the config (paths, worker counts) are listed in
    ``runtime_fields`` so they do not change the fingerprint.
    """

    name: ClassVar[str]
    input_key: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    status_config: ClassVar[str]
    runtime_fields: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"

    def __init__(self, config: Any) -> None:
        self.config = config
        self.batch_size = int(getattr(config, "batch_size", 1) or 1)

    # ---- identity ----------------------------------------------------------------------------------
    def fingerprint_payload(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
        for f in self.runtime_fields:
            cfg.pop(f, None)
        # credentials (api_key in backend_options...) never enter a fingerprint or the stage manifest
        return {"stage": self.name, "version": self.version, "config": redact(cfg)}

    def fingerprint(self) -> str:
        return stable_hash(self.fingerprint_payload())

    # ---- work --------------------------------------------------------------------------------------
    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models etc. Called lazily in the process that runs ``process`` (never pickled)."""

    def prepare(self, todo: Dataset) -> None:  # noqa: B027 - optional hook
        """Called once with the rows about to be processed (e.g. to prefetch ahead of the map)."""

    def batch_meta(self) -> dict[str, Any]:
        """Extra numbers stored with each committed batch (timings, token counts) for summaries."""
        return {}

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
        """Process the rows of ``ds`` owned by ``shard`` that are not done yet, then gather (rank 0)."""
        shard = shard or Shard()
        t0 = time.perf_counter()
        work = self.work_path(repo)
        work.mkdir(parents=True, exist_ok=True)
        self._write_manifest(work)
        # contiguous shard of the FULL input (same rows for shard i on every rerun), as datasets does it
        mine = split_dataset_by_node(ds, shard.rank, shard.world_size) if shard.world_size > 1 else ds
        if rerun:  # a killed --rerun resumes itself: only batches since it started count
            done = keys_committed_since(work, self._started_marker(work, shard))
        else:
            done = completed_keys(work, retry_failed=retry_failed)
        keys = mine[self.input_key]
        todo_idx = [i for i, k in enumerate(keys) if k not in done]
        todo = mine.select(todo_idx)
        res = StageResult(processed=len(todo), skipped_done=len(mine) - len(todo))
        logger.info(
            "%s (%s): %d to do, %d already done [%s]",
            self.name, shard.describe(), len(todo), res.skipped_done, self.fingerprint(),
        )
        if len(todo):
            primary = self.outputs[0]
            self.prepare(todo)
            fn = _BatchRunner(self, str(work))
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
        if gather and (shard.is_main or not shard.launched) and self.all_done(ds, work):
            res.outputs.update(self.gather(repo))
        elif gather and not shard.launched and shard.world_size > 1:
            logger.info("%s: other chunks still running; run again with --gather once all are done", self.name)
        res.seconds = time.perf_counter() - t0
        return res

    def work_path(self, repo: BenchmarkRepo) -> Path:
        return repo.work_dir(self.name, self.fingerprint())

    def _write_manifest(self, work: Path) -> None:
        manifest = work / "stage.json"
        if not manifest.exists():
            from lovr_hf.repo import atomic_write_text

            atomic_write_text(manifest, json.dumps(self.fingerprint_payload(), indent=2, default=str))

    def _started_marker(self, work: Path, shard: Shard) -> str:
        """--rerun: only batches committed after this moment count as done (older ones get superseded)."""
        marker = work / f"rerun-{shard.rank}-of-{shard.world_size}.json"
        from lovr_hf.repo import atomic_write_text

        if not marker.exists():
            atomic_write_text(marker, json.dumps({"since": _batch_prefix()}))
        return json.loads(marker.read_text())["since"]

    def all_done(self, ds: Dataset, work: Path) -> bool:
        return set(ds[self.input_key]) <= completed_keys(work)

    def gather(self, repo: BenchmarkRepo) -> dict[str, Dataset]:
        """Committed batches -> one table per output config in the repo (latest batch wins per key)."""
        work = self.work_path(repo)
        out: dict[str, Dataset] = {}
        for config in self.outputs:
            table = gather_table(work, config, self.input_key)
            repo.write(config, table)
            out[config] = repo.read(config)
        for marker in work.glob("rerun-*.json"):
            marker.unlink(missing_ok=True)
        return out


def _batch_prefix() -> str:
    return f"{time.time_ns():020d}"


class _BatchRunner:
    """The picklable map function: process a batch, commit it atomically, return the primary rows."""

    def __init__(self, stage: Stage, work: str) -> None:
        self.stage = stage
        self.work = work
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage, "work": self.work, "_ready": False}

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not self._ready:
            self.stage.setup()
            self._ready = True
        results = self.stage.process(batch)
        tables = {
            cfg: to_arrow(_as_rows(results.get(cfg, [])), schema.features_for(cfg)) for cfg in self.stage.outputs
        }
        commit_batch(Path(self.work), tables, batch[self.stage.input_key], self.stage)
        return tables[self.stage.outputs[0]].to_pydict()


def _as_rows(value: dict[str, list[Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        cols = list(value)
        n = len(value[cols[0]]) if cols else 0
        return [{c: value[c][i] for c in cols} for i in range(n)]
    return list(value)


def commit_batch(work: Path, tables: dict[str, pa.Table], keys: Iterable[str], stage: Stage) -> Path:
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
    with open(tmp / DONE_FILE, "w") as f:
        json.dump({"keys": keys, "failed": sorted(failed), "meta": stage.batch_meta()}, f)
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


def _read_done(batch: Path) -> dict[str, list[str]]:
    return json.loads((batch / DONE_FILE).read_text())


def completed_keys(work: Path, retry_failed: bool = False) -> set[str]:
    """Input keys committed in ``work``; with ``retry_failed``, minus those whose latest outcome failed."""
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


def keys_committed_since(work: Path, since: str) -> set[str]:
    done: set[str] = set()
    for b in committed_batches(work):
        if b.name[len("batch-"):] >= since:
            done.update(_read_done(b)["keys"])
    return done


def gather_table(work: Path, config: str, unit_col: str = "") -> pa.Table:
    """All committed rows of ``config``; where batches overlap, rows of the latest batch win.

    Superseding is per input unit: a later batch that re-did a unit replaces *all* rows that unit
    produced earlier (a re-segmented video may yield fewer clips than before).
    """
    feats = schema.features_for(config)
    batches = committed_batches(work)
    owner: dict[str, int] = {}
    for i, b in enumerate(batches):
        for k in _read_done(b)["keys"]:
            owner[k] = i
    pk = schema.primary_key(config)
    parts: list[pa.Table] = []
    seen: dict[tuple[Any, ...], int] = {}
    for i, b in enumerate(batches):
        t = pq.read_table(b / f"{config}.parquet").cast(feats.arrow_schema)
        parts.append(t)
        seen_rows = zip(*[t.column(c).to_pylist() for c in pk]) if t.num_rows else []
        for j, key in enumerate(seen_rows):
            seen[key] = (i, j)  # type: ignore[assignment]
    keep: list[pa.Table] = []
    for i, t in enumerate(parts):
        if not t.num_rows:
            continue
        keys = list(zip(*[t.column(c).to_pylist() for c in pk]))
        units = t.column(unit_col).to_pylist() if unit_col in t.column_names else [None] * t.num_rows
        mask = [seen[k] == (i, j) and (u is None or owner.get(u, i) == i) for j, (k, u) in enumerate(zip(keys, units))]
        keep.append(t.filter(pa.array(mask)))
    if not keep:
        return feats.arrow_schema.empty_table()
    return pa.concat_tables(keep)


__all__ = ["Stage", "StageResult", "stable_hash", "completed_keys", "gather_table", "commit_batch", "__version__"]
