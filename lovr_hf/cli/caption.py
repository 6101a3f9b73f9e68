"""``lovr caption``: the flags, the original ``caption_generator.py`` JSONL mode, and the exit code.

The work is :func:`lovr_hf.caption.stage.caption` (a repo) or :func:`lovr_hf.caption.jsonl.caption_jsonl`
(the original file mode); either way the rows it wrote decide the exit code by one rule
(:func:`lovr_hf.report.summary.strict_exit`).
"""

from __future__ import annotations

import argparse
import os

from lovr_hf import schema
from lovr_hf.backends.captioners.common import DEFAULT_MODEL
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.jsonl import caption_jsonl, export_jsonl
from lovr_hf.caption.stage import caption
from lovr_hf.cli.common import add_backend_option_arg, add_common_args, config_from_args, control_from_args
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.summary import STAGE_CONFIGS, strict_exit
from lovr_hf.video.prefetch import DEFAULT_PREFETCH_BYTES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="transformers", help="transformers | vllm | openai | describer (offline stand-in: describes the pixels) | dummy | module:Class")
    p.add_argument("--model-path", "--model_path", dest="model_path", default=DEFAULT_MODEL,
                   help="Hub id or local folder (original LoVR flag)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model-path (default: main)")
    p.add_argument("--dtype", default="auto",
                   help="weights dtype: auto (bfloat16 on a GPU that has it, else float16; float32 on CPU) | bfloat16 | "
                        "float16 | float32")
    p.add_argument("--attn-implementation", dest="attn_implementation", default=None,
                   help="transformers attention kernel, e.g. flash_attention_2 or sdpa (default: the library's choice)")
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true",
                   help="allow the model's own code from the Hub (off: such a model is refused)")
    p.add_argument("--tensor-parallel-size", dest="tensor_parallel_size", type=int, default=1,
                   help="--backend vllm: GPUs one model is split over")
    p.add_argument("--api-base", dest="api_base", default=os.environ.get("OPENAI_BASE_URL"),
                   help="--backend openai: the OpenAI-compatible server's URL (default: $OPENAI_BASE_URL, else the "
                        "official API)")
    p.add_argument("--api-model", dest="api_model", default=None,
                   help="--backend openai: the model name the server knows (default: --model-path)")
    p.add_argument("--api-server", dest="api_server", default=None, choices=("openai", "vllm"),
                   help="--backend openai: the server kind. openai (default): official Chat Completions fields "
                        "only, frames as images; vllm: a `vllm serve` endpoint, the clip as one video with its fps, "
                        "repetition_penalty and top_k as the original")
    p.add_argument("--prompt-file", dest="prompt_file", default=None,
                   help="JSON/YAML {system, user} or a text file (the user prompt) in place of the original caption "
                        "prompt; recorded by its hash")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8,
                   help="clips per model call (original LoVR flag)")
    d = CaptionConfig  # unset flags fall back to the config's defaults (the original captioner's)
    p.add_argument("--temperature", type=float, default=None, help=f"default {d.temperature}")
    p.add_argument("--top-p", dest="top_p", type=float, default=None, help=f"default {d.top_p}")
    p.add_argument("--repetition-penalty", dest="repetition_penalty", type=float, default=None,
                   help=f"default {d.repetition_penalty}")
    p.add_argument("--max-new-tokens", "--max_tokens", dest="max_new_tokens", type=int, default=None,
                   help=f"default {d.max_new_tokens}")
    p.add_argument("--greedy", dest="do_sample", action="store_false", help="greedy decoding (deterministic)")
    p.add_argument("--max-frames", dest="max_frames", type=int, default=None, help=f"default {d.max_frames}")
    p.add_argument("--downscale", action="store_true", help="shrink frames into 426x240 as the original helper")
    p.add_argument("--min-quality", dest="min_quality", type=float, default=None,
                   help="quality threshold θ (0-10): re-caption below it, up to --max-attempts")
    p.add_argument("--scorer", default="heuristic", choices=("heuristic", "llm"),
                   help="with --min-quality: who scores a caption: heuristic (offline rules) or llm (a judge model)")
    p.add_argument("--scorer-model", dest="scorer_model", default=None,
                   help="--scorer llm: the judge, an LLM backend spec such as openai:gpt-4o-mini (default: openai)")
    p.add_argument("--max-attempts", dest="max_attempts", type=int, default=3,
                   help="with --min-quality: captions tried per clip before the best one is kept")
    p.add_argument("--decode-workers", dest="decode_workers", type=int, default=None,
                   help="decode threads (default: sized to the machine)")
    p.add_argument("--prefetch-bytes", dest="prefetch_bytes", type=int, default=None,
                   help=f"bytes of decoded frames held ahead of the model (default {DEFAULT_PREFETCH_BYTES})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    # the original caption_generator.py mode: a JSONL of clips in, the same lines with "cap" out
    p.add_argument("--video-folder", dest="video_folder", default=None,
                   help="original mode: folder the JSONL's clip paths are relative to")
    p.add_argument("--jsonl-file", dest="jsonl_file", default=None,
                   help="original mode: JSONL of clips (vid, slice_num, path); captions go to --result-file")
    p.add_argument("--result-file", dest="result_file", default=None,
                   help="original mode: output JSONL (each input line + cap, resumable); repo mode: also "
                        "export the captions as JSONL (vid, slice_num, cap)")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(CaptionConfig, args)
    control = control_from_args(args)
    if args.jsonl_file or args.video_folder:
        if not (args.jsonl_file and args.video_folder and args.result_file):
            raise SystemExit("the original mode needs --video-folder, --jsonl-file and --result-file together")
        summary = caption_jsonl(args.video_folder, args.jsonl_file, args.result_file, config, control)
        if summary.repo is None:  # every line was already in the result file: nothing ran, nothing failed
            return 0
        # the clips it probed and the captions it made, judged by the one exit rule (a probe error is a row too)
        return strict_exit(BenchmarkRepo(summary.repo), {"caption": (schema.CLIPS, *STAGE_CONFIGS["caption"])},
                           strict=control.strict)
    caption(control.repo, config, control)
    repo = BenchmarkRepo(control.repo)
    if args.result_file and repo.has(schema.CLIP_CAPTIONS):
        export_jsonl(repo, args.result_file)
    return strict_exit(repo, {"caption": STAGE_CONFIGS["caption"]}, strict=control.strict)
