"""Flags every stage command shares (repo, sharding, resume control), parsed the same way everywhere."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from lovr_hf.engine.control import RunControl


def add_common_args(p: argparse.ArgumentParser, *, chunks: bool = True) -> None:
    g = p.add_argument_group("run control")
    g.add_argument("--repo", default="lovr", help="benchmark repo folder (default ./lovr)")
    g.add_argument("--num-proc", "--num_proc", dest="num_proc", type=int, default=None,
                   help="datasets.map worker processes on this machine")
    if chunks:
        g.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=None,
                       help="split the work into N chunks (original LoVR flag; or use accelerate launch)")
        g.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=None,
                       help="which chunk this process runs, from 0 (original LoVR flag)")
        g.add_argument("--gather", dest="gather_only", action="store_true",
                       help="only gather finished chunk shards into the repo config (fails, listing the "
                            "chunks, while some are unfinished)")
        g.add_argument("--allow-partial", dest="allow_partial", action="store_true",
                       help="let --gather write what is there when chunks are missing (the card says so)")
    g.add_argument("--rerun", action="store_true", help="recompute rows already done with the same settings")
    g.add_argument("--retry-failed", action="store_true", help="re-process only rows whose status is failed/error")
    g.add_argument("--strict", action="store_true",
                   help="exit non-zero when any row of the stage(s) run is error or failed")
    g.add_argument("--debug", action="store_true", help="log prompts and full outputs of the first batch")


def backend_option(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); VALUE is read as JSON when it parses (numbers, true/false, lists),
    else kept as a string. An argparse ``type``: a malformed item is a usage error."""
    key, sep, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"wants KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def add_backend_option_arg(p: argparse.ArgumentParser) -> None:
    """``--backend-option KEY=VALUE`` (repeatable): constructor options of the chosen backend class that have
    no flag of their own (e.g. ``truncate_dim=512`` for jina, ``pretrained=...`` for open_clip)."""
    p.add_argument("--backend-option", dest="backend_option_list", action="append", type=backend_option,
                   default=None, metavar="KEY=VALUE", help="an extra option for the backend class (repeatable)")


def control_from_args(args: argparse.Namespace) -> RunControl:
    fields = {f.name for f in dataclasses.fields(RunControl)}
    return RunControl(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build a stage config dataclass from the parsed flags whose dest matches a field name."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    extra = dict(getattr(args, "backend_option_list", None) or [])
    if extra:
        values["backend_options"] = {**values.get("backend_options", {}), **extra}
    values.update(overrides)
    return cls(**values)


def require_repo(path: str, command: str) -> Any:
    """The :class:`~lovr_hf.repo.BenchmarkRepo` at ``path``, refusing (exit 2, nothing created) a folder that
    does not exist or holds no benchmark configs: a mistyped ``--repo`` must not silently start a new repo."""
    from pathlib import Path

    from lovr_hf.failures import UsageError
    from lovr_hf.repo import BenchmarkRepo

    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"{path} is not a benchmark repo (no such folder); `lovr {command}` reads an existing "
                         "repo: build one with `lovr run` / `lovr segment`, or `lovr import-release`")
    repo = BenchmarkRepo(root)
    if not repo.configs():
        raise UsageError(f"{path} is not a benchmark repo (it holds no benchmark configs: no README.md card "
                         "listing clips or captions)")
    return repo


def split_list(values: list[str] | str | None) -> list[str]:
    """Values of a multi-value flag given either way: repeated (``--model a --model b``) and/or as comma
    lists (``--model a,b``), in order, empty items dropped."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for v in items for part in str(v).split(",") if part.strip()]
