"""Stage 1: long videos -> scene clips (``videos`` and ``clips`` configs).

One ``Dataset.map`` over the ``videos`` rows: each video is probed, its cuts detected (content-based by
default, as LoVR: threshold 34, min clip 5 s, downscale 3), its scene ranges fixed by the rule in
:func:`lovr_hf.scenes.scenes_from_cuts`, and its clips cut (``exact`` re-encoded, ``copy`` or
``virtual``). A video is committed with all its clip rows at once, after its clip files are complete,
so a kill never leaves a half-segmented video counted as done.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, Features, Value

from lovr_hf import schema
from lovr_hf.cli_common import RunControl, add_common_args, config_from_args, control_from_args
from lovr_hf.ids import safe_id, short_hash
from lovr_hf.repo import DEFAULT_CLIPS_DIR, BenchmarkRepo
from lovr_hf.stage import Stage, StageResult

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")
MIN_VIDEO_FRAMES = 2  # a 1-frame "video" is an error, not a clip

FILES_FEATURES = Features(
    {
        schema.VIDEO_ID: Value("string"),
        "source_name": Value("string"),
        "path": Value("string"),
        "scan_error": Value("string"),
    }
)


@dataclasses.dataclass
class SegmentConfig:
    """What decides the clips (all of it is in the fingerprint except ``batch_size``)."""

    detector: str = "content"
    threshold: float | None = 34.0  # None = the detector's own default (adaptive: 3.0)
    min_clip_duration: float = 5.0
    downscale: int = 3
    adaptive: bool = False  # the original's threshold loop (x0.9 below min_clips, x1.1 above max_clips)
    min_clips: int = 64
    max_clips: int = 100
    max_adaptive_iter: int = 10
    clip_mode: str = "exact"
    output_dir: str | None = None  # default <repo>/clips
    batch_size: int = 1


def scan_videos(input_folder: str | os.PathLike[str], recursive: bool = True) -> Dataset:
    """Every file with a video extension (case-insensitive) under ``input_folder`` -> a files table.

    Recursive by default (sub-folders are walked; symlinked folders are not followed, so a symlink loop
    cannot hang the scan). Entries that cannot be videos (a directory named ``x.mp4``, a dangling or
    looping link) are kept with a ``scan_error`` so they show up as error rows instead of vanishing.
    Ids come from the relative path via :func:`lovr_hf.ids.safe_id`; collisions get a hash suffix.
    """
    root = Path(input_folder).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"--input_folder {root} is not a folder")
    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        names = sorted(filenames) + [d for d in dirnames if d.lower().endswith(VIDEO_EXTENSIONS)]
        for name in names:
            if name.lower().endswith(VIDEO_EXTENSIONS):
                p = Path(dirpath) / name
                entries.append((p.relative_to(root).as_posix(), p))
        if not recursive:
            break
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for rel, p in sorted(entries):
        vid = safe_id(rel if "/" in rel else p.name)
        if vid in used:
            vid = f"{vid}-{short_hash(rel)}"
        used.add(vid)
        rows.append({schema.VIDEO_ID: vid, "source_name": rel, "path": str(p.absolute()),
                     "scan_error": _scan_problem(p)})
    return Dataset.from_list(rows, features=FILES_FEATURES)


def _scan_problem(p: Path) -> str | None:
    try:
        st = os.stat(p)  # follows links: raises on dangling links and loops
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"cannot stat: {exc.strerror or exc}"
    if os.path.isdir(p):
        return "is a directory, not a video file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


class SegmentStage(Stage):
    name = "segment"
    input_key = schema.VIDEO_ID
    outputs = (schema.CLIPS, schema.VIDEOS)
    status_config = schema.VIDEOS
    runtime_fields: ClassVar[tuple[str, ...]] = ("batch_size",)

    def __init__(self, config: SegmentConfig, clips_dir: str | os.PathLike[str], repo_root: str) -> None:
        super().__init__(config)
        self.clips_dir = str(Path(clips_dir).resolve())
        self.repo_root = repo_root

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = super().fingerprint_payload()
        payload["config"]["output_dir"] = self.clips_dir
        return payload

    def _detector(self, threshold: float | None) -> Any:
        from lovr_hf.backends.base import DETECTORS

        c = self.config
        return DETECTORS.create(c.detector, threshold=threshold, min_scene_len_s=c.min_clip_duration,
                                downscale=c.downscale)

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        clips: list[dict[str, Any]] = []
        videos: list[dict[str, Any]] = []
        for i in range(len(batch[schema.VIDEO_ID])):
            row = {k: batch[k][i] for k in batch}
            v, c = self.segment_one(row)
            videos.append(v)
            clips.extend(c)
        return {schema.CLIPS: clips, schema.VIDEOS: videos}

    def segment_one(self, row: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One video -> its ``videos`` row and clip rows; any failure becomes an error row, never a crash."""
        from lovr_hf.clipper import cut_clips
        from lovr_hf.scenes import adaptive_threshold_search, scenes_from_cuts
        from lovr_hf.video import probe

        vid, path = row[schema.VIDEO_ID], row["path"]
        video = {schema.VIDEO_ID: vid, "source_name": row["source_name"], "path": path, "duration_s": None,
                 "fps": None, "num_frames": None, "width": None, "height": None, "rotation": None,
                 "threshold": None, schema.STATUS: schema.OK, schema.ERROR_COL: None}
        if row.get("scan_error"):
            return {**video, schema.STATUS: schema.ERROR, schema.ERROR_COL: row["scan_error"]}, []
        t0 = time.perf_counter()
        try:
            info = probe(path)
            video.update(duration_s=info.duration_s, fps=info.fps, num_frames=info.num_frames,
                         width=info.width, height=info.height, rotation=info.rotation)
            if info.num_frames < MIN_VIDEO_FRAMES:
                raise ValueError(f"too short: {info.num_frames} frame(s), need at least {MIN_VIDEO_FRAMES}")
            c = self.config
            if c.adaptive:
                det = self._detector(c.threshold)
                if hasattr(det, "scores") and hasattr(det, "cuts_from_scores"):
                    fs = det.scores(path)  # decode once; each threshold tried is a re-threshold
                    detect_at = lambda thr: det.cuts_from_scores(fs, thr)  # noqa: E731
                else:
                    detect_at = lambda thr: self._detector(thr).detect(path)  # noqa: E731
                search = adaptive_threshold_search(
                    detect_at,
                    start=c.threshold if c.threshold is not None else 34.0,
                    min_clips=c.min_clips, max_clips=c.max_clips, max_iter=c.max_adaptive_iter,
                    count_fn=lambda cuts: len(scenes_from_cuts(cuts, info.num_frames, info.fps,
                                                               c.min_clip_duration)),
                )
                cuts = search.cuts
                logger.info("%s: adaptive threshold settled on %.3f after %d tries (%s)", vid,
                            search.threshold, search.iterations, search.history)
            else:
                cuts = self._detector(c.threshold).detect(path)
            ranges = scenes_from_cuts(cuts, info.num_frames, info.fps, c.min_clip_duration)
            files = cut_clips(path, ranges, self.clips_dir, vid, mode=c.clip_mode)
            clip_rows = [f.to_row(vid, info.fps, self.repo_root) for f in files]
            video["threshold"] = search.threshold if c.adaptive else c.threshold
            logger.debug("%s: %d clips in %.1fs", vid, len(clip_rows), time.perf_counter() - t0)
            return video, clip_rows
        except Exception as exc:  # one bad video must never stop the run
            logger.warning("%s (%s): %s", vid, row["source_name"], exc)
            return {**video, schema.STATUS: schema.ERROR, schema.ERROR_COL: f"{type(exc).__name__}: {exc}"}, []


