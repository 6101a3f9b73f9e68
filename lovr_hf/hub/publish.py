"""What ``lovr push`` publishes: a staged copy of the repo with nothing that belongs to this machine.

The repo on disk is a working benchmark: its tables hold absolute paths of the source videos (virtual
clips read them), error messages quote local files, model labels may be local folders, and clip files may
live outside the repo (``--output_dir``). Publishing must not leak any of that, and for videos whose
licence allows an index only (LoVR's come from LongVideoBench; MTEB withdrew its LoVR task for re-hosting
the clips) it must be able to publish no video bytes at all. So :func:`stage` writes the repo as it will be
published into ``<repo>/.lovr/publish/<name>/`` through the same :class:`BenchmarkRepo` code (fingerprinted
shards, card) and then checks the result:

* path columns: ``videos.path`` is dropped (``source_name`` is the path relative to the input folder);
  ``clips.path`` stays relative to the repo, clip files outside it are copied in (or, index-only, dropped);
* every other string (captions' error texts, model labels, ``run_config.json``) has each local root (the
  repo, the input folders, the model folders and other absolute paths of the run configuration, the home
  and working folders) replaced by ``<local>/<folder name>``;
* ``--no-media``: no clip or video file; clips stay as an index (source video id, frame range, times, fps)
  and each source video as its size and SHA-256, so ``lovr materialize`` rebuilds them from one's own copy;
* checks that fail the push: any local root left in any staged file or table cell, any folder with more
  entries than the Hub allows (:data:`MAX_FOLDER_ENTRIES`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lovr_hf import schema
from lovr_hf.redact import find_secret, redact, redact_text
from lovr_hf.repo import ASSETS_DIR, CARD, BenchmarkRepo, atomic_write_text

logger = logging.getLogger(__name__)

MAX_FOLDER_ENTRIES = 10_000  # the Hub's limit of files per folder
PUBLISH_DIR = "publish"
LOCAL = "<local>"
COPIED_FILES = ("results.md",)  # re-rendered, so only kept if rendering is not possible
_ASSET_FILES = ("eval_cost.json",)
HASH_CHUNK = 8 * 1024 * 1024


class PublishError(RuntimeError):
    """The staged repo would publish something it must not (a local path, an over-full folder)."""


@dataclasses.dataclass
class Publication:
    """A staged repo ready to upload: its folder, files (relative, sorted), bytes and what was changed."""

    root: Path
    files: list[str]
    total_bytes: int
    no_media: bool
    notes: list[str]


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ---- local roots and string sanitising --------------------------------------------------------------------


def _abs_strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        if os.path.isabs(obj):
            yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _abs_strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _abs_strings(v)


def local_roots(repo: BenchmarkRepo) -> list[str]:
    """Absolute paths of this machine that may appear in the repo's content, longest first."""
    roots = {str(repo.root), str(Path.home()), os.getcwd()}
    for p in _abs_strings(repo.run_config()):
        roots.add(p.rstrip("/") or p)
    if repo.has(schema.VIDEOS):
        for path, rel in zip(*(repo.read_table(schema.VIDEOS).column(c).to_pylist() for c in ("path", "source_name"))):
            if path and rel and path.endswith(rel):
                roots.add(path[: -len(rel)].rstrip("/"))  # the input folder this video came from
            elif path:
                roots.add(str(Path(path).parent))
    return sorted((r for r in roots if r and r != "/" and len(r) > 1), key=len, reverse=True)


def _root_pattern(root: str) -> re.Pattern[str]:
    """``root`` as a whole path prefix: ``/data/v`` matches ``/data/v`` and ``/data/v/x``, not ``/data/vids``."""
    return re.compile(re.escape(root) + r"(?![A-Za-z0-9_.\-])")


def _is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_list(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)))


