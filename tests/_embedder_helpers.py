"""What the embedder adapter tests share: ``lovr eval`` end to end on a small benchmark repo, and the local
remote-code stand-ins (a model folder whose code travels with it, loaded through ``trust_remote_code``).

Written once because every adapter's end-to-end test checks the same thing (all four directions scored, every
embedding row ``ok`` at the model's width) and both remote-code stand-ins are saved and inspected the same way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from test_embed import make_repo

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.evaluation.models import model_slug
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo

DIRECTIONS = {"text_to_clip", "clip_to_text", "text_to_video", "video_to_text"}
REMOTE_CODE = Path(__file__).parent / "remote_code"


def eval_repo(tmp_path: Path, eval_source: Path) -> BenchmarkRepo:
    """A fresh benchmark repo made from the shared eval source videos."""
    return make_repo(tmp_path / "lovr", eval_source)


def eval_args(repo: BenchmarkRepo, model: str, *extra: str) -> list[str]:
    """``lovr eval`` on ``repo`` with ``model`` on the CPU, pass@1 and @5, plus ``extra`` flags."""
    return ["-q", "eval", "--repo", str(repo.root), "--model", model, "--device", "cpu", "--topk", "1,5", *extra]


def run_eval(repo: BenchmarkRepo, model: str, *extra: str, dim: int, name: str | None = None) -> list[dict[str, Any]]:
    """Run ``lovr eval`` (it must succeed) and check its tables: every direction scored for ``name`` (default the
    model), every embedding row ``ok`` with ``dim`` values. Returns the result rows."""
    assert cli_main(eval_args(repo, model, *extra)) == 0
    return check_eval(repo, name or model, dim)


def check_eval(repo: BenchmarkRepo, name: str, dim: int) -> list[dict[str, Any]]:
    """The tables ``lovr eval`` wrote for model label ``name`` (see :func:`run_eval`)."""
    name = model_label(name)  # a local folder is labelled <folder>-<content hash>, never by its path
    rows = [r for r in repo.read(schema.RESULTS) if r["model"] == name]
    assert {r["direction"] for r in rows} >= DIRECTIONS
    emb_rows = repo.read(schema.embeddings_config(model_slug(name)))
    assert emb_rows.num_rows and all(r["status"] == schema.OK and len(r["embedding"]) == dim for r in emb_rows)
    return rows


def save_standin(module_file: str, config_cls: str, model_cls: str, out: Path) -> str:
    """Save the stand-in of ``tests/remote_code/<module_file>`` (random weights, seed 0, the tiny CLIP tokenizer)
    to ``out`` with its code next to it, so ``AutoModel.from_pretrained(out, trust_remote_code=True)`` loads it
    as remote code."""
    import torch

    from lovr_hf.tiny.clip import _clip_tokenizer

    path = REMOTE_CODE / module_file
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # save_pretrained copies the class's source file next to the weights
    spec.loader.exec_module(mod)
    getattr(mod, config_cls).register_for_auto_class()
    getattr(mod, model_cls).register_for_auto_class("AutoModel")
    torch.manual_seed(0)
    getattr(mod, model_cls)(getattr(mod, config_cls)()).save_pretrained(out)
    _clip_tokenizer().save_pretrained(out)
    assert (out / module_file).is_file()  # the model's code travels with it: remote code
    return str(out)


def standin_calls(module_stem: str, model_cls: str) -> list[dict[str, Any]]:
    """What the adapters passed to a stand-in loaded by transformers' remote-code loader (its class log)."""
    mods = [m for n, m in sys.modules.items() if n.startswith("transformers_modules") and n.endswith(module_stem)]
    assert mods, "the model was not loaded through transformers' remote-code loader"
    return [c for m in mods for c in getattr(m, model_cls).calls]
