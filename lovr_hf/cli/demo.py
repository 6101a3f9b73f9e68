"""``lovr demo``: its flags, and what it prints: where the repo is, which models were real, stand-ins or random,
who wrote the merged texts, the results table and how to load the result (:func:`lovr_hf.demo.run.run_demo`
does the work)."""

from __future__ import annotations

import argparse

from lovr_hf.demo.run import HUB_CAPTIONER, HUB_EMBEDDER, HUB_MERGER, run_demo
from lovr_hf.report.summary import merge_line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", default="lovr_demo",
                   help="where videos, models and the benchmark repo go (default ./lovr_demo)")
    p.add_argument("--no-eval", dest="eval_models", action="store_false", help="skip the retrieval evaluation")
    p.add_argument("--hub", action="store_true",
                   help=f"small real Hub models on the CPU ({HUB_CAPTIONER}, {HUB_MERGER}, {HUB_EMBEDDER}); "
                        "downloads them on first use")
    p.add_argument("--caption-model", dest="caption_model", default=None, help="--hub: captioner (Hub id or folder)")
    p.add_argument("--merge-model", dest="merge_model", default=None,
                   help="merge LLM (Hub id, folder, .gguf or 'smollm2')")
    p.add_argument("--eval-model", dest="eval_model", default=None, help="--hub: retrieval model (Hub id or folder)")


def main(args: argparse.Namespace) -> int:
    summary = run_demo(args.output_dir, hub=args.hub, eval_models=args.eval_models, caption_model=args.caption_model,
                       merge_model=args.merge_model, eval_model=args.eval_model)
    print(f"\nBenchmark repo: {summary['repo']}")  # the user-facing result of the command
    print(summary["models_note"])
    print(merge_line(summary))  # joins and integrations: by the LLM, by the stand-in, or the original kept
    if summary.get("theme_writers"):
        print(summary["theme_writers"])
    print(f"demo finished in {summary['seconds']:.0f} s")
    if summary.get("results_table"):
        print(summary["results_table"])
    print(f"from datasets import load_dataset\nload_dataset({summary['repo']!r}, 'video_captions', split='train')")
    return 0
