"""``datasets`` builder for the official LoVR release, read with the original evaluation's data model.

Release layout (as published)::

    caption_data/all_clip.jsonl          {"path": ".../<vid>-Scene-NNN.mp4", "cap": "..."}  = the QUERY clips
    caption_data/all_video.jsonl         {"vid": "<vid>", "cap": "..."}                     = the video list
    caption_data/clip_cap_theme.jsonl    optional {"vid": "<vid>" or "<vid>-Scene-NNN", "cap": "..."}
    clip_train.parquet, clip_test.parquet   optional split lists (a clip id / path column)
    video_data/long_video_clip/<vid>/<vid>-Scene-NNN.mp4                                  = EVERY clip

The original evaluation (TechNomad-ds/LoVR-benchmark, ``evaluate/`` and the per-model scripts at commit
00ca611) embeds every clip FILE in the folder of every video of ``all_video.jsonl`` (``os.listdir``) and
builds each full video from all of them, while ``all_clip.jsonl`` is only the list of query captions (the
current release: 1,000 lines, ``CLIP_NUM = 1000``; an older generation: one line per clip, every line a
query). So here:

- ``clips``: one row per clip file on disk under the folder of each listed video (probed: frames, fps,
  duration; a file that cannot be opened is an ``error`` row, as the original skips it), plus an ``error``
  row for each clip listed in ``all_clip.jsonl`` without a file. A clip file without a caption is a
  retrieval candidate without a query.
- ``clip_captions``: the released query list, one row per line (whatever its length).
- ``video_captions``: ``all_video.jsonl``; ``theme_captions`` and ``splits`` when the files exist.

Ids are the release's own (file stems, ``vid`` values), kept verbatim (``-7wwfGJXEZg`` stays
``-7wwfGJXEZg``) and only refused when unsafe as a path component (:func:`lovr_hf.ids.id_problem`).

Use it programmatically (no loading script): ``LoVRRelease(config_name="clips", data_dir=DIR)`` then
``download_and_prepare()`` and ``as_dataset("train")``. ``lovr import-release`` wraps this, writes each
config into a benchmark repo and records the query list (:mod:`lovr_hf.hub.release`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets

from builders.release_checks import (
    ID_KEYS,
    ReleaseError,
    caption_field,
    deduplicated,
    jsonl,
    split_values,
    string_field,
)
from lovr_hf import schema
from lovr_hf.ids import VIDEO_EXTENSIONS, check_id, check_video_id, id_problem, safe_id, strip_video_extension

logger = logging.getLogger(__name__)

CLIP_JSONL = "caption_data/all_clip.jsonl"
VIDEO_JSONL = "caption_data/all_video.jsonl"
THEME_JSONL = "caption_data/clip_cap_theme.jsonl"
CLIP_DIR = "video_data/long_video_clip"
SPLIT_FILES = {"train": "clip_train.parquet", "test": "clip_test.parquet"}
RELEASE_MODEL = "lovr-release"
#: release generations: the query list is a subset of the clips (current, ``CLIP_NUM = 1000``) or covers
#: every clip (the first release, whose scripts used ``CLIP_NUM = len(text) - 467``)
QUERY_LIST = "query-list"
PER_CLIP = "per-clip"

_SCENE = re.compile(r"^(?P<vid>.+)-Scene-(?P<num>\d+)$")
PROBE_WORKERS = min(8, os.cpu_count() or 1)


def parse_clip_id(clip_id: str) -> tuple[str, int]:
    """``<vid>-Scene-NNN`` -> (vid, NNN); ids are validated so none can escape a folder."""
    m = _SCENE.match(check_id(clip_id))
    if not m:
        raise ValueError(f"clip id {clip_id!r} is not of the form <video_id>-Scene-NNN")
    return check_video_id(m.group("vid")), int(m.group("num"))


_jsonl = jsonl  # every line checked: see builders.release_checks


def _clip_id_of(record: dict[str, Any], where: str = "record") -> str:
    """The original's clip id: the file name of ``path`` without its extension (``x.split('/')[-1][:-4]``)."""
    value = string_field(record, ID_KEYS, where, "clip path or id")
    return strip_video_extension(value.replace("\\", "/").rsplit("/", 1)[-1])


