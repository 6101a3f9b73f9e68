"""The benchmark repo: a Hugging Face dataset repo laid out on local disk.

Layout (what ``load_dataset(<dir>, <config>)`` and the Hub both read)::

    <repo>/README.md                      dataset card; YAML ``configs:`` lists every shard file explicitly
    <repo>/data/<config>/<config>-00000-of-00001-<fingerprint>.parquet
    <repo>/assets/*.png                   plots referenced from the card
    <repo>/run_config.json                the configuration of the last run (no secrets)
    <repo>/clips/<video_id>/<video_id>-Scene-NNN.mp4   clip files (default clip folder)
    <repo>/.lovr/                         work state (batch completions, locks); never uploaded

Shard names carry a content fingerprint and the card lists them one by one: with a glob, datasets'
cache key ignores which files match, and a rewritten repo (or another folder with the same name)
would silently serve stale rows.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Dataset, DatasetInfo, Features
from filelock import FileLock

from lovr_hf import schema
from lovr_hf.failures import UnknownName
from lovr_hf.integrity import (
    CorruptCardError,
    CorruptShardError,
    check_shards,
    corrupt_message,
    environment_fault,
    read_hashes,
    sha256_hex,
)
from lovr_hf.redact import install_log_redaction, redact

install_log_redaction()  # every lovr_hf log line goes through the one redaction rule (see lovr_hf.redact)

logger = logging.getLogger(__name__)

DATA_DIR = "data"
ASSETS_DIR = "assets"
WORK_DIR = ".lovr"
CARD = "README.md"
RUN_CONFIG = "run_config.json"
EMPTY_CONFIGS = "empty_configs.json"  # under WORK_DIR: configs that exist and hold no rows
DEFAULT_CLIPS_DIR = "clips"
MAX_SHARD_BYTES = 256 * 1024 * 1024
READ_RETRIES = 6  # a reader re-reads the index this many times when a shard moved under it
TMP_PREFIX = ".tmp-"

_CARD_BODY_START = "<!-- lovr_hf:card -->"
#: roots whose tables or run configuration this process changed since their card body was last written: the
#: command layer renders those cards once when the command ends (storage never renders; see ``lovr_hf.report.card``)
_CHANGED: set[Path] = set()
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: the card is read on every step


def _host_tag() -> str:
    """This host's name as it appears in temp names (no ``-``, so the name parses back)."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:32] or "host"


