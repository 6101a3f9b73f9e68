"""``lovr materialize``: rebuild the clips of an index-only repo from one's own copies of the source videos.

An index-only repo (``lovr push --no-media``; the licence of LoVR's LongVideoBench videos allows releasing an
index only) holds each clip as (source video id, frame range, times, fps) and each source video as its name
relative to the input folder, size and SHA-256. Materialising finds every source under ``--input_folder``
by that name, checks size and SHA-256 (a re-encoded, trimmed or different file would give other frames:
such a video is reported as *altered*, never silently used), and cuts exactly the indexed frame ranges
(``exact`` files, ``copy``, or ``virtual`` clips that read the source). Videos that are missing or altered
are listed; their clips become ``error`` rows saying why, so ``lovr eval`` scores only what is available and
says so. It runs on the resumable map engine (one unit per video): a kill loses at most the video in flight,
and a rerun re-checks the videos that were not available (a copy added since is picked up).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset

from lovr_hf import schema
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.stage import Stage, StageResult
from lovr_hf.failures import input_failure
from lovr_hf.hub.publish import sha256_file
from lovr_hf.ids import safe_join
from lovr_hf.repo import DEFAULT_CLIPS_DIR, BenchmarkRepo

logger = logging.getLogger(__name__)

MISSING = "missing"
ALTERED = "altered"


@dataclasses.dataclass
class MaterializeConfig:
    clip_mode: str | None = None  # None: the mode each clip was built with (virtual stays virtual)
    output_dir: str | None = None  # default <repo>/clips
    verify: bool = True  # check size + SHA-256 of every source before cutting it
    batch_size: int = 1


class MaterializeStage(Stage):
    name = "materialize"
    input_key = schema.VIDEO_ID
    outputs = (schema.CLIPS, schema.VIDEOS)
    status_config = schema.VIDEOS
    runtime_fields: ClassVar[tuple[str, ...]] = ("batch_size",)

    def __init__(self, config: MaterializeConfig, input_folder: str, clips_dir: str, repo_root: str) -> None:
        super().__init__(config)
        self.input_folder = str(Path(input_folder).resolve())
        self.clips_dir = clips_dir
        self.repo_root = repo_root

    def fingerprint_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        return {**cfg, "output_dir": self.clips_dir}

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        clips: list[dict[str, Any]] = []
        videos: list[dict[str, Any]] = []
        for i in range(len(batch[schema.VIDEO_ID])):
            v, c = self.materialize_one({k: batch[k][i] for k in batch})
            videos.append(v)
            clips.extend(c)
        return {schema.CLIPS: clips, schema.VIDEOS: videos}

    def _locate(self, video: dict[str, Any]) -> tuple[str | None, str | None]:
        """(path of the user's copy, None) or (None, why it cannot be used)."""
        try:
            path = safe_join(self.input_folder, video["source_name"])
        except ValueError as exc:  # a source_name from a downloaded repo must not leave the input folder
            return None, f"{MISSING}: {exc}"
        if not path.is_file():
            return None, f"{MISSING}: {video['source_name']} not found under {self.input_folder}"
        size = video.get("size_bytes")
        if self.config.verify and size is not None and path.stat().st_size != size:
            return None, f"{ALTERED}: {video['source_name']} has {path.stat().st_size} bytes, the index {size}"
        sha = video.get("sha256")
        if self.config.verify and sha:
            got = sha256_file(path)
            if got != sha:
                return None, f"{ALTERED}: {video['source_name']} SHA-256 {got[:12]}… differs from the index {sha[:12]}…"
        return str(path), None

    def materialize_one(self, row: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from lovr_hf.video.clipper import cut_clips

        video = {c: None for c in schema.VIDEOS_FEATURES} | dict(row["video"])
        index = [{c: None for c in schema.CLIPS_FEATURES} | c for c in sorted(row["clips"], key=lambda c: c[schema.SLICE_NUM])]
        path, problem = self._locate(video)
        if problem is None:
            try:
                modes = {self.config.clip_mode or c["clip_mode"] or "exact" for c in index}
                if len(modes) != 1:
                    raise ValueError(f"clips of one video built in several modes {sorted(modes)}: pass --clip_mode")
                ranges = [(int(c["start_frame"]), int(c["end_frame"])) for c in index]
                files = cut_clips(path, ranges, self.clips_dir, video[schema.VIDEO_ID], mode=modes.pop(),
                                  fps=video.get("fps"))
                made = [f.to_row(video[schema.VIDEO_ID], video.get("fps") or f.num_frames, self.repo_root)
                        for f in files]
                for want, got in zip(index, made):
                    if (got["start_frame"], got["end_frame"], got[schema.CLIP_ID]) != (
                            want["start_frame"], want["end_frame"], want[schema.CLIP_ID]):
                        raise ValueError(f"{got[schema.CLIP_ID]}: cut {got['start_frame']}-{got['end_frame']}, "
                                         f"index {want['start_frame']}-{want['end_frame']}")
                video.update(path=path, status=schema.OK, error=None)
                return video, made
            except Exception as exc:  # an unreadable copy is an error row, never a crash (a bug: bug-marked)
                problem = f"cannot cut {video['source_name']}: {input_failure(exc).message}"
        logger.warning("%s: %s", video[schema.VIDEO_ID], problem)
        video.update(path=None, status=schema.ERROR, error=problem)
        rows = [{**c, "path": None, schema.STATUS: schema.ERROR, schema.ERROR_COL: f"source video {problem}"}
                for c in index]
        return video, rows


#: what identifies an indexed video and its clips: the unit's inputs (materialising rewrites the other columns)
VIDEO_INDEX = (schema.VIDEO_ID, "source_name", "duration_s", "fps", "num_frames", "width", "height", "rotation",
               "threshold", "size_bytes", "sha256")
CLIP_INDEX = (schema.VIDEO_ID, schema.CLIP_ID, schema.SLICE_NUM, "start_time", "end_time", "start_frame",
              "end_frame", "num_frames", "fps", "clip_mode")


def _found(input_folder: Path, source_name: str) -> str:
    """Size and mtime of the user's copy (part of the unit's inputs: a copy added or replaced is redone)."""
    try:
        st = safe_join(input_folder, source_name).stat()
    except (OSError, ValueError):
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def materialize_inputs(repo: BenchmarkRepo, input_folder: str | os.PathLike[str]) -> Dataset:
    """One row per indexed video (one with clips in the index): its index fields, its clips' index, and the
    identity of the copy found under ``input_folder``."""
    if not repo.has(schema.VIDEOS) or not repo.has(schema.CLIPS):
        raise FileNotFoundError(f"{repo.root} has no videos/clips index to materialise")
    folder = Path(input_folder).resolve()
    clips: dict[str, list[dict[str, Any]]] = {}
    for c in repo.read_table(schema.CLIPS).select(list(CLIP_INDEX)).to_pylist():
        clips.setdefault(c[schema.VIDEO_ID], []).append(c)
    rows = [{schema.VIDEO_ID: v[schema.VIDEO_ID], "video": v, "clips": clips[v[schema.VIDEO_ID]],
             "found": _found(folder, v["source_name"])}
            for v in repo.read_table(schema.VIDEOS).select(list(VIDEO_INDEX)).to_pylist()
            if clips.get(v[schema.VIDEO_ID])]
    return Dataset.from_list(rows)


@dataclasses.dataclass
class MaterializeReport:
    available: list[str]
    missing: list[str]
    altered: list[str]
    errors: list[str]
    result: StageResult


def materialize(repo: BenchmarkRepo | str, input_folder: str | os.PathLike[str],
                config: MaterializeConfig | None = None, control: RunControl | None = None) -> MaterializeReport:
    """Library entry point; returns which videos were available, missing or altered."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    config = config or MaterializeConfig()
    control = control or RunControl()
    if not Path(input_folder).is_dir():
        raise NotADirectoryError(f"--input_folder {input_folder} is not a folder")
    clips_dir = str(Path(config.output_dir).resolve() if config.output_dir else repo.root / DEFAULT_CLIPS_DIR)
    todo = materialize_inputs(repo, input_folder)
    stage = MaterializeStage(config, str(input_folder), clips_dir, str(repo.root))
    # a video that was missing or altered is looked for again on every run (the user may have added it)
    res = stage.apply(todo, repo, shard=control.shard(), num_proc=control.num_proc, rerun=control.rerun,
                      retry_failed=True)
    report = MaterializeReport([], [], [], [], res)
    if repo.has(schema.VIDEOS):
        for v in repo.read_table(schema.VIDEOS).to_pylist():
            err = v[schema.ERROR_COL] or ""
            bucket = (report.available if v[schema.STATUS] == schema.OK else report.missing if err.startswith(MISSING)
                      else report.altered if err.startswith(ALTERED) else report.errors)
            bucket.append(v["source_name"])
    logger.info("materialize: %d videos available, %d missing, %d altered, %d unreadable", len(report.available),
                len(report.missing), len(report.altered), len(report.errors))
    for label, names in (("missing", report.missing), ("altered", report.altered), ("unreadable", report.errors)):
        for n in names:
            logger.warning("  %s: %s", label, n)
    return report