def segment(
    input_folder: str | os.PathLike[str],
    repo: BenchmarkRepo | str,
    config: SegmentConfig | None = None,
    control: RunControl | None = None,
    *,
    recursive: bool = True,
) -> StageResult:
    """Library entry point: segment every video under ``input_folder`` into ``repo``'s clips/videos."""
    config = config or SegmentConfig()
    control = control or RunControl()
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    clips_dir = Path(config.output_dir) if config.output_dir else repo.root / DEFAULT_CLIPS_DIR
    files = scan_videos(input_folder, recursive=recursive)
    if not len(files):
        logger.warning("no video files (%s) under %s", ", ".join(VIDEO_EXTENSIONS), input_folder)
    stage = SegmentStage(config, clips_dir, str(repo.root))
    stage.digest_files = ("path",)  # a source file replaced under the same name is segmented again
    stage.owned_files = {schema.CLIPS: ("path", str(clips_dir))}  # clip files of removed clips are deleted
    if control.gather_only:
        return stage.gather_result(repo, files, allow_partial=control.allow_partial)
    res = stage.apply(files, repo, shard=control.shard(), num_proc=control.num_proc, rerun=control.rerun,
                      retry_failed=control.retry_failed)
    if repo.has(schema.VIDEOS):
        summarize(repo, res)
    return res