def _tmp_name(path: Path) -> str:
    """``.tmp-<name>-<host>-<pid>-<rand>``: host and pid let a later writer tell a dead writer's leftover."""
    return f"{TMP_PREFIX}{path.name}-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_tmp(path: Path) -> int:
    """Remove temp files of ``path`` left by writers that died (kill -9) between write and rename.

    Only temps written on this host by a process that no longer exists go: a live writer's temp (another
    rank writing the same file) is never touched, so its rename cannot fail. Returns how many went.
    """
    host = _host_tag()
    prefix = f"{TMP_PREFIX}{path.name}-"
    removed = 0
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*"):
        rest = tmp.name[len(prefix):]
        m = re.fullmatch(r"(.+)-(\d+)-[0-9a-f]{8}", rest)
        if m is None:  # the older naming without host/pid (``<name>-<rand>``): a previous version's leftover
            stale = re.fullmatch(r"[0-9a-f]{8}", rest) is not None
        else:
            stale = m.group(1) == host and not _pid_alive(int(m.group(2)))
        if stale:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a hidden temp name in the same folder, fsync, then rename: readers see old or new, never half.

    A writer killed between write and rename leaves its temp behind; the next write of the same file
    sweeps such leftovers (see ``sweep_stale_tmp``), so a resumed run ends with a clean folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(path)
    tmp = path.with_name(_tmp_name(path))
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        fault = environment_fault(exc, f"writing {path}")
        if fault is not None:
            raise fault from exc
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` in ``target``'s columns and types; columns a shard lacks (written by an older lovr_hf, before
    the column existed) are null, so an existing repo keeps loading after an upgrade."""
    for field in target:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, type=field.type))
    return table.select(target.names).cast(target)


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def to_arrow(data: Dataset | pa.Table | list[dict[str, Any]], features: Features) -> pa.Table:
    """Any row source -> an Arrow table cast to ``features`` (the schema is enforced on every write)."""
    if isinstance(data, Dataset):
        data = data.with_format("arrow")[:]
    if isinstance(data, list):
        unknown = {k for r in data for k in r} - set(features)
        if unknown:
            raise ValueError(f"columns not in the schema: {sorted(unknown)}")
        cols = {c: [r.get(c) for r in data] for c in features}
        return pa.Table.from_pydict(cols, schema=features.arrow_schema)
    missing = [c for c in features if c not in data.column_names]
    if missing:
        raise ValueError(f"missing columns: {missing}")
    return data.select(list(features)).cast(features.arrow_schema)


class BenchmarkRepo:
    """One benchmark folder. Every stage reads and writes its tables through this class."""

    def __init__(self, root: str | os.PathLike[str], *, media_url: str | None = None) -> None:
        self.root = Path(root).resolve()
        # where readers of the written shards find the clip files (``clips.video``): None = this folder
        # (repo-relative paths, as ``path``); ``lovr push`` stages with ``hf://datasets/<id>@<rev>`` (clip_video)
        self.media_url = media_url

    # ---- paths -----------------------------------------------------------------------------------------
    @property
    def card_path(self) -> Path:
        return self.root / CARD

    @property
    def work_root(self) -> Path:
        return self.root / WORK_DIR

    def work_dir(self, *parts: str) -> Path:
        return self.work_root.joinpath("work", *parts)

    def lock(self) -> FileLock:
        """Inter-process lock around card/config writes (several ranks or chunks may finish together); one
        instance per repo object, so that it nests (rendering the card holds it around the body's write)."""
        self.work_root.mkdir(parents=True, exist_ok=True)
        if getattr(self, "_lock", None) is None:
            self._lock = FileLock(str(self.work_root / "repo.lock"))
        return self._lock

    def resolve(self, path: str) -> Path:
        """Clip paths are stored relative to the repo root when inside it; absolute otherwise."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def relative(self, path: str | os.PathLike[str]) -> str:
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    # ---- card metadata ---------------------------------------------------------------------------------
    def _read_card(self) -> tuple[dict[str, Any], str]:
        if not self.card_path.exists():
            return {}, ""
        text = self.card_path.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            parts = text.split("---", 2)
            try:
                if len(parts) < 3:
                    raise ValueError("the front matter has no closing ---")
                meta = yaml.load(parts[1], Loader=_YAML_LOADER) or {}
                if not isinstance(meta, dict) or not isinstance(meta.get("configs", []) or [], list):
                    raise ValueError("the front matter is not a mapping with a configs list")
            except (yaml.YAMLError, ValueError) as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CorruptCardError(
                    f"{self.card_path}: the card's YAML (the shard index) is invalid ({why}); repair: "
                    f"lovr doctor --repo {self.root} --fix (rebuilds the index from the shards)") from None
            return meta, parts[2].lstrip("\n")
        return {}, text

    def config_files(self) -> dict[str, list[str]]:
        """config name -> shard paths (relative) as listed in the card: the single source of truth.

        Configs that exist but hold no rows map to ``[]``: they are not listed in the card (``datasets``
        cannot load a split without data, and the Hub viewer would show a broken config) and are recorded in
        the work state instead (:data:`EMPTY_CONFIGS`), so stages still see them as computed.
        """
        meta, _ = self._read_card()
        out: dict[str, list[str]] = {c: [] for c in self._read_empty()}
        for cfg in meta.get("configs", []) or []:
            if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
                raise CorruptCardError(f"{self.card_path}: the card's YAML (the shard index) is invalid (a configs "
                                       f"entry has no config_name); repair: lovr doctor --repo {self.root} --fix "
                                       "(rebuilds the index from the shards)")
            files: list[str] = []
            for df in cfg.get("data_files", []) or []:
                p = df.get("path") if isinstance(df, dict) else df
                files.extend([p] if isinstance(p, str) else list(p))
            out[cfg["config_name"]] = files
        return out

    def listed_configs(self) -> list[str]:
        """Configs listed in the card (what ``load_dataset`` and the Hub see): the non-empty ones."""
        return [c for c, fs in self.config_files().items() if fs]

    def empty_configs(self) -> list[str]:
        return sorted(c for c, fs in self.config_files().items() if not fs)

    def _read_empty(self) -> list[str]:
        p = self.work_root / EMPTY_CONFIGS
        try:
            return list(json.loads(p.read_text())) if p.exists() else []
        except ValueError:
            return []

    def _write_empty(self, names: Iterable[str]) -> None:
        names = sorted(set(names))
        if names or (self.work_root / EMPTY_CONFIGS).exists():
            atomic_write_text(self.work_root / EMPTY_CONFIGS, json.dumps(names))

    def configs(self) -> list[str]:
        return list(self.config_files())

    def has(self, config: str) -> bool:
        return config in self.config_files()

    # ---- tables ----------------------------------------------------------------------------------------
    def read_table(self, config: str) -> pa.Table:
        """The rows of ``config``, each shard checked against its name and recorded SHA-256 (once per process
        for unchanged files: :func:`lovr_hf.integrity.check_shards`).

        A writer switches the index (the card) before it deletes the old shards: a reader that read the
        old index and finds a shard gone reads the index again (a few times) instead of failing.
        """
        return self._read(config, None)

    def read_columns(self, config: str, columns: Iterable[str]) -> pa.Table:
        """Only ``columns`` of ``config`` (only those are parsed), verified like :meth:`read_table` (readers that
        want a few columns must not bypass the check by opening the shards themselves)."""
        return self._read(config, list(columns))

    def _read(self, config: str, columns: list[str] | None) -> pa.Table:
        for attempt in range(READ_RETRIES):
            files = self.config_files().get(config)
            if files is None:
                raise UnknownName(f"{self.root} has no config {config!r} (has: {', '.join(self.configs()) or 'none'})")
            try:
                return self._tables(config, files, columns)
            except FileNotFoundError:
                if attempt == READ_RETRIES - 1:
                    raise
                time.sleep(0.02 * 2**attempt)  # the index moved under us: read it again
        raise AssertionError("unreachable")

    def _tables(self, config: str, files: list[str], columns: list[str] | None) -> pa.Table:
        problem = check_shards(self.root, config, files, read_hashes(self.work_root))
        if problem:
            raise CorruptShardError(corrupt_message(self.root, config, problem))
        full = schema.features_for(config).arrow_schema
        target = full if columns is None else pa.schema([full.field(c) for c in columns])
        try:
            # parsed from the files just checked (pyarrow 26 parsing in-memory buffers sometimes aborts the
            # interpreter at exit: "terminate called without an active exception"); shards are never
            # rewritten in place with other bytes, so what is parsed is what was checked
            tables = [conform(_read_parquet(self.root / f, columns), target) for f in files]
        except FileNotFoundError:
            raise  # removed by a writer's index switch since: read_table reads the index again
        except (pa.ArrowException, OSError) as exc:  # a shard written by hand, or before fingerprints
            raise CorruptShardError(corrupt_message(self.root, config, f"cannot be read as parquet ({exc})")) from None
        if not tables:
            return target.empty_table()
        return pa.concat_tables(tables)

    def verify(self, configs: Iterable[str] | None = None) -> dict[str, str]:
        """config -> problem for listed configs whose shards are missing or altered (all of them by default)."""
        from lovr_hf.integrity import verify_listed

        return verify_listed(self.root, self.config_files(), read_hashes(self.work_root), configs)

    def read(self, config: str) -> Dataset:
        """The rows of ``config`` as an in-memory Dataset (no datasets cache involved)."""
        return Dataset(self.read_table(config), info=DatasetInfo(features=schema.features_for(config)))

    def read_or_empty(self, config: str) -> Dataset:
        if self.has(config):
            return self.read(config)
        return Dataset.from_list([], features=schema.features_for(config))

    def load(self, config: str, split: str = "train") -> Dataset:
        """Read through plain ``datasets.load_dataset`` exactly as a user would."""
        from datasets import load_dataset

        return load_dataset(str(self.root), config, split=split)

    def write(
        self,
        config: str,
        data: Dataset | pa.Table | list[dict[str, Any]],
        *,
        sort: bool = True,
    ) -> list[str]:
        """Replace ``config`` with ``data``: new fingerprinted shards, then the card's index, then old shards go.

        The card's body (statistics, plots) is not rendered here: :func:`lovr_hf.report.card.write_card` does it
        once per command (the ``lovr`` commands call it; a library caller calls it when it wants the card).

        ``clips.video`` is derived here, from this repo's root (or ``media_url``), whatever ``data`` holds.
        """
        from lovr_hf.clip_video import with_video, with_video_column

        # a published shard's video decodes (hf:// URLs); a local one holds repo-relative paths, which datasets
        # would open against the working directory: it is stored undecoded (lovr_hf.clip_video)
        feats = schema.hub_features(config) if self.media_url else schema.features_for(config)
        table = to_arrow(with_video_column(config, data), feats)
        if config == schema.CLIPS:
            table = with_video(table, self.root, self.media_url)
        if sort and table.num_rows:
            table = table.sort_by([(k, "ascending") for k in schema.sort_key(config)])
        # an empty table gets no shard at all: it is recorded as an empty config (see ``config_files``)
        n_shards = max(1, -(-table.nbytes // MAX_SHARD_BYTES)) if table.num_rows else 0
        step = -(-table.num_rows // n_shards) if table.num_rows else 0
        blobs = [table_to_parquet_bytes(table.slice(i * step, step)) for i in range(n_shards)]
        fp = hashlib.sha256(b"".join(blobs)).hexdigest()[:12]
        folder = self.root / DATA_DIR / config
        names = [f"{config}-{i:05d}-of-{n_shards:05d}-{fp}.parquet" for i in range(n_shards)]
        rel = [f"{DATA_DIR}/{config}/{n}" for n in names]
        with self.lock():
            hashes = {r: sha256_hex(b) for r, b in zip(rel, blobs)}
            for name, blob in zip(names, blobs):
                # a file of this name is reused only when its bytes are these: a tampered or truncated
                # shard under the right name is rewritten, never trusted
                if not _same_bytes(folder / name, blob):
                    atomic_write_bytes(folder / name, blob)
            files = self.config_files()
            self._record_hashes(hashes, {f for c, fs in files.items() if c != config for f in fs})
            files[config] = rel
            self._write_card(files)
            self._retire_old_shards(folder, set(names))
            for tmp in folder.glob(f"{TMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)
        logger.info("wrote %s: %d rows in %d shard(s)", config, table.num_rows, n_shards)
        return rel

    def _record_hashes(self, new: dict[str, str], kept: set[str] | None = None) -> None:
        """The recorded shard hashes become ``new`` plus the entries of ``kept`` (the other configs' listed
        shards; all recorded by default) still on disk: a write passes ``kept``, so the hashes of the shards it
        retires (this config's previous ones) go."""
        from lovr_hf.integrity import SHARD_HASHES

        known = {k: v for k, v in read_hashes(self.work_root).items()
                 if (kept is None or k in kept) and (self.root / k).exists()}
        known.update(new)
        atomic_write_text(self.work_root / SHARD_HASHES, json.dumps(known, indent=0, sort_keys=True))

    @staticmethod
    def _retire_old_shards(folder: Path, keep: set[str]) -> None:
        """Old shards go once the new index is in place: a reader that still holds the old index finds a
        shard gone and re-reads the index (``read_table``), so it never fails on a switch."""
        for old in folder.glob("*.parquet"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def remove(self, config: str) -> None:
        with self.lock():
            files = self.config_files()
            if files.pop(config, None) is not None:
                self._write_card(files)
                shutil.rmtree(self.root / DATA_DIR / config, ignore_errors=True)

    # ---- run configuration -----------------------------------------------------------------------------
    def write_run_config(self, config: dict[str, Any]) -> None:
        """Record the exact configuration of a run (the caller strips secrets; see ``redact``)."""
        atomic_write_text(self.root / RUN_CONFIG, json.dumps(redact(config), indent=2, sort_keys=True, default=str))
        _CHANGED.add(self.root)  # the card shows it

    def run_config(self) -> dict[str, Any]:
        p = self.root / RUN_CONFIG
        return json.loads(p.read_text()) if p.exists() else {}

    # ---- card ------------------------------------------------------------------------------------------
    def _write_card(self, files: dict[str, list[str]], body: str | None = None) -> None:
        """Write the card's YAML index of ``files`` (storage's part of the card) above ``body``, or above the
        body already there. Never renders: a card without a body gets a title until the command's end renders
        it (:func:`lovr_hf.report.card.write_card`)."""
        meta, old_body = self._read_card()
        listed = {c: fs for c, fs in files.items() if fs}
        empty = [c for c, fs in files.items() if not fs]
        # while the card changes, every config is in the card or in the empty list (never in neither)
        self._write_empty(set(empty) | set(self._read_empty()))
        order = [c for c in schema.FEATURES if c in listed] + sorted(c for c in listed if c not in schema.FEATURES)
        meta["configs"] = [
            {"config_name": c, "data_files": [{"split": "train", "path": list(listed[c])}]} for c in order
        ]
        meta.setdefault("pretty_name", f"LoVR-style long-video retrieval benchmark ({self.root.name})")
        meta.setdefault("tags", ["video", "long-video", "retrieval", "video-text", "lovr"])
        meta.setdefault("task_categories", ["text-retrieval", "video-text-to-text"])
        meta.setdefault("license", "other")
        if body is None:  # the index changed: the command layer renders the body when the command ends
            body = old_body or f"{_CARD_BODY_START}\n# {self.root.name}\n"
            _CHANGED.add(self.root)
        text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body
        atomic_write_text(self.card_path, text)
        self._write_empty(empty)

    def write_card_body(self, body: str) -> None:
        """Replace the card's body (rendered by :mod:`lovr_hf.report.card`) below the current index."""
        with self.lock():
            self._write_card(self.config_files(), body)
        _CHANGED.discard(self.root)


def changed_roots() -> list[Path]:
    """Roots this process changed (tables, run configuration) since their card body was last written."""
    return sorted(_CHANGED)


def forget_changes() -> None:
    """Start a command with nothing to render (a library caller's earlier writes are its own business)."""
    _CHANGED.clear()


def _read_parquet(path: Path, columns: list[str] | None) -> pa.Table:
    """``path``'s rows, only ``columns`` when given (those the shard has: an older shard may lack one, which
    :func:`conform` fills with nulls)."""
    if columns is None:
        return pq.read_table(path)
    present = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[c for c in columns if c in present])


def _same_bytes(path: Path, blob: bytes) -> bool:
    try:
        return path.stat().st_size == len(blob) and path.read_bytes() == blob
    except OSError:
        return False