def _checked(where: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ReleaseError:
        raise
    except ValueError as exc:
        raise ReleaseError(f"{where}: {exc}") from None


@dataclasses.dataclass
class ClipFile:
    """A file found in a video's clip folder, or a listed clip with no file (``path`` None)."""

    video_id: str
    clip_id: str
    slice_num: int
    path: Path | None
    problem: str | None = None  # set: the row is an ``error`` row with this reason


@dataclasses.dataclass
class ReleaseScan:
    """What a release folder holds, read once and shared by every config (and the import's marker)."""

    root: Path
    query_ids: list[str]  # all_clip.jsonl clip ids, file order, duplicates removed
    query_captions: dict[str, str]
    duplicate_queries: list[str]
    video_ids: list[str]  # the video list: all_video.jsonl order (or every folder when it is absent)
    videos_listed: bool
    clip_files: list[ClipFile]  # every clip row: files on disk and listed clips without a file
    unlisted_dirs: list[str]  # clip folders of videos not in all_video.jsonl (the original ignores them)
    ignored_files: list[str]  # hidden or non-video files in clip folders, and duplicate stems
    video_captions: dict[str, str] = dataclasses.field(default_factory=dict)  # all_video.jsonl, checked
    themes: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (video, clip or "", cap)
    splits: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (split, clip, video)
    duplicates: dict[str, int] = dataclasses.field(default_factory=dict)  # file -> repeated lines dropped

    @property
    def generation(self) -> str:
        on_disk = {c.clip_id for c in self.clip_files if c.path is not None}
        return PER_CLIP if on_disk and on_disk <= set(self.query_ids) else QUERY_LIST


def _link_problem(entry: os.DirEntry[str], base: Path, folder_linked: bool) -> str | None:
    """Why a clip file is refused as a link: a release holds its files; a link is never followed (a link
    to /etc/passwd or to a video elsewhere would be imported, then published, as a clip)."""
    if entry.is_symlink():
        return f"clip file {entry.name!r} is a symbolic link (links are not followed: copy the file in)"
    if folder_linked:
        return f"clip folder of {entry.name!r} is a symbolic link (links are not followed: copy the folder in)"
    real = Path(os.path.realpath(entry.path))
    if base != real and base not in real.parents:
        return f"clip file {entry.name!r} resolves outside the release ({real.name}): not imported"
    return None


def _scan_dir(folder: Path, vid: str, base: Path | None = None) -> tuple[list[ClipFile], list[str]]:
    rows: list[ClipFile] = []
    ignored: list[str] = []
    seen: set[str] = set()
    base = base or folder
    folder_linked = folder.is_symlink() or Path(os.path.realpath(folder)) != folder
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name
        rel = f"{vid}/{name}"
        if name.startswith(".") or not name.lower().endswith(VIDEO_EXTENSIONS) or not (
                entry.is_file(follow_symlinks=False) or entry.is_symlink()):
            ignored.append(rel)
            continue
        stem = strip_video_extension(name)
        if stem in seen:
            ignored.append(rel)  # a second file of one clip id (x.mp4 and x.mkv): the first (by name) is kept
            logger.warning("release: %s: a second file for clip id %r, ignored", rel, stem)
            continue
        seen.add(stem)
        path = Path(entry.path)
        problem = id_problem(stem)
        m = _SCENE.match(stem) if problem is None else None
        linked = _link_problem(entry, base, folder_linked)
        if linked is not None:
            logger.warning("release: %s: %s", rel, linked)
            rows.append(ClipFile(vid, stem if problem is None else safe_id(stem), int(m.group("num")) if m else 0,
                                 path, linked))
        elif problem is not None:
            rows.append(ClipFile(vid, safe_id(stem), 0, path, f"clip file name {name!r} is not a safe id: {problem}"))
        elif m is None or m.group("vid") != vid:
            rows.append(ClipFile(vid, stem, 0, path, f"clip file {name!r} is not named {vid}-Scene-NNN"))
        else:
            rows.append(ClipFile(vid, stem, int(m.group("num")), path))
    return rows, ignored


@functools.lru_cache(maxsize=4)
def _scan_cached(root: str, signature: tuple[Any, ...]) -> ReleaseScan:
    base = Path(root)
    query_ids: list[str] = []
    captions: dict[str, str] = {}
    dups: list[str] = []
    if (base / CLIP_JSONL).exists():
        for line_no, rec in _jsonl(base / CLIP_JSONL):
            where = f"{base / CLIP_JSONL}:{line_no}"
            cid = _clip_id_of(rec, where)
            _checked(where, parse_clip_id, cid)
            cap = caption_field(rec, where)
            if cid in captions:
                dups.append(cid)
                continue
            query_ids.append(cid)
            captions[cid] = cap
    if dups:
        logger.warning("release: %d duplicate lines in %s (first kept): %s", len(dups), CLIP_JSONL, dups[:5])
    clip_root = base / CLIP_DIR
    dirs = sorted(e.name for e in os.scandir(clip_root) if e.is_dir()) if clip_root.is_dir() else []
    listed = (base / VIDEO_JSONL).exists()
    video_caps: dict[str, str] = {}
    duplicates: dict[str, int] = {CLIP_JSONL: len(dups)} if dups else {}
    if listed:
        lines = []
        for line_no, rec in _jsonl(base / VIDEO_JSONL):
            where = f"{base / VIDEO_JSONL}:{line_no}"
            vid = _checked(where, check_video_id, string_field(rec, ("vid",), where, "video id"))
            lines.append((vid, caption_field(rec, where)))
        kept, n = deduplicated(lines, "video", VIDEO_JSONL)
        duplicates.update({VIDEO_JSONL: n} if n else {})
        video_caps = dict(kept)
        video_ids = list(video_caps)
    else:
        video_ids = [_checked(str(clip_root / d), check_video_id, d) for d in dirs]
    unlisted = sorted(set(dirs) - set(video_ids))
    if unlisted:
        logger.warning("release: %d clip folders are not in %s and are not imported (the original never "
                       "embeds them): %s", len(unlisted), VIDEO_JSONL, unlisted[:5])
    files: list[ClipFile] = []
    ignored: list[str] = []
    for vid in video_ids:
        folder = clip_root / vid
        if folder.is_dir():
            rows, skipped = _scan_dir(folder, vid, base)
            files.extend(rows)
            ignored.extend(skipped)
    if ignored:
        logger.info("release: %d files in clip folders are not clip files, ignored: %s", len(ignored), ignored[:5])
    on_disk = {c.clip_id for c in files}
    listed_videos = set(video_ids)
    for cid in query_ids:
        if cid in on_disk:
            continue
        vid, num = parse_clip_id(cid)
        if vid not in listed_videos:
            why = f"listed in {CLIP_JSONL}, but its video {vid!r} is not in {VIDEO_JSONL} (never embedded)"
        else:
            why = f"listed in {CLIP_JSONL}, but there is no clip file {CLIP_DIR}/{vid}/{cid}.mp4"
        files.append(ClipFile(vid, cid, num, None, why))
    themes, splits = _read_themes(base, duplicates), _read_splits(base, duplicates)
    return ReleaseScan(base, query_ids, captions, dups, video_ids, listed, files, unlisted, ignored, video_caps,
                       themes, splits, duplicates)


def _read_themes(base: Path, duplicates: dict[str, int]) -> list[tuple[str, str, str]]:
    if not (base / THEME_JSONL).exists():
        return []
    lines = []
    for line_no, rec in _jsonl(base / THEME_JSONL):
        where = f"{base / THEME_JSONL}:{line_no}"
        ident = _clip_id_of(rec, where)
        if _SCENE.match(ident):
            vid, _ = _checked(where, parse_clip_id, ident)
            clip = ident
        else:
            vid, clip = _checked(where, check_video_id, ident), ""
        lines.append((f"{vid}/{clip}", (vid, clip, caption_field(rec, where))))
    kept, n = deduplicated(lines, "theme", THEME_JSONL)
    duplicates.update({THEME_JSONL: n} if n else {})
    return [v for _, v in kept]


def _read_splits(base: Path, duplicates: dict[str, int]) -> list[tuple[str, str, str]]:
    lines = []
    for split, fname in SPLIT_FILES.items():
        if not (base / fname).exists():
            continue
        for row, value in split_values(base / fname):
            where = f"{base / fname}: row {row}"
            cid = _clip_id_of({"path": value}, where)
            vid, _ = _checked(where, parse_clip_id, cid)
            lines.append((f"{split}/{cid}", (split, cid, vid)))
    kept, n = deduplicated(lines, "split", "the split files")
    duplicates.update({"splits": n} if n else {})
    return [v for _, v in kept]


def scan_release(root: str | os.PathLike[str]) -> ReleaseScan:
    """Scan a release folder (cached while its caption files and clip folders are unchanged)."""
    base = Path(root).expanduser().resolve()
    if not (base / CLIP_JSONL).exists() and not (base / CLIP_DIR).is_dir():
        raise FileNotFoundError(f"{base / CLIP_JSONL} not found: is {base} the LoVR release folder?")
    sig: list[Any] = []
    for rel in (CLIP_JSONL, VIDEO_JSONL, CLIP_DIR, THEME_JSONL, *SPLIT_FILES.values()):
        p = base / rel
        st = p.stat() if p.exists() else None
        sig.append((rel, st.st_mtime_ns, st.st_size) if st else (rel, None))
    if (base / CLIP_DIR).is_dir():
        sig.extend((e.name, e.stat().st_mtime_ns) for e in os.scandir(base / CLIP_DIR) if e.is_dir())
    return _scan_cached(str(base), tuple(sig))


def _probe_row(clip: ClipFile) -> dict[str, Any]:
    from lovr_hf.video.frame_index import VideoError
    from lovr_hf.video.reader import probe

    row = {
        "video_id": clip.video_id, "clip_id": clip.clip_id, "slice_num": clip.slice_num, "start_time": None,
        "end_time": None, "start_frame": None, "end_frame": None, "num_frames": None, "fps": None,
        "path": str(clip.path) if clip.path is not None else None, "frame_offset": 0, "clip_mode": "exact",
        "status": schema.OK, "error": None,
    }
    if clip.problem is not None:
        row.update(status=schema.ERROR, error=clip.problem)
        return row
    assert clip.path is not None
    try:
        info = probe(str(clip.path))
    except (VideoError, OSError) as exc:
        row.update(status=schema.ERROR, error=f"clip file unreadable: {exc}")
        return row
    # start/end_frame locate a clip in its SOURCE video, which the release does not ship: left null
    row.update(num_frames=info.num_frames, fps=info.fps, start_time=0.0, end_time=info.duration_s)
    return row


class LoVRReleaseConfig(datasets.BuilderConfig):
    pass


class LoVRRelease(datasets.GeneratorBasedBuilder):
    """Official LoVR release -> the lovr_hf tables (clips, clip_captions, video_captions, theme_captions, splits)."""

    BUILDER_CONFIG_CLASS = LoVRReleaseConfig
    BUILDER_CONFIGS = [
        LoVRReleaseConfig(name=n, version=datasets.Version("2.0.0"))
        for n in (schema.CLIPS, schema.CLIP_CAPTIONS, schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS, schema.SPLITS)
    ]
    DEFAULT_CONFIG_NAME = schema.CLIP_CAPTIONS

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="LoVR: A Benchmark for Long Video Retrieval in Multimodal Contexts (arXiv 2505.13928)",
            features=schema.features_for(self.config.name),
            citation="@article{lovr2025, title={LoVR: A Benchmark for Long Video Retrieval in Multimodal Contexts}, "
            "journal={arXiv:2505.13928}, year={2025}}",
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        if not self.config.data_dir:
            raise ValueError("LoVRRelease needs data_dir=<folder of the LoVR release>")
        root = Path(self.config.data_dir).expanduser().resolve()
        if self.config.name in (schema.CLIPS, schema.CLIP_CAPTIONS) and not (root / CLIP_JSONL).exists():
            raise FileNotFoundError(f"{root / CLIP_JSONL} not found: is {root} the LoVR release folder?")
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"root": str(root)})]

    def _generate_examples(self, root: str) -> Iterator[tuple[str, dict[str, Any]]]:
        base = Path(root)
        gen = {schema.CLIP_CAPTIONS: self._clip_captions, schema.CLIPS: self._clips,
               schema.VIDEO_CAPTIONS: self._video_captions, schema.THEME_CAPTIONS: self._themes,
               schema.SPLITS: self._splits}[self.config.name]
        yield from gen(base)

    def _clip_captions(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        scan = scan_release(base)
        for cid in scan.query_ids:
            vid, num = parse_clip_id(cid)
            cap = scan.query_captions[cid]
            yield cid, {
                "clip_id": cid, "video_id": vid, "slice_num": num, "caption": cap,
                "model": RELEASE_MODEL, "prompt_hash": "", "quality_score": None, "attempts": 1,
                "num_frames_used": None, "settings": "{}",
                "status": schema.OK if cap else schema.ERROR,
                "error": None if cap else "empty caption in the release",
            }

    def _clips(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        scan = scan_release(base)
        with ThreadPoolExecutor(max_workers=PROBE_WORKERS) as pool:  # 40,804 files: probe in parallel
            for row in pool.map(_probe_row, scan.clip_files):
                yield row["clip_id"], row

    def _video_captions(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        scan = scan_release(base)
        clips_by_video: dict[str, list[tuple[int, str]]] = {}
        for c in scan.clip_files:
            if c.path is not None and c.problem is None:
                clips_by_video.setdefault(c.video_id, []).append((c.slice_num, c.clip_id))
        for vid, cap in scan.video_captions.items():
            yield vid, {
                "video_id": vid, "caption": cap, "cluster_ids": [],
                "clip_ids": [c for _, c in sorted(clips_by_video.get(vid, []))], "strategy": "release",
                "llm_calls": 0, "failed_calls": 0, "model": RELEASE_MODEL, "prompt_hash": "",
                "status": schema.OK if cap else schema.ERROR,
                "error": None if cap else "empty caption in the release",
            }

    def _themes(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for vid, clip, cap in scan_release(base).themes:
            yield f"{vid}/{clip}", {"video_id": vid, "clip_id": clip, "caption": cap, "model": RELEASE_MODEL,
                                   "prompt_hash": "", "status": schema.OK, "error": None}

    def _splits(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for split, cid, vid in scan_release(base).splits:
            yield f"{split}/{cid}", {"clip_id": cid, "video_id": vid, "split": split}
