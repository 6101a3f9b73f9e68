"""``lovr merge``: the flags, the original ``caption_merger.py`` JSONL mode (``--cap-file``/``--result-file``)
and the exit code (:func:`lovr_hf.report.summary.strict_exit` over the merge tables)."""

from __future__ import annotations

import argparse
import logging
import os

from lovr_hf.backends.llms import DEFAULT_API_MODEL
from lovr_hf.cli.common import add_backend_option_arg, add_common_args, config_from_args, control_from_args
from lovr_hf.merge.clusters import DEFAULT_CLUSTER_SIZE
from lovr_hf.merge.config import MergeConfig
from lovr_hf.merge.jsonl import NothingMergedError, merge_jsonl
from lovr_hf.merge.stage import merge
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.summary import STAGE_CONFIGS, strict_exit

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", default="openai", help="openai (default) | transformers | dummy | module:Class")
    p.add_argument("--api-model", dest="api_model", default=DEFAULT_API_MODEL,
                   help="--llm openai: the model name the server knows (the original's gpt-4o)")
    p.add_argument("--api-base", dest="api_base", default=os.environ.get("OPENAI_BASE_URL"),
                   help="--llm openai: the OpenAI-compatible server's URL (default: $OPENAI_BASE_URL, else the "
                        "official API)")
    p.add_argument("--model-path", "--model_path", dest="model_path", default=None,
                   help="transformers LLM: Hub id, folder, .gguf file or 'smollm2'")
    p.add_argument("--gguf-file", dest="gguf_file", default=None,
                   help="transformers LLM: the .gguf file inside --model-path to load")
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (the original merger's)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=1024, help="per join")
    p.add_argument("--video-max-new-tokens", dest="video_max_new_tokens", type=int, default=4096,
                   help="per video integration step")
    p.add_argument("--cluster-size", dest="cluster_size", type=int, default=DEFAULT_CLUSTER_SIZE,
                   help="clip captions per cluster, in slice order (the original's runs of 10)")
    p.add_argument("--no-video-captions", dest="video_captions", action="store_false",
                   help="stop at clusters, as the released code (default: also integrate them into one caption "
                        "per video)")
    p.add_argument("--integrate-mode", dest="integrate_mode", choices=("sequential", "hierarchical"),
                   default="sequential",
                   help="video captions: fold the clusters in one at a time, or pairwise in levels (fewer "
                        "tokens per call on long videos)")
    p.add_argument("--theme", action="store_true", help="also write a theme paragraph per video")
    p.add_argument("--max-context-tokens", dest="max_context_tokens", type=int, default=None,
                   help="the LLM's context, which inputs are sized to (default: what the backend reports)")
    p.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=8,
                   help="concurrent LLM requests (original flag)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one LLM request may take")
    p.add_argument("--max-retries", dest="max_retries", type=int, default=3,
                   help="retries of a failed LLM request after its first try (the original made 3 attempts "
                        "in all)")
    p.add_argument("--cap-file", dest="cap_file", default=None, help="original JSONL mode: input captions")
    p.add_argument("--result-file", dest="result_file", default=None, help="original JSONL mode: output")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(MergeConfig, args)
    if args.cap_file or args.result_file:
        if not (args.cap_file and args.result_file):
            logger.error("--cap-file and --result-file go together")
            return 2
        try:
            merge_jsonl(args.cap_file, args.result_file, config)
        except NothingMergedError as exc:  # a run where nothing succeeded never exits 0
            logger.error("lovr merge: %s", exc)
            return 1
        return 0
    control = control_from_args(args)
    merge(control.repo, config, control)  # chunks missing under --gather: exit 2 by lovr_hf.cli.errors
    shard = control.shard()
    if shard.launched and not shard.is_main:
        return 0  # rank 0 reports for the job
    return strict_exit(BenchmarkRepo(control.repo), {"merge": STAGE_CONFIGS["merge"]}, strict=control.strict)
