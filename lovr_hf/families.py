"""Model families: which adapter a model string means, and the protocol its original LoVR script used.

The original evaluation has one script per model family (``scripts/evaluation_script/code/*_test.py`` at
commit 00ca611 of TechNomad-ds/LoVR-benchmark); each hard-codes its frame sampling, channel order, text
handling and pooling. lovr_hf keeps those decisions in ONE table, keyed by family, instead of guessing from
name prefixes: ``lovr eval --model <id>`` looks the model up here (local folders by their ``config.json``
``model_type`` first, then the id / folder name), and the matched family gives the adapter (``backend``)
and the defaults of both protocols (``lovr`` and ``original``, see docs/evaluation.md).

A family is registered with :func:`register_family`, by this module for the built-in dual encoders and by
each adapter module for its own families (so that adding a family never edits a shared list). Lookup
imports the built-in embedder modules first (:data:`lovr_hf.backends.base.EMBEDDERS`), which must stay
cheap to import (heavy imports inside functions).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

#: how a family feeds pixels to its model
FRAMES = "frames"  # decoded frames, every ``interval`` frames, pooled (mean of normalised frame features)
NATIVE_VIDEO = "native_video"  # a video tower on ``video_frames`` frames sampled by the family's rule
FILES = "files"  # the model's own processor reads the clip files (LanguageBind)


@dataclasses.dataclass(frozen=True)
class Family:
    """One row of the family table (also rendered as docs/families.md by ``python -m lovr_hf.families``)."""

    name: str  # short family name, used in test names and the docs table ("clip", "siglip2", ...)
    backend: str  # registered embedder name (lovr_hf.backends.base.EMBEDDERS)
    patterns: tuple[str, ...] = ()  # regexes searched in the lowercased model id / folder name
    model_types: tuple[str, ...] = ()  # config.json ``model_type`` values of a local folder
    video_input: str = FRAMES
    #: frame interval of the original script (FRAMES families); None = not recorded in the released scripts
    original_interval: int | None = None
    interval: int = 30  # lovr_hf default interval (== original_interval where the original recorded one)
    video_frames: int | None = None  # NATIVE_VIDEO: frames per clip / video
    original_bgr: bool = False  # the original fed R/B-swapped frames (Image.fromarray(frame[:, :, ::-1]))
    text: str = ""  # text handling: limit, padding, lower-casing, instruction
    pooling: str = "mean of L2-normalised frame features, re-normalised"
    precision: str = ""
    extra: str | None = None  # pip extra that provides the family's dependencies
    hub_ids: tuple[str, ...] = ()  # the paper's model ids (first = the reproducing command's id)
    paper: dict[str, float] = dataclasses.field(default_factory=dict)  # published LoVR numbers (name -> %)
    notes: str = ""
    priority: int = 0  # higher wins when several families match

    def matches_name(self, name: str) -> bool:
        low = name.lower()
        return any(re.search(p, low) for p in self.patterns)


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add (or replace, by name) a family; adapter modules call this at import time."""
    _FAMILIES[family.name] = family
    return family


def families() -> list[Family]:
    """Every registered family (built-in embedder modules imported first), by name."""
    from lovr_hf.backends.base import EMBEDDERS

    EMBEDDERS.names()  # imports the built-in adapter modules, which register their families
    return [_FAMILIES[k] for k in sorted(_FAMILIES)]


def get_family(name: str) -> Family:
    by_name = {f.name: f for f in families()}
    if name not in by_name:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(by_name))}")
    return by_name[name]


def _local_model_type(model: str) -> str | None:
    cfg = Path(model).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return str(value) if value else None


def family_for(model: str) -> Family | None:
    """The family of a model string: a local folder's ``model_type`` first, then the name patterns."""
    fams = families()
    mtype = _local_model_type(model)
    if mtype:
        hits = [f for f in fams if mtype in f.model_types]
        if hits:
            return max(hits, key=lambda f: f.priority)
    name = model.rstrip("/")
    hits = [f for f in fams if f.matches_name(name)]
    return max(hits, key=lambda f: f.priority) if hits else None


# ---- built-in dual encoders (transformers, open_clip, jina) ------------------------------------------------
# Adapter modules register the families they add; these are the ones served by the existing adapters.

register_family(Family(
    name="clip", backend="transformers", patterns=(r"(^|/)clip-", r"openai/clip"), model_types=("clip",),
    original_interval=10, interval=10, original_bgr=True, text="77 tokens, truncated",
    hub_ids=("openai/clip-vit-base-patch32",), notes="run_clip.sh: --interval 10",
))
register_family(Family(
    name="siglip", backend="transformers", patterns=(r"siglip-",), model_types=("siglip",),
    original_bgr=True, text="64 tokens, padding=max_length", hub_ids=("google/siglip-base-patch16-224",),
))
register_family(Family(
    name="siglip2", backend="transformers", patterns=(r"siglip2",), model_types=("siglip2",), priority=1,
    original_bgr=True, text="64 tokens, padding=max_length, lower-cased (big_vision)",
    hub_ids=("google/siglip2-base-patch16-224",),
))
register_family(Family(
    name="metaclip", backend="transformers", patterns=(r"metaclip",), priority=1, original_bgr=True,
    text="77 tokens, truncated", hub_ids=("facebook/metaclip-b16-fullcc2.5b",),
))
register_family(Family(
    name="jina-clip", backend="jina", patterns=(r"jina-clip",), model_types=("jina_clip",), priority=2,
    original_bgr=True, text="8192 tokens (jina encode_text)", hub_ids=("jinaai/jina-clip-v2",),
))
register_family(Family(
    name="open_clip", backend="open_clip", patterns=(r"^hf-hub:", r"^open_clip:", r"^local-dir:"),
    original_bgr=True, text="the open_clip tokenizer's context length",
))


def describe(model: str) -> dict[str, Any]:
    """The family row of ``model`` as a dict (for logs and the recorded run configuration)."""
    fam = family_for(model)
    return dataclasses.asdict(fam) if fam else {}


def markdown_table() -> str:
    """docs/families.md's table, rendered from the registry (the docs cannot drift from the code)."""
    cols = ("family", "adapter", "model ids", "frames", "original interval", "original BGR", "text", "pooling",
            "precision", "extra", "paper (LoVR)", "notes")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for f in families():
        frames = {FRAMES: f"every {f.interval}", NATIVE_VIDEO: f"{f.video_frames} (video tower)",
                  FILES: "clip files"}[f.video_input]
        paper = ", ".join(f"{k} {v:g}" for k, v in f.paper.items())
        cells = (f.name, f.backend, ", ".join(f"`{h}`" for h in f.hub_ids), frames,
                 str(f.original_interval) if f.original_interval else "not recorded", "yes" if f.original_bgr
                 else "no", f.text, f.pooling, f.precision, f.extra or "", paper, f.notes)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
