"""``lovr eval``: embed captions, clips and videos with a retrieval model, then score pass@k (the steps are
:mod:`lovr_hf.evaluation.run`); ``--compare`` and ``--verify`` read what is stored. Argument parsing,
printing and exit codes only: the results page (``results.md``, plots) is rendered here, once per command,
by the report layer. Exit codes follow :func:`lovr_hf.cli.errors.exit_code_for`, the one rule: a usage or
setup error is one line and exit 2, any other exception (a ``ValueError`` bug included) exit 1 with its
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from lovr_hf import schema
from lovr_hf.backends.embedders.common import PROTOCOLS, TEXT_MODES
from lovr_hf.cli.common import (
    add_backend_option_arg,
    add_common_args,
    config_from_args,
    control_from_args,
    require_repo,
    split_list,
)
from lovr_hf.evaluation import run as evaluation
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.failures import UsageError
from lovr_hf.model_labels import model_label
from lovr_hf.report.results_page import RESULTS_MD, render_results

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--model-path", "--model_path", dest="models", action="append", default=None,
                   help="Hub id, local folder, open_clip spec or my_module:MyEmbedder (several: repeat the flag "
                        "and/or give a comma list)")
    p.add_argument("--model-name", dest="model_name", default=None, help="label in results (one model)")
    p.add_argument("--backend", default="auto", help="auto (picked by the family table) | transformers | open_clip | jina | blip | xclip | gme | mm_embed | videoclip_xl | languagebind | mteb | describer | dummy | module:Class")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model (default: main)")
    p.add_argument("--dtype", default="auto",
                   help="weights dtype: auto (float32 on CPU; under --protocol original on a GPU, the family's original "
                        "precision) | bfloat16 | float16 | float32")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true",
                   help="allow the model's own code from the Hub (jina-clip-v2 needs it)")
    p.add_argument("--text-mode", "--text_mode", dest="text_mode", choices=TEXT_MODES, default="truncate",
                   help="long captions: truncate at the model limit (original) or average max-length chunks")
    p.add_argument("--max-text-tokens", dest="max_text_tokens", type=int, default=None,
                   help="caption token limit (default: the model's own)")
    p.add_argument("--interval", type=int, default=None, help="sample every K frames (default 10 for CLIP, else 30)")
    p.add_argument("--num-frames", "--num_frames", dest="num_frames", type=int, default=None,
                   help="N uniform frames per clip and per video instead of --interval")
    p.add_argument("--clip-queries", "--clip_queries", dest="clip_queries", default=None,
                   help="text->clip query captions: a count drawn with --seed, 'all', or 'auto' (default: the "
                        "released list on an imported release, else 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --clip-queries draw (recorded on every row)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="lovr",
                   help="lovr (default) or original: reproduce the original scripts, differences and all "
                        "(docs/evaluation.md)")
    p.add_argument("--exclude-needs-review", dest="exclude_needs_review", action="store_true",
                   help="leave captions marked needs_review out of the queries (default: included, flagged)")
    p.add_argument("--topk", default=None, help="k values, e.g. 1,5,10 (default 1..20 as the original)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap resamples for the 95%% intervals (default 1000; 0 = none)")
    p.add_argument("--bootstrap-seed", dest="bootstrap_seed", type=int, default=None,
                   help="seed of the bootstrap (default 0; recorded on every row)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                   help="captions or clips per forward pass (original LoVR flag)")
    p.add_argument("--decode-workers", dest="decode_workers", type=int, default=None,
                   help="decode threads (default: sized to the machine)")
    p.add_argument("--prefetch-bytes", dest="prefetch_bytes", type=int, default=None,
                   help="bytes of decoded frames held ahead of the model (default 2 GiB)")
    p.add_argument("--decode-backend", dest="decode_backend", default="auto", choices=("auto", "pyav", "decord"),
                   help="frame decoder: decord as the original where installed (auto), else PyAV")
    g = p.add_argument_group("stages (original flags; none = all)")
    for step, text in (("encode_text", "embed clip/video/theme captions"),
                       ("encode_video", "embed clips and full videos (this chunk)"),
                       ("video_merge", "gather finished chunks into the repo"),
                       ("calc_pass", "score pass@k from stored embeddings")):
        g.add_argument(f"--{step}", f"--{step.replace('_', '-')}", dest=step, action="store_true", help=text)
    p.add_argument("--compare", nargs="*", default=None, metavar="MODEL",
                   help="render results of these models (default all) side by side; with exactly two models "
                        "A B also their paired comparison (A - B on the same queries); embeds nothing")
    p.add_argument("--verify", action="store_true",
                   help="recompute every results row (of --model / --model-name, default all models) from the "
                        "stored embeddings and rankings; exit 1 on any difference")
    add_backend_option_arg(p)
    add_common_args(p)


def main(args: argparse.Namespace) -> int:
    control = control_from_args(args)
    args.models = split_list(args.models) or None
    repo = require_repo(control.repo, "eval")  # a mistyped --repo: exit 2, nothing created
    if args.verify:
        from lovr_hf.evaluation.verify import verify

        # results are keyed by label (a local folder: <folder>-<content hash>); the folder itself is what
        # rescoring needs (its revision, its tokenizer), and rows never record where it lies
        given = args.models or []
        labels = [args.model_name] if args.model_name else [model_label(m) for m in given]
        refs = {lab: m for lab, m in zip(labels, given) if lab != m}
        report = verify(repo, labels or None, refs=refs)
        print(report.render())
        return 0 if report.ok else 1
    if args.compare is not None:
        names = [model_label(m) for m in args.compare]  # a local folder given by path: its label
        print(render_results(repo, names or None))
        if len(names) == 2:
            from lovr_hf.report.compare import paired, render_paired

            try:
                print(render_paired(paired(repo, *names)))
            except FileNotFoundError as exc:  # a model scored before rankings were stored: re-score it
                raise UsageError(str(exc)) from exc
        return 0
    if not args.models:
        raise UsageError("--model is required (or --compare)")
    base = config_from_args(EvalConfig, args, model=args.models[0])
    steps = [s for s in evaluation.STEPS if getattr(args, s, False)]
    try:
        rows = evaluation.evaluate_models(repo, args.models, base, control, steps=steps or None)
    except (ImportError, FileNotFoundError) as exc:
        # a missing extra (check_embedder) or nothing embedded yet (--calc_pass): the user's to fix
        raise UsageError(str(exc)) from exc
    if rows:
        render_results(repo)  # results.md and the plots, from the results config just written
    from lovr_hf.report.summary import embedding_configs, strict_exit

    slugs = [dataclasses.replace(base, model=m).slug() for m in args.models]
    if strict_exit(repo, {"eval": embedding_configs(repo, slugs)}, strict=control.strict):
        return 1
    if rows:
        logger.info("results written to %s (%s, %s)", repo.root, schema.RESULTS, RESULTS_MD)
    return 0
