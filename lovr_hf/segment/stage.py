"""Stage 1: long videos -> scene clips (``videos`` and ``clips`` configs).

One ``Dataset.map`` over the ``videos`` rows: each video is probed and hashed, its cuts detected, its
scene ranges fixed by the rule in :func:`lovr_hf.video.scenes.scenes_from_cuts`, and its clips cut (``exact``
re-encoded, ``copy`` or ``virtual``). A video is committed with all its clip rows at once, after its clip
files are complete, so a kill never leaves a half-segmented video counted as done.

Defaults are what the original ``clip_segmentation.py`` effectively did: ContentDetector semantics with
threshold 34, a minimum scene of ``int(5 s * fps)`` frames, PySceneDetect's *automatic* downscale (the
original's ``set_downscale_factor(3)`` was a no-op), the scene list as PySceneDetect returns it (a short
last scene stays its own clip), and clip files as ``split_video_ffmpeg`` writes them (libx264 veryfast
CRF 22, audio kept as AAC). lovr_hf's deliberate differences are options: ``--downscale N``,
``--merge-short-tail``, ``--crf``, ``--no-audio``; and one is not an option: a video without a cut is one
clip (the original silently dropped it). Clip files are staged per setting and published when the stage
gathers (:mod:`lovr_hf.video.clip_store`), so settings never overwrite each other's files.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, Features, Value

from lovr_hf import schema
from lovr_hf.engine.control import RunControl
from lovr_hf.engine.cpu_budget import cpu_count
from lovr_hf.engine.stage import Stage, StageResult
from lovr_hf.failures import input_failure
from lovr_hf.ids import safe_id, short_hash
from lovr_hf.locks import gather_locked
from lovr_hf.repo import DEFAULT_CLIPS_DIR, BenchmarkRepo
from lovr_hf.segment import detect_and_cut
from lovr_hf.video import clip_store

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")
MIN_VIDEO_FRAMES = 2  # a 1-frame "video" is an error, not a clip

FILES_FEATURES = Features(
    {
        schema.VIDEO_ID: Value("string"),
        "source_name": Value("string"),
        "path": Value("string"),
        "scan_error": Value("string"),
        # identity of the file as scanned: a replaced or rewritten source is a changed input
        "size_bytes": Value("int64"),
        "mtime_ns": Value("int64"),
    }
)


class InputFolderError(ValueError):
    """``--input_folder`` is not a folder or holds no video file: a usage error (``lovr segment`` exits 2 with
    one line, no traceback, and creates no repo), not a video to record as an error row."""


@dataclasses.dataclass
class SegmentConfig:
    """What decides the clips (all of it is in the fingerprint except ``batch_size``; options that cannot
    change a given clip mode's output are left out of its fingerprint)."""

    detector: str = "content"
    threshold: float | None = 34.0  # None = the detector's own default (adaptive: 3.0)
    min_clip_duration: float = 5.0  # -> int(min_clip_duration * fps) frames, truncated as the original
    downscale: int | str = "auto"  # PySceneDetect's automatic factor (the original's); an int fixes it
    merge_short_tail: bool = False  # lovr_hf's option: a last scene under the minimum joins the previous clip
    adaptive: bool = False  # the original's threshold loop (x0.9 below min_clips, x1.1 above max_clips)
    min_clips: int = 64
    max_clips: int = 100
    max_adaptive_iter: int = 10
    clip_mode: str = "exact"
    crf: int = 22  # exact mode: split_video_ffmpeg's libx264 CRF
    preset: str = "veryfast"  # exact mode: split_video_ffmpeg's libx264 preset
    audio: bool = True  # exact mode: keep the source's audio streams (AAC), as split_video_ffmpeg
    clip_layout: str = "auto"  # auto | flat | bucketed (see lovr_hf.video.clip_store)
    output_dir: str | None = None  # default <repo>/clips
    single_pass: bool = True  # detect and cut exact clips in one decoding pass where that gives the same clips
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
        problem, st = _scan_problem(p)
        rows.append({schema.VIDEO_ID: vid, "source_name": rel, "path": str(p.absolute()), "scan_error": problem,
                     "size_bytes": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None})
    if not rows:  # (Dataset.from_list([]) has no columns with datasets 5: "Keys mismatch")
        return Dataset.from_dict({k: [] for k in FILES_FEATURES}, features=FILES_FEATURES)
    return Dataset.from_list(rows, features=FILES_FEATURES)


def _scan_problem(p: Path) -> tuple[str | None, os.stat_result | None]:
    try:
        st = os.stat(p)  # follows links: raises on dangling links and loops
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop", None
        return f"cannot stat: {exc.strerror or exc}", None
    if os.path.isdir(p):
        return "is a directory, not a video file", None
    if st.st_size == 0:
        return "empty file (0 bytes)", st
    return None, st


class SegmentStage(Stage):
    name = "segment"
    input_key = schema.VIDEO_ID
    outputs = (schema.CLIPS, schema.VIDEOS)
    status_config = schema.VIDEOS
    runtime_fields: ClassVar[tuple[str, ...]] = ("batch_size", "single_pass")

    def __init__(self, config: SegmentConfig, clips_dir: str | os.PathLike[str], repo_root: str,
                 num_videos: int = 0, threads: int = 0) -> None:
        super().__init__(config)
        self.clips_dir = str(Path(clips_dir).resolve())
        self.repo_root = repo_root
        self.layout = clip_store.resolve_layout(config.clip_layout, num_videos)
        self.threads = int(threads)  # decoder/encoder threads per video (0: automatic, one video at a time)
        self._work: str | None = None

    def fingerprint_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        cfg["output_dir"] = self.clips_dir
        cfg["clip_layout"] = self.layout
        cfg["downscale"] = str(cfg["downscale"]).lower()  # 3 and "3" are one setting
        if cfg["clip_mode"] != "exact":  # copy/virtual write no re-encoded video and no audio
            for k in ("crf", "preset", "audio"):
                cfg.pop(k, None)
        if cfg["clip_mode"] == "virtual":  # no files: where they would go does not matter
            cfg.pop("output_dir", None)
            cfg.pop("clip_layout", None)
        if not cfg["adaptive"]:
            for k in ("min_clips", "max_clips", "max_adaptive_iter"):
                cfg.pop(k, None)
        return cfg

    @property
    def work(self) -> Path:
        """This setting's work folder (its staging folder for clip files is inside)."""
        # getattr: Stage.__getstate__ drops "_" attributes when datasets pickles the stage for --max_workers N,
        # so a worker process gets a stage without ``_work`` and computes it again (the same path)
        if getattr(self, "_work", None) is None:
            self._work = str(self.work_path(BenchmarkRepo(self.repo_root)))
        return Path(self._work)

    def _detector(self, threshold: float | None) -> Any:
        from lovr_hf.backends.base import DETECTORS

        c = self.config
        det = DETECTORS.create(c.detector, threshold=threshold, min_scene_len_s=c.min_clip_duration,
                               downscale=c.downscale)
        det.threads = self.threads
        return det

    def process(self, batch: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
        clips: list[dict[str, Any]] = []
        videos: list[dict[str, Any]] = []
        for i in range(len(batch[schema.VIDEO_ID])):
            row = {k: batch[k][i] for k in batch}
            v, c = self.segment_one(row)
            videos.append(v)
            clips.extend(c)
        return {schema.CLIPS: clips, schema.VIDEOS: videos}

    def _detect(self, det: Any, path: str, num_frames: int, fps: float) -> tuple[list[int], float | None, float | None]:
        """Cuts, the threshold they were found at, and the downscale factor used."""
        c = self.config
        if not c.adaptive:
            res = det.analyze(path)
            if res is None:
                return det.detect(path), det.threshold, None
            return res.cuts, res.threshold, res.extra.get("downscale")
        from lovr_hf.video.scenes import adaptive_threshold_search, scenes_from_cuts

        factor = None
        if det.rescorable:
            fs = det.scores(path)  # decode once; each threshold tried is a re-threshold
            factor = fs.downscale
            detect_at = lambda thr: det.cuts_from_scores(fs, thr)  # noqa: E731
        else:
            detect_at = lambda thr: self._detector(thr).detect(path)  # noqa: E731
        search = adaptive_threshold_search(
            detect_at,
            start=c.threshold if c.threshold is not None else 34.0,
            min_clips=c.min_clips, max_clips=c.max_clips, max_iter=c.max_adaptive_iter,
            count_fn=lambda cuts: len(scenes_from_cuts(cuts, num_frames, fps, c.min_clip_duration,
                                                       merge_short_tail=c.merge_short_tail)),
        )
        logger.info("%s: adaptive threshold settled on %.3f after %d tries (%s)", path, search.threshold,
                    search.iterations, search.history)
        return search.cuts, search.threshold, factor

    def segment_one(self, row: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One video -> its ``videos`` row and clip rows; any failure becomes an error row, never a crash."""
        from lovr_hf.video.clipper import cut_clips
        from lovr_hf.video.reader import probe
        from lovr_hf.video.scenes import scenes_from_cuts

        vid, path = row[schema.VIDEO_ID], row["path"]
        video = {schema.VIDEO_ID: vid, "source_name": row["source_name"], "path": path, "duration_s": None,
                 "fps": None, "num_frames": None, "width": None, "height": None, "rotation": None,
                 "threshold": None, "downscale": None, "size_bytes": row.get("size_bytes"), "sha256": None,
                 schema.STATUS: schema.OK, schema.ERROR_COL: None}
        if row.get("scan_error"):
            return {**video, schema.STATUS: schema.ERROR, schema.ERROR_COL: row["scan_error"]}, []
        t0 = time.perf_counter()
        # the source's SHA-256 is read on a thread while the video is decoded (the file is read anyway)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lovr-hash")
        digest: Future = pool.submit(clip_store.file_digest, path)
        try:
            info = probe(path)
            video.update(duration_s=info.duration_s, fps=info.fps, num_frames=info.num_frames,
                         width=info.width, height=info.height, rotation=info.rotation)
            if info.num_frames < MIN_VIDEO_FRAMES:
                raise ValueError(f"too short: {info.num_frames} frame(s), need at least {MIN_VIDEO_FRAMES}")
            c = self.config
            det = self._detector(c.threshold)
            if c.single_pass and detect_and_cut.supports(det, clip_mode=c.clip_mode, adaptive=c.adaptive,
                                                         merge_short_tail=c.merge_short_tail,
                                                         rotation=info.rotation):
                res, files = detect_and_cut.detect_and_cut(
                    path, self._fresh_staging(vid), vid, det, min_clip_s=c.min_clip_duration, preset=c.preset,
                    crf=c.crf, audio=c.audio, threads=self.threads)
                clip_rows = self._rows(vid, files, info.fps)
                threshold, factor = res.threshold, res.extra.get("downscale")
            else:
                cuts, threshold, factor = self._detect(det, path, info.num_frames, info.fps)
                ranges = scenes_from_cuts(cuts, info.num_frames, info.fps, c.min_clip_duration,
                                          merge_short_tail=c.merge_short_tail)
                clip_rows = self._cut(path, vid, ranges, info.fps, cut_clips)
            video.update(threshold=threshold, downscale=factor)
            logger.debug("%s: %d clips in %.1fs", vid, len(clip_rows), time.perf_counter() - t0)
            return self._with_digest(video, digest), clip_rows
        except Exception as exc:  # one bad video must never stop the run
            logger.warning("%s (%s): %s", vid, row["source_name"], exc)
            video = self._with_digest(video, digest)
            # a full disk, a permission or a bug is not the video's fault: failed (retryable), not error
            f = input_failure(exc)
            return {**video, schema.STATUS: f.status, schema.ERROR_COL: f.message}, []
        finally:
            pool.shutdown(wait=True)

    @staticmethod
    def _with_digest(video: dict[str, Any], digest: Future) -> dict[str, Any]:
        try:
            size, sha = digest.result()
        except OSError as exc:
            logger.warning("%s: cannot hash the source: %s", video[schema.VIDEO_ID], exc)
            return video
        return {**video, "size_bytes": size, "sha256": sha}

    def _fresh_staging(self, vid: str) -> Path:
        """This setting's staging root, with the video's folder emptied (leftovers of a killed attempt)."""
        staging = clip_store.staging_root(self.work)
        shutil.rmtree(staging / vid, ignore_errors=True)
        return staging

    def _rows(self, vid: str, files: list[Any], fps: float) -> list[dict]:
        """Clip rows of staged files, with the paths the files get when published."""
        repo = BenchmarkRepo(self.repo_root)
        rows = []
        for f in files:
            r = f.to_row(vid, fps, self.repo_root)
            r["path"] = repo.relative(clip_store.clip_file(self.clips_dir, vid, f.slice_num, len(files), self.layout))
            rows.append(r)
        return rows

    def _cut(self, path: str, vid: str, ranges: list[tuple[int, int]], fps: float, cut_clips: Any) -> list[dict]:
        """Clip files into this setting's staging folder; rows with their published paths and digests."""
        c = self.config
        if c.clip_mode == "virtual":
            files = cut_clips(path, ranges, self.clips_dir, vid, mode="virtual")
            return [f.to_row(vid, fps, self.repo_root) for f in files]
        files = cut_clips(path, ranges, self._fresh_staging(vid), vid, mode=c.clip_mode, crf=c.crf, preset=c.preset,
                          audio=c.audio, threads=self.threads)
        return self._rows(vid, files, fps)

    def verify_unit(self, key: str, rows: dict[str, list[dict[str, Any]]]) -> bool:
        """A committed video can be reused only while each of its clip files is there (staged or published)
        with the size its row records: one deleted or rewritten since is re-cut, not reported as an error."""
        for r in rows.get(schema.CLIPS, []):
            if r["clip_mode"] not in clip_store.FILE_MODES or not r.get("path"):
                continue
            staged = clip_store.staged_file(self.work, r[schema.VIDEO_ID], r[schema.CLIP_ID])
            path = staged if staged.is_file() else Path(self.repo_root) / r["path"]
            try:
                size = path.stat().st_size
            except OSError:
                return False
            if r.get("file_size") is not None and size != r["file_size"]:
                return False
        return True

    @gather_locked  # the clip files' publishing below is part of the gather: one process at a time
    def gather(self, repo: BenchmarkRepo, *args: Any, **kwargs: Any) -> dict[str, Dataset]:
        """The engine's gather, then the clip files follow the tables (see :mod:`lovr_hf.video.clip_store`):
        other file-writing settings are superseded, staged files are published, files no table references
        any more are deleted, and a row whose file is missing or changed is marked ``error``."""
        # (repo.read_or_empty fails for a missing config with datasets 5: Dataset.from_list([]) has no columns)
        # a corrupt clips table is rebuilt from the work state, not read (repo.verify names its problem)
        prev = (repo.read(schema.CLIPS).to_list()
                if repo.has(schema.CLIPS) and not repo.verify([schema.CLIPS]) else [])
        out = super().gather(repo, *args, **kwargs)
        if schema.CLIPS not in out:  # the engine found nothing changed since its last gather: tables kept
            out = {cfg: repo.read(cfg) for cfg in self.outputs if repo.has(cfg)}
            if schema.CLIPS not in out:
                return out
        report = clip_store.PublishReport()
        clip_store.drop_superseded(self.work.parent, self.work.name, report)
        cur = out[schema.CLIPS].to_list()
        bad = clip_store.publish(cur, self.work, repo.resolve, report)
        clip_store.remove_unreferenced(prev, cur, repo.resolve, report)
        clip_store.remove_orphans(Path(self.clips_dir), cur, repo.resolve, report)
        videos = out[schema.VIDEOS]
        clip_store.clean_staging(self.work, set(videos[schema.VIDEO_ID]))
        report.log()
        if bad:
            for r in cur:
                if r[schema.CLIP_ID] in bad:
                    r[schema.STATUS] = schema.ERROR
                    r[schema.ERROR_COL] = ("clip file missing or changed since it was made: "
                                           f"{r['path']} (run segment with --rerun)")
            repo.write(schema.CLIPS, cur)
            out[schema.CLIPS] = repo.read(schema.CLIPS)
        return out


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
    try:
        files = scan_videos(input_folder, recursive=recursive)
    except NotADirectoryError as exc:
        raise InputFolderError(str(exc)) from None
    if not len(files):
        raise InputFolderError(f"--input_folder {input_folder} holds no video file "
                               f"({' '.join(VIDEO_EXTENSIONS)}, any case{', sub-folders included' if recursive else ''})")
    stage = SegmentStage(config, clips_dir, str(repo.root), num_videos=len(files),
                         threads=threads_per_video(control.num_proc, len(files)))
    # what can be checked before the rows: a detector name or class that does not resolve, or settings it
    # refuses, is the user's one error (exit 2), not a failed row per video
    stage._detector(config.threshold)
    stage.digest_files = ("path",)  # a source file replaced under the same name is segmented again
    # clip files follow the tables through lovr_hf.video.clip_store (staged per setting, published at gather), and a
    # reused unit whose file is gone or changed is re-cut (verify_unit), so the engine's owned_files is unused
    if control.gather_only:
        return stage.gather_result(repo, files, allow_partial=control.allow_partial)
    res = stage.apply(files, repo, shard=control.shard(), num_proc=control.num_proc, rerun=control.rerun,
                      retry_failed=control.retry_failed)
    if repo.has(schema.VIDEOS):
        summarize(repo, res)
    return res


def threads_per_video(num_proc: int | None, num_videos: int) -> int:
    """Decoder/encoder threads for each video when ``num_proc`` videos run at once: the machine's CPUs
    shared among them, so that N processes do not each start a full set of FFmpeg and x264 threads
    (N x CPUs threads fighting for CPUs). 0 (FFmpeg's and x264's automatic counts) for one video at a time."""
    procs = min(int(num_proc or 1), max(1, num_videos))
    if procs <= 1:
        return 0
    return max(1, cpu_count() // procs)


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
