"""``lovr segment``: the command line of the segment stage (flags, the usage error, the exit code).

The flags of the original ``clip_segmentation.py`` (``--input_folder``, ``--output_dir``, ``--max_workers``)
keep working beside lovr_hf's own; the work is :func:`lovr_hf.segment.stage.segment`.
"""

from __future__ import annotations

import argparse
import sys

from lovr_hf.cli.common import add_common_args, config_from_args, control_from_args
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.summary import STAGE_CONFIGS, strict_exit
from lovr_hf.segment.stage import InputFolderError, SegmentConfig, segment
from lovr_hf.video import clip_store


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SegmentConfig()
    p.add_argument("--input_folder", "--input-folder", dest="input_folder", required=True,
                   help="folder of long videos (.mp4 .mkv .avi .webm .mov, any case; walked recursively)")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", default=None,
                   help="clip folder (default <repo>/clips); clips go to <output_dir>/<video_id>/")
    p.add_argument("--max_workers", "--max-workers", dest="num_proc", type=int, default=None, metavar="N",
                   help="videos segmented at once, in N worker processes (original LoVR flag; = --num-proc; "
                        "default: one)")
    p.add_argument("--no-recursive", dest="recursive", action="store_false", help="only the top folder")
    p.add_argument("--detector", default="content", help="content (default) | adaptive | pyscenedetect | transnetv2")
    p.add_argument("--threshold", type=float, default=34.0,
                   help="detector threshold (default 34.0, the original's ContentDetector threshold; with "
                        "--detector adaptive the default is the AdaptiveDetector's 3.0)")
    p.add_argument("--min_clip_duration", "--min-clip-duration", dest="min_clip_duration", type=float, default=5.0,
                   help="minimum scene in seconds (default 5.0, the original's); int(seconds * fps) frames, "
                        "truncated as the original")
    p.add_argument("--downscale", default=d.downscale,
                   help="'auto' (default: PySceneDetect's automatic factor, max(width, height) / 256, which is "
                        "what the original ran with) or an integer factor (lovr_hf used 3)")
    p.add_argument("--merge-short-tail", dest="merge_short_tail", action="store_true",
                   help="join a last scene shorter than the minimum to the previous clip (the original keeps "
                        "it as its own clip)")
    p.add_argument("--adaptive", action="store_true", help="original adaptive-threshold loop (opt-in)")
    p.add_argument("--min_clips", "--min-clips", dest="min_clips", type=int, default=d.min_clips,
                   help=f"with --adaptive: lower the threshold (x0.9) while a video has fewer clips than this "
                        f"(default {d.min_clips})")
    p.add_argument("--max_clips", "--max-clips", dest="max_clips", type=int, default=d.max_clips,
                   help=f"with --adaptive: raise the threshold (x1.1) while a video has more clips than this "
                        f"(default {d.max_clips})")
    p.add_argument("--clip_mode", "--clip-mode", dest="clip_mode", choices=("exact", "copy", "virtual"),
                   default=d.clip_mode,
                   help=f"exact: re-encoded, frame-accurate files as the original's (default {d.clip_mode}); "
                        "copy: stream copy from the key frame before each start (no re-encode); virtual: no "
                        "files, rows point into the source")
    p.add_argument("--crf", type=int, default=d.crf, help=f"exact clips: libx264 CRF (default {d.crf}, the original's)")
    p.add_argument("--preset", default=d.preset, help=f"exact clips: libx264 preset (default {d.preset})")
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="exact clips without audio (the original keeps every audio stream as AAC)")
    p.add_argument("--two-pass", dest="single_pass", action="store_false",
                   help="detect, then cut (decodes each video twice); by default exact clips of the content "
                        "detector are cut while detecting, in one decoding pass")
    p.add_argument("--clip-layout", dest="clip_layout", choices=clip_store.LAYOUTS, default=d.clip_layout,
                   help=f"auto (default): <output_dir>/<video_id>/ up to {clip_store.MAX_FOLDER_ENTRIES} videos, "
                        "hash buckets beyond; flat; bucketed")
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(SegmentConfig, args)
    if args.detector == "adaptive" and args.threshold == 34.0:
        config.threshold = None  # AdaptiveDetector has its own scale (default 3.0)
    control = control_from_args(args)
    try:
        segment(args.input_folder, control.repo, config, control, recursive=args.recursive)
    except InputFolderError as exc:
        print(f"lovr segment: {exc}", file=sys.stderr)
        return 2
    return strict_exit(BenchmarkRepo(control.repo), {"segment": STAGE_CONFIGS["segment"]}, strict=control.strict)
