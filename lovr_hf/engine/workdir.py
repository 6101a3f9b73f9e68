"""The engine's state on disk: committed batches, their index by (unit key, input digest), and records.

``<repo>/.lovr/work/<stage>/<fingerprint>/`` holds ``batch-<time>-<pid>-<rand>/`` directories, each renamed
into place when complete (a parquet file per output config and ``done.json``: the unit keys, their input
digests, which failed, timings), plus
``inputs.parquet`` (the latest apply's units: what ``--gather`` builds), ``chunks-<N>.json`` (manual chunk
counts seen, to name missing chunks) and ``gathered.json`` / ``gathered-owners.parquet`` (what the last
gather wrote: a rerun with nothing new skips it, one with a few changed units patches it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lovr_hf import schema
from lovr_hf.engine.dist import Shard, shard_range
from lovr_hf.integrity import ENV_FAULT_TEXT, CorruptStateError, environment_fault, sha256_hex
from lovr_hf.repo import (
    TMP_PREFIX,
    BenchmarkRepo,
    _host_tag,
    _pid_alive,
    atomic_write_bytes,
    atomic_write_text,
    table_to_parquet_bytes,
)

logger = logging.getLogger(__name__)
CORRUPT_PREFIX = "corrupt-"  # a garbled batch set aside (its units are recomputed); lovr doctor lists them

DONE_FILE = "done.json"
INPUTS_FILE = "inputs.parquet"  # the (key, digest) list of the latest apply: what --gather builds from
GATHERED_FILE = "gathered.json"  # what the last gather wrote (a rerun with nothing new skips the write)
GATHERED_OWNERS = "gathered-owners.parquet"  # unit -> batch of the last gather (the next one patches it)
RETRYABLE = (schema.FAILED, schema.ERROR)


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
class _Entry:
    batch: int  # index into WorkIndex.batches
    failed: bool
    env: bool = False  # failed by the machine (disk full, permissions): retried by a plain rerun


class WorkIndex:
    """Committed batches of one work directory and, per unit key, the latest commit for each digest.

    Batches of versions before digests existed carry none: such a commit is reused for a key that has no
    digest-carrying commit (logged), so upgrading never recomputes a finished benchmark.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.batches = []
        self.done: list[dict[str, Any]] = []
        self.entries: dict[str, dict[str | None, _Entry]] = {}
        for b in committed_batches(work):
            d = read_done_or_set_aside(b)
            if d is None:
                continue
            i = len(self.batches)
            self.batches.append(b)
            self.done.append(d)
            failed = set(d.get("failed", []))
            env = set(d.get("env_failed", []))
            digests = d.get("digests") or [None] * len(d["keys"])
            for k, dg in zip(d["keys"], digests):
                self.entries.setdefault(k, {})[dg] = _Entry(i, k in failed, k in env)

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
        if e.env:  # the machine failed it (disk full...), not its input: a plain rerun retries it
            return False
        return not (retry_failed and e.failed)

    def legacy_units(self, keys: Iterable[str], digests: Iterable[str]) -> int:
        return sum(1 for k, d in zip(keys, digests) if self.lookup(k, d) is not None and d not in self.entries[k])


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------


