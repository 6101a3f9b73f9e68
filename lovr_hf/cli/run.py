"""``lovr run``: segment -> caption -> merge -> (eval) end to end, resuming; flags over a ``--config`` file.

Argument parsing and the exit code only: the work is :func:`lovr_hf.pipeline.run_pipeline`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from lovr_hf.cli.common import add_common_args, control_from_args, split_list
from lovr_hf.engine.stage import MissingChunksError
from lovr_hf.pipeline import load_config, run_pipeline
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML/JSON file with every option (flags override it)")
    p.add_argument("--input_folder", "--input-folder", dest="input_folder", default=None,
                   help="folder of long videos (required here or in --config)")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", default=None, help="clip folder")
    g = p.add_argument_group("segment")
    g.add_argument("--detector", default=None, help="scene detector: content (default) | adaptive | pyscenedetect | "
                                                  "transnetv2")
    g.add_argument("--threshold", type=float, default=None,
                   help="detector threshold (default 34.0, the original's ContentDetector threshold)")
    g.add_argument("--min_clip_duration", "--min-clip-duration", dest="min_clip_duration", type=float, default=None,
                   help="minimum scene in seconds (default 5.0, the original's)")
    g.add_argument("--clip_mode", "--clip-mode", dest="clip_mode", default=None, choices=("exact", "copy", "virtual"),
                   help="exact: re-encoded, frame-accurate clip files as the original's (default); copy: stream "
                        "copy from the key frame before each start; virtual: no files")
    g.add_argument("--downscale", default=None, help="detection downscale: auto (PySceneDetect's, default) or N")
    g.add_argument("--merge-short-tail", dest="merge_short_tail", action="store_true", default=None,
                   help="join a last scene shorter than the minimum to the previous clip (the original keeps it)")
    g.add_argument("--crf", type=int, default=None, help="exact clips: libx264 CRF (default 22)")
    g.add_argument("--no-audio", dest="no_audio", action="store_true", default=None,
                   help="exact clips without audio (the original keeps every audio stream as AAC)")
    g = p.add_argument_group("caption")
    g.add_argument("--captioner", default=None, help="caption backend: transformers | vllm | openai | describer (offline stand-in) | dummy | module:Class")
    g.add_argument("--model-path", "--model_path", dest="caption_model", default=None, help="captioning VLM")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="clips per captioning call (default 8)")
    g.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=None,
                   help="caption length limit in tokens (default: the original captioner's)")
    g.add_argument("--greedy", action="store_true", default=None, help="greedy caption decoding (deterministic)")
    g.add_argument("--min-quality", dest="min_quality", type=float, default=None,
                   help="caption quality threshold (0-10): re-caption below it (default: off)")
    g.add_argument("--api-server", dest="api_server", default=None, choices=("openai", "vllm"),
                   help="openai captioner: the server kind (vllm adds its sampling and video fields)")
    g = p.add_argument_group("merge")
    g.add_argument("--llm", default=None, help="merge LLM backend: openai | transformers | dummy | module:Class")
    g.add_argument("--merge-model", dest="merge_model", default=None,
                   help="merge model: API model name (openai) or Hub id/folder/.gguf/'smollm2' (transformers)")
    g.add_argument("--api-base", dest="api_base", default=None,
                   help="OpenAI-compatible server of both the captioner and the merge LLM")
    g.add_argument("--caption-api-base", dest="caption_api_base", default=None,
                   help="the captioner's server (overrides --api-base)")
    g.add_argument("--merge-api-base", dest="merge_api_base", default=None,
                   help="the merge LLM's server (overrides --api-base)")
    g.add_argument("--num-workers", dest="num_workers", type=int, default=None,
                   help="concurrent merge LLM requests (original flag; default 8)")
    g = p.add_argument_group("eval")
    g.add_argument("--eval-models", "--eval-model", dest="eval_models", action="append", default=None,
                   help="models to evaluate: a comma list and/or repeated")
    g.add_argument("--eval-backend", dest="eval_backend", default=None,
                   help="embedder backend of --eval-models (default auto: picked by the family table)")
    g.add_argument("--interval", type=int, default=None,
                   help="eval: sample every K frames (default 10 for CLIP, else 30)")
    g.add_argument("--protocol", default=None, choices=("lovr", "original"),
                   help="eval: lovr (default) or original (the original scripts, differences and all)")
    add_common_args(p)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    seg = {k: getattr(args, k) for k in ("detector", "threshold", "min_clip_duration", "clip_mode", "output_dir",
                                         "merge_short_tail", "crf")}
    if args.downscale is not None:
        seg["downscale"] = args.downscale if args.downscale == "auto" else int(args.downscale)
    if args.no_audio:
        seg["audio"] = False
    cap = {"backend": args.captioner, "model_path": args.caption_model, "batch_size": args.batch_size,
           "max_new_tokens": args.max_new_tokens, "min_quality": args.min_quality,
           "api_base": getattr(args, "caption_api_base", None) or args.api_base,
           "api_server": args.api_server}
    if args.greedy:
        cap["do_sample"] = False
    mer: dict[str, Any] = {"llm": args.llm, "api_base": getattr(args, "merge_api_base", None) or args.api_base,
                           "num_workers": args.num_workers}
    if args.merge_model:
        mer["model_path" if (args.llm or "openai") != "openai" else "api_model"] = args.merge_model
    ev = {"backend": args.eval_backend, "interval": args.interval, "protocol": args.protocol}
    clean = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    out: dict[str, Any] = {"segment": clean(seg), "caption": clean(cap), "merge": clean(mer), "eval": clean(ev),
                           "input_folder": args.input_folder}
    if args.repo != "lovr" or not args.config:
        out["repo"] = args.repo
    if args.eval_models:
        out["eval_models"] = split_list(args.eval_models)
    return out


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides_from_args(args))
    control = control_from_args(args)
    try:
        summary = run_pipeline(cfg, control)
    except MissingChunksError as exc:
        logger.error("lovr run: %s", exc)
        return 2
    stages = {stage: tuple(per) for stage, per in summary.get("status", {}).items()}
    if not stages:
        return 0
    from lovr_hf.report.summary import strict_exit

    # the rule every stage command follows: a bug, a stage with nothing succeeded, or --strict with any bad row
    return strict_exit(BenchmarkRepo(summary["repo"]), stages, strict=control.strict)
