"""Where clip files live and how they follow the tables: layout, staging, publishing, clean-up.

Layout (the original's): ``<output_dir>/<video_id>/<video_id>-Scene-NNN.mp4``. The Hub allows at most
10,000 entries per folder (:data:`MAX_FOLDER_ENTRIES`), so beyond that many videos the ``auto`` layout
buckets the video folders: ``<output_dir>/<bb>/<video_id>/...`` with ``bb`` the id's SHA-256 modulo
:data:`BUCKETS` (256: two hex digits, room for ~2.5 million videos); a video with more clips than the
limit gets ``part-NNN`` sub-folders.
LoVR itself (467 videos, at most a few hundred clips each) keeps the flat layout. The layout decided
for a run is part of the segment fingerprint: a collection that grows past the limit is re-segmented
once into the bucketed layout (``--clip-layout bucketed`` from the start avoids that).

Why staging and publishing: every segment setting (its fingerprint) would otherwise write the same
``<video_id>-Scene-NNN.mp4`` names, so running a second setting overwrote files the first setting's
committed rows still pointed to, and going back to the first setting reused rows whose files now held
other clips. Instead:

1. A unit (one video) writes its clip files into its fingerprint's own staging folder
   (``<repo>/.lovr/work/segment/<fingerprint>/staging/<video_id>/``); its rows already carry the
   published path. Files of other settings are never touched while a run is in progress, so a killed
   run leaves the current tables and their files intact.
2. When the stage gathers (all units committed), the tables are written, every other file-backed
   setting of the stage is superseded - its work is deleted, so that it can never be reused with files
   it no longer owns - and the staged files are renamed into the published layout.
3. Files the previous tables referenced and the new ones do not (a removed video, a video with fewer
   clips now, a superseded setting in another ``--output_dir``, clips replaced by virtual ones) are
   deleted, as are unreferenced ``*-Scene-*.mp4`` files and temporary files in the folders of current
   videos; every deletion is counted and logged.

Each clip row records its file's size and SHA-256 (``file_size``, ``file_sha256``), so downstream
stages key their work on the file's content and a published file that no longer matches its row is
reported (and its row marked ``error``) instead of silently read. The only window where tables and files
disagree is a kill during the renames of step 2; the next segment run repairs it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lovr_hf import schema
from lovr_hf.ids import check_id, safe_join

logger = logging.getLogger(__name__)

MAX_FOLDER_ENTRIES = 10_000  # the Hub's limit of files per folder
BUCKETS = 256  # video folders per bucketed layout (must not exceed MAX_FOLDER_ENTRIES)
LAYOUTS = ("auto", "flat", "bucketed")
FILE_MODES = ("exact", "copy")  # clip modes that write files
STAGING_DIR = "staging"
STALE_STAGING_S = 3600  # staged folders of units without rows are removed once this old
_CLIP_NAME = re.compile(r".+-Scene-\d+\.mp4$")
_TMP_NAME = re.compile(r"^\..+\.tmp\.mp4$")
_BUCKET = re.compile(r"^[0-9a-f]{2,}$")
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------------------
# layout


def resolve_layout(layout: str, num_videos: int) -> str:
    """``flat`` or ``bucketed``: ``auto`` is flat while the top folder holds at most the folder limit."""
    if layout not in LAYOUTS:
        raise ValueError(f"clip layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    return "flat" if num_videos <= MAX_FOLDER_ENTRIES else "bucketed"


def bucket_of(video_id: str) -> str:
    """The bucket folder of a video in the bucketed layout: its id's SHA-256 modulo :data:`BUCKETS`, as
    two (or more) hex digits."""
    n = int(hashlib.sha256(video_id.encode("utf-8")).hexdigest(), 16) % BUCKETS
    return f"{n:0{max(2, len(f'{BUCKETS - 1:x}'))}x}"


def video_folder(out_dir: str | os.PathLike[str], video_id: str, layout: str) -> Path:
    """The folder of a video's clips, refusing ids that could escape ``out_dir``."""
    check_id(video_id)
    if layout == "bucketed":
        return safe_join(out_dir, bucket_of(video_id), video_id)
    if layout != "flat":
        raise ValueError(f"clip layout must be 'flat' or 'bucketed' here, got {layout!r}")
    return safe_join(out_dir, video_id)


def clip_file(out_dir: str | os.PathLike[str], video_id: str, slice_num: int, num_clips: int, layout: str) -> Path:
    """Published path of clip ``slice_num`` of a video with ``num_clips`` clips."""
    folder = video_folder(out_dir, video_id, layout)
    name = schema.clip_id_for(video_id, slice_num) + ".mp4"
    if num_clips > MAX_FOLDER_ENTRIES:
        folder = folder / f"part-{(slice_num - 1) // MAX_FOLDER_ENTRIES:03d}"
    return folder / name


def staging_root(work: str | os.PathLike[str]) -> Path:
    return Path(work) / STAGING_DIR


def staged_file(work: str | os.PathLike[str], video_id: str, clip_id: str) -> Path:
    """Where a unit stages a clip file before it is published (flat by video: never uploaded)."""
    return safe_join(staging_root(work), check_id(video_id), clip_id + ".mp4")


# ---------------------------------------------------------------------------------------------------------
# file identity


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size in bytes, SHA-256 hex)`` of a file, streamed (``hashlib`` releases the GIL on big reads)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            size += len(block)
            h.update(block)
    return size, h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# publishing and clean-up