def file_identity(path: Any) -> list[int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def batch_prefix() -> str:
    return f"{time.time_ns():020d}"


def latest_digest(index: WorkIndex, key: str) -> str | None:
    per = index.entries[key]
    return max(per, key=lambda d: per[d].batch)


# ---------------------------------------------------------------------------------------------------------
# inputs, chunks, partial gathers
# ---------------------------------------------------------------------------------------------------------


def write_inputs(work: Path, keys: list[str], digests: list[str]) -> None:
    table = pa.table({"key": pa.array(keys, pa.string()), "digest": pa.array(digests, pa.string())})
    blob = table_to_parquet_bytes(table)
    p = work / INPUTS_FILE
    if p.exists() and p.read_bytes() == blob:
        return
    atomic_write_bytes(p, blob)


def read_inputs(work: Path) -> tuple[list[str], list[str]] | None:
    p = work / INPUTS_FILE
    if not p.exists():
        return None
    t = pq.read_table(p)
    return t.column("key").to_pylist(), t.column("digest").to_pylist()


def mark_chunk(work: Path, shard: Shard) -> None:
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


def missing_message(stage: str, work: Path, n: int, missing: list[int]) -> str:
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


def record_gathered(repo: BenchmarkRepo, work: Path, signature: str, configs: Sequence[str],
                     owners: dict[str, str]) -> None:
    """What this gather wrote: its signature, the configs' shard files and each unit's batch (parquet)."""
    keys = sorted(owners)
    atomic_write_bytes(work / GATHERED_OWNERS, table_to_parquet_bytes(pa.table(
        {"key": pa.array(keys, pa.string()), "batch": pa.array([owners[k] for k in keys], pa.string())})))
    files = repo.config_files()
    atomic_write_text(work / GATHERED_FILE, json.dumps(
        {"signature": signature, "configs": {c: files.get(c) for c in configs}}, sort_keys=True))


def read_gathered(repo: BenchmarkRepo, work: Path, configs: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """(signature, unit -> batch) of the last gather, if the configs are still exactly what it wrote."""
    p, o = work / GATHERED_FILE, work / GATHERED_OWNERS
    if not (p.exists() and o.exists()) or any(work.glob("prune-*.json")):
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


def patched(old: pa.Table | None, index: WorkIndex, cfg: str, changed: dict[str, int], dropped: set[str],
             unit_col: str) -> pa.Table:
    """The previous table of ``cfg`` minus the rows of ``dropped`` units, plus the ``changed`` units' rows."""
    feats = schema.features_for(cfg)
    fresh = select_rows(index, cfg, changed, unit_col)
    if old is None or unit_col not in old.column_names:
        raise ValueError(f"incremental gather of {cfg} needs its previous table with {unit_col}")
    keep = old.filter(pc.invert(pc.is_in(old[unit_col], value_set=pa.array(sorted(dropped), pa.string()))))
    return dedupe_latest(pa.concat_tables([keep.cast(feats.arrow_schema), fresh]), schema.primary_key(cfg))


def commit_batch(work: Path, tables: dict[str, pa.Table], keys: Iterable[str], stage: Any,
                 digests: Sequence[str | None] | None = None) -> Path:
    """Write a batch into a temp directory, then rename it into place: a batch is all there or absent.

    A write the machine refuses (disk full, permissions) removes the temp directory and raises one
    :class:`~lovr_hf.integrity.EnvironmentFault` line; the rerun resumes. Units whose rows failed by such a
    fault (``env_failed``) are retried by a plain rerun, without ``--retry-failed``.
    """
    keys = list(keys)
    status_rows = tables[stage.status_config]
    failed: set[str] = set()
    env_failed: set[str] = set()
    if status_rows.num_rows and stage.input_key in status_rows.column_names:
        errs = (status_rows.column("error").to_pylist() if "error" in status_rows.column_names
                else [None] * status_rows.num_rows)
        for k, st, err in zip(status_rows.column(stage.input_key).to_pylist(),
                              status_rows.column("status").to_pylist(), errs):
            if st in RETRYABLE:
                failed.add(k)
                if err and ENV_FAULT_TEXT.search(str(err)):
                    env_failed.add(k)
    name = f"{batch_prefix()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp = work / f"{TMP_PREFIX}{_host_tag()}~{name}"
    try:
        tmp.mkdir(parents=True)
        hashes: dict[str, str] = {}
        for cfg, table in tables.items():
            blob = table_to_parquet_bytes(table)
            hashes[cfg] = sha256_hex(blob)
            _write_synced(tmp / f"{cfg}.parquet", blob)
        done: dict[str, Any] = {"keys": keys, "failed": sorted(failed), "meta": stage.batch_meta(),
                                "sha256": hashes}
        if env_failed:
            done["env_failed"] = sorted(env_failed)
        if digests is not None:
            done["digests"] = list(digests)
        _write_synced(tmp / DONE_FILE, json.dumps(done).encode("utf-8"))
        final = work / f"batch-{name}"
        os.rename(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        fault = environment_fault(exc, f"{stage.name}: committing a batch of {len(keys)} units in {work}")
        if fault is not None:
            raise fault from exc
        raise
    return final


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _stale_tmp(tmp: Path) -> bool:
    """A temp batch folder of a writer that is gone (this host, pid dead), or older than an hour."""
    m = re.fullmatch(re.escape(TMP_PREFIX) + r"(?P<host>[^~]+)~\d+-(?P<pid>\d+)-[0-9a-f]{6}", tmp.name)
    if m is not None and m.group("host") == _host_tag() and not _pid_alive(int(m.group("pid"))):
        return True
    try:
        return time.time() - tmp.stat().st_mtime > 3600
    except OSError:
        return False


def read_done(batch: Path) -> dict[str, Any]:
    """A batch's ``done.json``; ``ValueError``/``OSError`` when it is garbled (truncated, not JSON, no keys)."""
    d = _read_done(batch)
    if not isinstance(d, dict) or not isinstance(d.get("keys"), list):
        raise ValueError("no list of unit keys")
    return d


def batch_problem(batch: Path) -> str | None:
    """Why a committed batch cannot be trusted (``done.json`` garbled, a parquet file not matching the SHA-256
    of its commit), as ``<file> ...`` text, or None: the check ``lovr doctor`` reports (readers check the same
    on the way: :func:`read_done_or_set_aside`, :func:`read_batch_table`)."""
    try:
        done = read_done(batch)
    except (OSError, ValueError) as exc:
        return f"{DONE_FILE} is garbled ({str(exc).splitlines()[0][:80]})"
    for cfg, want in (done.get("sha256") or {}).items():
        p = batch / f"{cfg}.parquet"
        if not p.is_file() or sha256_hex(p.read_bytes()) != want:
            return f"{cfg}.parquet does not match the SHA-256 of its commit"
    return None


def read_done_or_set_aside(batch: Path) -> dict[str, Any] | None:
    """A batch's ``done.json``; a garbled one (truncated, not JSON, no keys) is renamed ``corrupt-...``
    with a warning, so its units are recomputed instead of every command ending in a traceback."""
    try:
        return read_done(batch)
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError) and not batch.exists():
            return None  # set aside meanwhile by another reader
        aside = batch.with_name(CORRUPT_PREFIX + batch.name)
        try:
            os.rename(batch, aside)
        except OSError:
            pass
        logger.warning("work state: %s/%s is garbled (%s): set aside as %s; its units are recomputed",
                       batch.parent.name, batch.name, str(exc).splitlines()[0][:120], aside.name)
        return None


def read_batch_table(batch: Path, config: str, done: dict[str, Any] | None = None) -> pa.Table:
    """One output table of a committed batch, checked against the SHA-256 its commit recorded."""
    p = batch / f"{config}.parquet"
    try:
        blob = p.read_bytes()
        want = (done or {}).get("sha256", {}).get(config)
        if want and sha256_hex(blob) != want:
            raise ValueError("content does not match the SHA-256 recorded at commit")
        return pq.read_table(p)  # the checked file (see BenchmarkRepo._tables: no in-memory parse)
    except (OSError, ValueError, pa.ArrowException) as exc:
        root = batch.parents[4] if len(batch.parents) > 4 else batch.parent
        raise CorruptStateError(f"work state {batch} is garbled ({str(exc).splitlines()[0][:120]}); repair: "
                                f"lovr doctor --repo {root} --fix (sets it aside), then rerun the same command "
                                "(recomputes its units)") from None


def committed_batches(work: Path) -> list[Path]:
    """Committed batch directories in commit order; half-written temp dirs are removed on the way."""
    if not work.exists():
        return []
    for tmp in work.glob(f"{TMP_PREFIX}*"):
        if tmp.is_dir() and _stale_tmp(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in work.glob("batch-*") if p.is_dir())


def _read_done(batch: Path) -> dict[str, Any]:
    return json.loads((batch / DONE_FILE).read_text())


def completed_keys(work: Path, retry_failed: bool = False) -> set[str]:
    """Input keys committed in ``work`` (any digest); with ``retry_failed``, minus those whose latest
    outcome failed. Progress reports use it; what is *done* for a given input is :class:`WorkIndex`'s."""
    status: dict[str, bool] = {}
    for b in committed_batches(work):
        d = read_done_or_set_aside(b)
        if d is None:
            continue
        failed = set(d.get("failed", []))
        for k in d["keys"]:
            status[k] = k in failed
    return {k for k, bad in status.items() if not (retry_failed and bad)}


def batch_metas(work: Path, since: str = "") -> list[dict[str, Any]]:
    """The ``meta`` of every committed batch (optionally only those committed after ``since``)."""
    dones = (read_done_or_set_aside(b) for b in committed_batches(work) if b.name[len("batch-"):] >= since)
    return [d.get("meta", {}) for d in dones if d is not None]


def select_rows(index: WorkIndex, config: str, owner: dict[str, int], unit_col: str) -> pa.Table:
    """Rows of ``config`` for the units in ``owner`` (unit key -> the batch whose commit is current)."""
    feats = schema.features_for(config)
    by_batch: dict[int, list[str]] = {}
    for k, b in owner.items():
        by_batch.setdefault(b, []).append(k)
    parts: list[pa.Table] = []
    for b in sorted(by_batch):
        t = read_batch_table(index.batches[b], config, index.done[b]).cast(feats.arrow_schema)
        if not t.num_rows:
            continue
        if unit_col in t.column_names:
            t = t.filter(pc.is_in(t[unit_col], value_set=pa.array(by_batch[b], pa.string())))
        parts.append(t)
    if not parts:
        return feats.arrow_schema.empty_table()
    table = pa.concat_tables(parts)
    return dedupe_latest(table, schema.primary_key(config))


def dedupe_latest(table: pa.Table, pk: tuple[str, ...]) -> pa.Table:
    """Keep the last row per primary key (rows come in commit order): a safety net, units never overlap."""
    keys = list(zip(*[table.column(c).to_pylist() for c in pk]))
    last = {k: i for i, k in enumerate(keys)}
    if len(last) == len(keys):
        return table
    return table.take(pa.array(sorted(last.values()), pa.int64()))


def unit_rows(index: WorkIndex, configs: Sequence[str], owner: dict[str, int],
               unit_col: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for cfg in configs:
        t = select_rows(index, cfg, owner, unit_col)
        if unit_col not in t.column_names:
            continue
        for r in t.to_pylist():
            out.setdefault(str(r[unit_col]), {}).setdefault(cfg, []).append(r)
    return out


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