class Sanitizer:
    """Replaces local roots in strings: the repo root by nothing (repo-relative), others by ``<local>/<name>``."""

    def __init__(self, repo_root: Path, roots: list[str]) -> None:
        self.repo_root = str(repo_root)
        self.roots = [(r, _root_pattern(r)) for r in roots]
        self.replaced = 0

    def text(self, value: str) -> str:
        out = redact_text(value)  # credentials (a URL's user:password in a row's settings...) never leave
        for root, pat in self.roots:
            if root not in out:
                continue
            if root == self.repo_root:
                out = pat.sub(".", out.replace(root + "/", ""))
            else:
                out = pat.sub(f"{LOCAL}/{Path(root).name}", out)
        if out != value:
            self.replaced += 1
        return out

    def obj(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.obj(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.obj(v) for v in value]
        return value

    def table(self, table: pa.Table) -> pa.Table:
        cols = {}
        for name in table.column_names:
            col = table.column(name)
            if _is_text_type(col.type):
                cols[name] = pa.array([self.obj(v) for v in col.to_pylist()], type=col.type)
            else:
                cols[name] = col
        return pa.table(cols, schema=table.schema)


# ---- staging ------------------------------------------------------------------------------------------------


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same filesystem: no bytes copied (the staged tree is rebuilt on every push)
    except OSError:
        shutil.copy2(src, dst)


def allowed_media_roots(repo: BenchmarkRepo) -> list[Path]:
    """Where a published clip file may really live: the repo, and the release it imported (if any)."""
    roots = [Path(os.path.realpath(repo.root))]
    marker = repo.root / "lovr_release.json"
    if marker.is_file():
        try:
            rel = json.loads(marker.read_text(encoding="utf-8")).get("release_dir")
        except ValueError:
            rel = None
        if isinstance(rel, str) and rel:
            roots.append(Path(os.path.realpath(rel)))
    return roots


def _media_source(repo: BenchmarkRepo, path: str, roots: list[Path]) -> tuple[Path | None, str]:
    """(the real file to publish, "") or (None, why not): links are resolved and must stay inside ``roots``."""
    real = Path(os.path.realpath(repo.resolve(path)))
    if not any(real == r or r in real.parents for r in roots):
        return None, "resolves outside the repo and its release"
    if not real.is_file():
        return None, "not found"
    return real, ""


def _publish_clips(repo: BenchmarkRepo, clips: pa.Table, out: Path, no_media: bool,
                   notes: list[str]) -> pa.Table:
    """Clip paths for publication (and the clip files staged unless ``no_media``).

    Only files of ``ok`` rows are published, and only when their real path (links resolved) is inside the
    repo or the release it imported: a row pointing at a link to ``/etc/passwd`` or at a video elsewhere
    on the machine publishes nothing. What is skipped is logged and noted in the card.
    """
    paths, modes, ids, vids, status = (clips.column(c).to_pylist() for c in (
        "path", "clip_mode", schema.CLIP_ID, schema.VIDEO_ID, schema.STATUS))
    roots = allowed_media_roots(repo)
    new_paths: list[str | None] = []
    staged = missing = virtual = 0
    skipped: dict[str, list[str]] = {}
    for path, mode, cid, vid, st in zip(paths, modes, ids, vids, status):
        if no_media or not path or mode == "virtual":
            virtual += mode == "virtual"
            new_paths.append(None)
            continue
        if st != schema.OK:
            skipped.setdefault(f"its row is `{st}`", []).append(cid)
            new_paths.append(None)
            continue
        src, why = _media_source(repo, path, roots)
        if src is None:
            if why == "not found":
                missing += 1
            else:
                skipped.setdefault(why, []).append(cid)
            new_paths.append(None)
            continue
        inside = not os.path.isabs(path) and not repo.resolve(path).is_symlink()
        rel = path if inside and ".." not in Path(path).parts else f"clips/{vid}/{cid}{Path(path).suffix or '.mp4'}"
        _link_or_copy(src, out / rel)
        staged += 1
        new_paths.append(rel)
    if no_media:
        notes.append(f"Index only: no clip or video file is published ({len(paths)} clips as source video id, "
                     "frame range, times and fps; every source video as its size and SHA-256).")
    if virtual and not no_media:
        notes.append(f"{virtual} virtual clips have no file of their own (they are frame ranges of the source "
                     "videos): rebuild them with `lovr materialize`.")
    if missing:
        notes.append(f"{missing} clip files referenced by `clips` were not found on the building machine and are "
                     "not published (their `path` is empty).")
    for why, cids in sorted(skipped.items()):
        logger.warning("publish: %d clip files not published (%s): %s", len(cids), why,
                       ", ".join(cids[:5]) + (", ..." if len(cids) > 5 else ""))
        notes.append(f"{len(cids)} clip files are not published: {why} (their `path` is empty).")
    logger.info("publish: %d clip files staged", staged)
    return clips.set_column(clips.schema.get_field_index("path"), "path", pa.array(new_paths, pa.string()))


def _publish_videos(repo: BenchmarkRepo, videos: pa.Table, notes: list[str]) -> pa.Table:
    """Drop local paths; fill size and SHA-256 of the sources that lack them (what identifies a copy)."""
    paths = videos.column("path").to_pylist()
    sizes = videos.column("size_bytes").to_pylist()
    shas = videos.column("sha256").to_pylist()
    filled = 0
    for i, path in enumerate(paths):
        if (sizes[i] is None or not shas[i]) and path and os.path.isfile(path):
            sizes[i], shas[i] = os.path.getsize(path), sha256_file(path)
            filled += 1
    if filled:
        logger.info("publish: hashed %d source videos (size + SHA-256)", filled)
    notes.append("`videos.path` (a path on the building machine) is not published: `source_name` is each "
                 "video's path relative to the input folder.")
    t = videos
    for name, values, typ in (("path", [None] * len(paths), pa.string()), ("size_bytes", sizes, pa.int64()),
                              ("sha256", shas, pa.string())):
        t = t.set_column(t.schema.get_field_index(name), name, pa.array(values, typ))
    return t


def stage(repo: BenchmarkRepo | str, *, no_media: bool = False, repo_id: str | None = None,
          revision: str | None = None) -> Publication:
    """Write the repo as it will be published under ``<repo>/.lovr/publish/<name>/`` and check it.

    ``clips.video`` of the staged shards points at ``hf://datasets/<repo_id>@<revision>/<path>`` (default
    revision ``main``), where ``load_dataset`` on the pushed repo finds each published clip file; without a
    ``repo_id`` (or with ``no_media``) it is null."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    if not repo.card_path.exists():
        raise FileNotFoundError(f"{repo.root} has no {CARD}: not a benchmark repo (run a stage first)")
    out = repo.work_root / PUBLISH_DIR / repo.root.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from lovr_hf.clip_video import NO_MEDIA, hub_media_url

    # a staged shard never holds a local path: without a repo id there is no address, so no video
    pub = BenchmarkRepo(out, media_url=hub_media_url(repo_id, revision) if repo_id and not no_media else NO_MEDIA)
    roots = local_roots(repo)
    clean = Sanitizer(repo.root, roots)
    notes: list[str] = []
    if repo.run_config():
        pub.write_run_config(clean.obj(repo.run_config()))
    for name in _ASSET_FILES:
        src = repo.root / ASSETS_DIR / name
        if src.is_file():
            atomic_write_text(out / ASSETS_DIR / name,
                              json.dumps(redact(clean.obj(json.loads(src.read_text()))), indent=2))
    for config in repo.listed_configs():
        table = repo.read_table(config)
        if config == schema.VIDEOS:
            table = _publish_videos(repo, table, notes)
        elif config == schema.CLIPS:
            table = _publish_clips(repo, table, out, no_media, notes)
            notes.append(_video_note(pub.media_url, no_media))
        pub.write(config, clean.table(table))
    if pub.has(schema.RESULTS):
        from lovr_hf.report.results_page import render_results

        render_results(pub)  # results.md and the plot from the sanitised rows (labels included)
    from lovr_hf.report.card import write_card

    write_card(pub)  # the staged card is uploaded by this command: rendered now, from the sanitised tables
    _append_notes(pub, notes, no_media, repo_id or "ORG/NAME")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                   and not p.relative_to(out).as_posix().startswith(".lovr"))
    if clean.replaced:
        logger.info("publish: local paths replaced in %d values", clean.replaced)
    check_no_local_paths(out, files, roots)
    check_media(out, files)
    check_folder_limits(out, files)
    total = sum((out / f).stat().st_size for f in files)
    return Publication(out, files, total, no_media, notes)


def _video_note(media_url: str | None, no_media: bool) -> str:
    if no_media or not media_url:
        return ("`clips.video` is null in every row: no clip file is published"
                + (" (index only)." if no_media else " at a known address (staged without a repo id)."))
    return (f"`clips.video` holds each published clip file as `{media_url}/<path>`, which `load_dataset` "
            "(also with `streaming=True`) decodes through `HfFileSystem`; it is null for virtual clips and rows "
            "without a published file. A `copy` clip's file begins `frame_offset` frames before the clip.")


def _append_notes(pub: BenchmarkRepo, notes: list[str], no_media: bool, repo_id: str) -> None:
    lines = ["", "## Publishing notes", ""] + [f"- {n}" for n in notes]
    if no_media:
        lines += ["", "### Rebuilding the clips from your own copies of the videos", "",
                  "```bash",
                  f"hf download {repo_id} --repo-type dataset --local-dir lovr",
                  "lovr materialize --repo lovr --input_folder /path/to/your/videos   # checks size + SHA-256",
                  "lovr eval --repo lovr --model openai/clip-vit-base-patch32         # scores what is available",
                  "```", "",
                  "Videos missing from your folder or differing from the published checksum are listed; their "
                  "clips stay unavailable and `lovr eval` reports how many items it could score."]
    text = pub.card_path.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    atomic_write_text(pub.card_path, text)


def _strings_of_file(path: Path) -> Iterable[str]:
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        for col in table.columns:
            if _is_text_type(col.type):
                for v in col.to_pylist():
                    if isinstance(v, str):
                        yield v
                    elif isinstance(v, list):
                        yield from (x for x in v if isinstance(x, str))
            elif pa.types.is_struct(col.type):  # clips.video: {"bytes", "path"}
                for v in col.to_pylist():
                    p = (v or {}).get("path")
                    if isinstance(p, str):
                        yield _hub_path_in_repo(p)
    elif path.suffix in (".md", ".json", ".txt", ".yaml", ".yml", ".csv", ".jsonl"):
        yield path.read_text(encoding="utf-8", errors="replace")


def _hub_path_in_repo(value: str) -> str:
    """An ``hf://`` URL's path inside its repo (its ``hf://datasets/<id>@<rev>`` head is no local path, even
    when a local root such as ``/datasets`` happens to spell part of it); any other string as is."""
    if not value.startswith("hf://"):
        return value
    from huggingface_hub.hf_file_system import parse_hf_uri

    try:
        return parse_hf_uri(value).path_in_repo
    except ValueError:
        return value


def check_no_local_paths(root: Path, files: list[str], roots: list[str]) -> None:
    """Fail when any staged text or table cell still holds a local root (a leak is worse than no push)."""
    leaks: list[str] = []
    pats = [(r, _root_pattern(r)) for r in roots]
    for f in files:
        for s in _strings_of_file(root / f):
            hit = next((r for r, pat in pats if r in s and pat.search(s)), None)
            if hit:
                leaks.append(f"{f}: contains {hit!r}")
                break
            secret = find_secret(s)
            if secret:
                leaks.append(f"{f}: contains {secret}")
                break
    if leaks:
        raise PublishError("refusing to publish local paths or credentials:\n  " + "\n  ".join(leaks[:20]))


#: how the video containers lovr_hf writes or imports begin (ISO-BMFF/MOV, Matroska/WebM, AVI)
_VIDEO_MAGIC = ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (0, b"\x1a\x45\xdf\xa3"),
                (0, b"RIFF"))
_MEDIA_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")


def check_media(root: Path, files: list[str]) -> None:
    """Fail when a staged media file is a link or does not begin like a video container: media pass the
    same gate as text (only what the repo made or imported, nothing else of the machine)."""
    bad: list[str] = []
    for f in files:
        p = root / f
        if p.is_symlink():
            bad.append(f"{f}: a symbolic link")
        elif f.lower().endswith(_MEDIA_SUFFIXES):
            with open(p, "rb") as fh:
                head = fh.read(12)
            if not any(head[o:o + len(m)] == m for o, m in _VIDEO_MAGIC):
                bad.append(f"{f}: not a video file")
    if bad:
        raise PublishError("refusing to publish media that are not the repo's videos:\n  " + "\n  ".join(bad[:20]))


def check_folder_limits(root: Path, files: list[str], limit: int | None = None) -> None:
    """Fail when a folder would hold more entries (files + sub-folders) than the Hub accepts."""
    limit = limit or MAX_FOLDER_ENTRIES
    entries: dict[str, set[str]] = {}
    for f in files:
        parts = f.split("/")
        for i in range(len(parts)):
            entries.setdefault("/".join(parts[:i]), set()).add(parts[i])
    over = {d or ".": len(e) for d, e in entries.items() if len(e) > limit}
    if over:
        raise PublishError(f"folders over the Hub's limit of {limit} entries: {over}")


__all__ = ["Publication", "PublishError", "stage", "sha256_file", "check_folder_limits"]