def summarize(repo: BenchmarkRepo, res: StageResult) -> dict[str, Any]:
    videos = repo.read(schema.VIDEOS)
    clips = repo.read_or_empty(schema.CLIPS)
    ok = [r for r in videos if r[schema.STATUS] == schema.OK]
    frames = sum(r["num_frames"] or 0 for r in ok)
    stats = {
        "videos_ok": len(ok),
        "videos_failed": videos.num_rows - len(ok),
        "clips": clips.num_rows,
        "hours": sum(r["duration_s"] or 0 for r in ok) / 3600,
        "fps": frames / res.seconds if res.seconds and res.processed else 0.0,
    }
    res.stats.update(stats)
    logger.info(
        "segment: %d videos ok, %d failed, %d clips, %.2f h of video%s",
        stats["videos_ok"], stats["videos_failed"], stats["clips"], stats["hours"],
        f", {stats['fps']:.0f} frames/s" if stats["fps"] else "",
    )
    for r in videos:
        if r[schema.STATUS] != schema.OK:
            logger.info("  %s (%s): %s", r[schema.VIDEO_ID], r["source_name"], r[schema.ERROR_COL])
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input_folder", "--input-folder", dest="input_folder", required=True,
                   help="folder of long videos (.mp4 .mkv .avi .webm .mov, any case; walked recursively)")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", default=None,
                   help="clip folder (default <repo>/clips); clips go to <output_dir>/<video_id>/")
    p.add_argument("--max_workers", "--max-workers", dest="num_proc", type=int, default=None,
                   help="parallel videos (original LoVR flag; = --num-proc)")
    p.add_argument("--no-recursive", dest="recursive", action="store_false", help="only the top folder")
    p.add_argument("--detector", default="content", help="content (default) | adaptive | pyscenedetect | transnetv2")
    p.add_argument("--threshold", type=float, default=34.0)
    p.add_argument("--min_clip_duration", "--min-clip-duration", dest="min_clip_duration", type=float, default=5.0)
    p.add_argument("--downscale", type=int, default=3)
    p.add_argument("--adaptive", action="store_true", help="original adaptive-threshold loop (opt-in)")
    p.add_argument("--min_clips", "--min-clips", dest="min_clips", type=int, default=64)
    p.add_argument("--max_clips", "--max-clips", dest="max_clips", type=int, default=100)
    p.add_argument("--clip_mode", "--clip-mode", dest="clip_mode", choices=("exact", "copy", "virtual"),
                   default="exact")
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(SegmentConfig, args)
    if args.detector == "adaptive" and args.threshold == 34.0:
        config.threshold = None  # AdaptiveDetector has its own scale (default 3.0)
    control = control_from_args(args)
    segment(args.input_folder, control.repo, config, control, recursive=args.recursive)
    repo = BenchmarkRepo(control.repo)
    if control.strict and repo.has(schema.VIDEOS):
        bad = repo.read(schema.VIDEOS).filter(lambda r: r[schema.STATUS] != schema.OK)
        return 1 if bad.num_rows else 0
    return 0