@dataclass
class PublishReport:
    published: int = 0
    kept: int = 0  # already in place from an earlier gather
    missing: list[str] = field(default_factory=list)  # clip ids whose file is absent or differs
    removed: int = 0
    removed_of_gone_videos: int = 0
    superseded: list[str] = field(default_factory=list)  # fingerprints whose work was dropped

    def log(self) -> None:
        if self.superseded:
            logger.info("segment: superseded settings %s dropped (their clip files are replaced)",
                        ", ".join(self.superseded))
        if self.published or self.removed:
            logger.info("segment: %d clip files published, %d kept, %d removed (%d of videos no longer "
                        "in the input)", self.published, self.kept, self.removed, self.removed_of_gone_videos)
        if self.missing:
            logger.error("segment: %d clip files are missing or changed on disk since they were made "
                         "(e.g. %s); their rows are marked error - run segment again with --rerun",
                         len(self.missing), ", ".join(self.missing[:5]))


def _file_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("clip_mode") in FILE_MODES and r.get("path")]


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst`` (atomic on one filesystem; copy + rename across filesystems)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.mp4")
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        src.unlink()


def publish(rows: Iterable[dict[str, Any]], work: Path, resolve: Any, report: PublishReport) -> set[str]:
    """Move staged files of ``rows`` to their published paths; returns the clip ids whose file is not
    there (or not the size its row says) afterwards."""
    bad: set[str] = set()
    for r in _file_rows(rows):
        final = resolve(r["path"])
        staged = staged_file(work, r[schema.VIDEO_ID], r[schema.CLIP_ID])
        if staged.exists():
            _move(staged, final)
            report.published += 1
        elif final.is_file():
            report.kept += 1
        try:
            size = final.stat().st_size
        except FileNotFoundError:
            size = None
        if size is None or (r.get("file_size") is not None and size != r["file_size"]):
            bad.add(r[schema.CLIP_ID])
    report.missing.extend(sorted(bad))
    return bad


def remove_unreferenced(prev: Iterable[dict[str, Any]], cur: Iterable[dict[str, Any]], resolve: Any,
                        report: PublishReport) -> None:
    """Delete clip files the previous tables referenced and the current ones do not, and stray clip or
    temporary files in the folders of current videos. Only files named like clips are ever deleted."""
    cur_rows = _file_rows(cur)
    keep = {resolve(r["path"]) for r in cur_rows}
    cur_videos = {r[schema.VIDEO_ID] for r in cur}
    folders: set[Path] = {p.parent for p in keep}
    for r in _file_rows(prev):
        p = resolve(r["path"])
        if p in keep or p.name != r[schema.CLIP_ID] + ".mp4":
            continue
        folders.add(p.parent)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            report.removed += 1
            if r[schema.VIDEO_ID] not in cur_videos:
                report.removed_of_gone_videos += 1
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p in keep or not p.is_file() or not (_CLIP_NAME.match(p.name) or _TMP_NAME.match(p.name)):
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                report.removed += 1
        _remove_empty(folder)


def remove_orphans(clips_dir: Path, cur: Iterable[dict[str, Any]], resolve: Any, report: PublishReport) -> None:
    """Delete clip files under the stage's own clip folder that no current row references: the files of a
    video removed by a run that was killed after writing the tables and before deleting its files (so the
    previous tables no longer name them). Only ``<video_id>-Scene-NNN.mp4`` files inside a folder named after
    that video id (directly, in a ``part-NNN`` folder, or under a bucket) are candidates; nothing else in the
    folder is ever touched."""
    if not clips_dir.is_dir():
        return
    keep = {resolve(r["path"]) for r in _file_rows(cur)}
    for path in clips_dir.rglob("*-Scene-*.mp4"):
        rel = path.relative_to(clips_dir).parts
        if len(rel) > 4 or path in keep or not path.is_file():
            continue
        owner = path.parent.parent if path.parent.name.startswith("part-") else path.parent
        if not path.name.startswith(owner.name + "-Scene-") or not _CLIP_NAME.match(path.name):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            report.removed += 1
            report.removed_of_gone_videos += 1
        _remove_empty(path.parent)


def _remove_empty(folder: Path) -> None:
    """rmdir an emptied clip folder, then its ``part-NNN`` parent's video folder and its bucket when
    they are empty too (never anything above: the output folder itself stays)."""
    try:
        folder.rmdir()
    except OSError:
        return
    parent = folder.parent
    if folder.name.startswith("part-"):
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent
    if _BUCKET.match(parent.name):
        with contextlib.suppress(OSError):
            parent.rmdir()


def clean_staging(work: Path, done_videos: set[str]) -> None:
    """Remove staged folders of units that gathered (their files are published), and stale ones."""
    root = staging_root(work)
    if not root.is_dir():
        return
    now = time.time()
    for d in root.iterdir():
        if not d.is_dir():
            continue
        if d.name in done_videos or now - d.stat().st_mtime > STALE_STAGING_S:
            shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.rmdir()


def drop_superseded(stage_dir: Path, current: str, report: PublishReport) -> None:
    """Delete the work of every other setting of the stage that wrote clip files: their files are about
    to be replaced, so their committed rows must never be reused. Virtual-clip settings own no files
    and stay reusable."""
    if not stage_dir.is_dir():
        return
    for d in sorted(stage_dir.iterdir()):
        if not d.is_dir() or d.name == current or d.name.startswith("."):
            continue
        mode = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            mode = json.loads((d / "stage.json").read_text())["config"]["clip_mode"]
        if mode not in FILE_MODES:  # virtual clips own no files; an unreadable manifest: leave it alone
            continue
        shutil.rmtree(d, ignore_errors=True)
        report.superseded.append(d.name)


__all__ = [
    "LAYOUTS",
    "MAX_FOLDER_ENTRIES",
    "PublishReport",
    "bucket_of",
    "clean_staging",
    "clip_file",
    "drop_superseded",
    "file_digest",
    "publish",
    "remove_unreferenced",
    "resolve_layout",
    "staged_file",
    "staging_root",
    "video_folder",
]
