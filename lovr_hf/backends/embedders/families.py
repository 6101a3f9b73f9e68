"""Model families: which adapter a model string means, and what its original LoVR script did.

The original evaluation has one script per model family (``scripts/evaluation_script/code/*_test.py`` at
commit 00ca611 of TechNomad-ds/LoVR-benchmark, launched by ``run_*.sh`` there and in ``evaluate/`` at
HEAD); each hard-codes its frame sampling, channel order, text handling, precision and pooling. lovr_hf
keeps those decisions in ONE table, keyed by family, instead of guessing from name prefixes:
``lovr eval --model <id>`` looks the model up here and the family gives the adapter (``backend``) and the
settings of both protocols (``lovr`` and ``original``, see docs/evaluation.md).

Lookup (:func:`family_for`): a local folder by its ``config.json`` ``model_type`` first (narrowed by its
name and tokenizer class where one model type serves several families: MetaCLIP is a ``clip``, the
fixed-resolution SigLIP2 checkpoints are ``siglip`` with a Gemma tokenizer), then the id / folder name;
``EmbedConfig.family`` names a family explicitly. A model no family matches gets :data:`DEFAULT_FAMILY`:
the template the original's evaluate/README tells users to copy (``CLIP_test.py``).

A family is registered with :func:`register_family`, by this module for the built-in dual encoders and by
each adapter module for its own families (so that adding a family never edits a shared list). Lookup
imports the built-in embedder modules first (:data:`lovr_hf.backends.base.EMBEDDERS`), which must stay
cheap to import (heavy imports inside functions).

What the released scripts record about the frame interval: ``--interval`` has no default (every script
asserts it is given); ``--encode_video`` launch lines carry it for CLIP (10; both commits) and, at HEAD,
jina-clip-v2, VideoCLIP and VideoCLIP-XL-v2 (30). Every other launcher's only line is a ``--calc_pass``
line (where the flag does nothing) with ``--interval 30``, the value of the commented-out encode lines
they were edited from: 30 is the best evidence for those families, recorded as an assumption
(``original_interval=None``, ``interval=30``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from lovr_hf.failures import UnknownName

#: how a family feeds pixels to its model
FRAMES = "frames"  # decoded frames, every ``interval`` frames, pooled (mean of normalised frame features)
NATIVE_VIDEO = "native_video"  # a video tower on ``video_frames`` frames sampled by the family's own rule
FILES = "files"  # the model's own processor reads the clip files (LanguageBind)

#: the interval of the original launchers where none is recorded for a family (see the module doc)
ASSUMED_INTERVAL = 30
OPEN_CLIP_CONFIG = "open_clip_config.json"  # marks a local open_clip model folder (the Hub layout)


@dataclasses.dataclass(frozen=True)
class Family:
    """One row of the family table (also rendered as docs/families.md by ``python -m lovr_hf.backends.embedders.families``)."""

    name: str  # short family name, used in test names and the docs table ("clip", "siglip2", ...)
    backend: str  # registered embedder name (lovr_hf.backends.base.EMBEDDERS)
    patterns: tuple[str, ...] = ()  # regexes searched in the lowercased model id / folder name
    model_types: tuple[str, ...] = ()  # config.json ``model_type`` values of a local folder
    video_input: str = FRAMES
    #: frame interval of the original run (FRAMES families); None = not recorded in the released scripts
    original_interval: int | None = None
    interval: int = ASSUMED_INTERVAL  # lovr_hf default interval (== original_interval where one is recorded)
    video_frames: int | None = None  # NATIVE_VIDEO: frames per clip / video
    #: the original fed R/B-swapped frames (``Image.fromarray(frame[:, :, ::-1])`` on decord's RGB frames);
    #: ``--protocol original`` swaps the channels of every frame this family's embedder receives
    original_bgr: bool = False
    text: str = ""  # lovr_hf's text handling: limit, padding, lower-casing, instruction
    pooling: str = "mean of L2-normalised frame features, re-normalised"
    precision: str = ""  # lovr_hf's precision
    extra: str | None = None  # pip extra that provides the family's dependencies
    hub_ids: tuple[str, ...] = ()  # the paper's model ids (first = the reproducing command's id)
    paper: dict[str, float] = dataclasses.field(default_factory=dict)  # published LoVR numbers (name -> %)
    notes: str = ""
    priority: int = 0  # higher wins when several families match
    # ---- fields added for the protocols (defaults keep older registrations valid) -------------------
    #: this family shares its ``model_type`` with a more general one (MetaCLIP is a ``clip``, fixed-res
    #: SigLIP2 a ``siglip``): a local folder of that type is this family only on evidence (a name match, or
    #: one of ``tokenizer_classes`` in its ``tokenizer_config.json``)
    type_needs_evidence: bool = False
    tokenizer_classes: tuple[str, ...] = ()
    original_text: str = ""  # the original script's text handling
    #: the original's weights dtype; ``--protocol original`` with ``--dtype auto`` loads this one
    original_dtype: str | None = None
    #: where the original values come from (script, launcher line) and what is assumed
    original_source: str = ""
    #: the family runs code from outside the installed packages (Hub remote code, a checkout): its command
    #: needs ``--trust-remote-code``
    remote_code: bool = False
    run_options: str = ""  # further flags its command needs (e.g. where the model's code lives)
    install: str = ""  # what to install besides the extra (a package that must go in with --no-deps)

    def command(self, repo: str = "lovr-release") -> str:
        """The command that scores this family as the paper's scripts did, on a GPU (docs/families.md)."""
        model = self.hub_ids[0] if self.hub_ids else ("<mteb model name>" if self.backend == "mteb" else "<model>")
        parts = ["lovr eval", f"--repo {repo}", f"--model {model}"]
        if not self.hub_ids and self.backend not in ("transformers",):
            parts.append(f"--backend {self.backend}")
        parts += ["--protocol original", "--device cuda"]
        if self.remote_code:
            parts.append("--trust-remote-code")
        if self.run_options:
            parts.append(self.run_options)
        steps = [f"pip install 'lovr_hf[{self.extra}]'"] if self.extra else []
        steps += [self.install] if self.install else []
        return " && ".join([*steps, " ".join(parts)])

    def matches_name(self, name: str) -> bool:
        low = name.lower()
        return any(re.search(p, low) for p in self.patterns)

    def interval_for(self, protocol: str = "lovr") -> int:
        """Frame interval under a protocol: the recorded original where there is one, else ``interval``."""
        if protocol == "original" and self.original_interval:
            return int(self.original_interval)
        return int(self.interval)

    def swaps_channels(self, protocol: str) -> bool:
        """Whether frames reach this family's embedder R/B-swapped under ``protocol``."""
        return protocol == "original" and self.original_bgr and self.video_input in (FRAMES, NATIVE_VIDEO)


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
    if name == DEFAULT_FAMILY.name:
        return DEFAULT_FAMILY
    if name not in by_name:
        raise UnknownName(f"unknown model family {name!r}; known: {', '.join(sorted(by_name))}")
    return by_name[name]


def _local_json(model: str, name: str) -> dict[str, Any]:
    path = Path(model).expanduser() / name
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _name_parts(model: str) -> list[str]:
    """Where to look for a family name: a Hub id / spec whole; a local folder's last three path components,
    nearest first (the HF cache's ``models--org--name/snapshots/<hash>`` reads as ``org/name``). Folders
    further up (a user's project folder) say nothing about the model."""
    text = model.rstrip("/")
    if not Path(text).expanduser().exists():
        return [text]
    parts = [p.replace("--", "/") for p in Path(text).expanduser().resolve().parts if p not in ("/", "")]
    return list(reversed(parts))[:3]


def _by_name(fams: list[Family], model: str) -> list[Family]:
    """Families whose patterns match the nearest matching name part of ``model``."""
    for part in _name_parts(model):
        hits = [f for f in fams if f.matches_name(part)]
        if hits:
            return hits
    return []


def family_for(model: str, family: str | None = None) -> Family | None:
    """The family of a model string (None when nothing matches; see :func:`family_or_default`).

    ``family`` names it explicitly. A local folder with a ``config.json`` is looked up by ``model_type``
    first; several families of that type are told apart by a name match, then their tokenizer class. A local
    folder holding ``open_clip_config.json`` is the ``open_clip`` family.
    """
    if family:
        return get_family(family)
    if not model.strip():
        return None
    fams = families()
    named = _by_name(fams, model)
    if (Path(model).expanduser() / OPEN_CLIP_CONFIG).is_file() and "open_clip" in _FAMILIES:
        # a local open_clip folder (Hub layout): an open_clip family its name names (EVA02, PE-Core), else
        # the generic open_clip row, whatever else the name says
        oc = [f for f in named if f.backend == "open_clip"]
        return max(oc, key=lambda f: f.priority) if oc else _FAMILIES["open_clip"]
    mtype = _local_json(model, "config.json").get("model_type")
    if mtype:
        hits = [f for f in fams if mtype in f.model_types]
        if hits:
            tok = _local_json(model, "tokenizer_config.json").get("tokenizer_class")

            def score(f: Family) -> tuple[int, int]:
                evidence = 2 * (f in named) + (bool(tok) and tok in f.tokenizer_classes)
                return evidence, f.priority

            eligible = [f for f in hits if not f.type_needs_evidence or score(f)[0] > 0]
            if eligible:
                return max(eligible, key=score)
    return max(named, key=lambda f: f.priority) if named else None


def family_or_default(model: str, family: str | None = None) -> Family:
    """:func:`family_for`, or :data:`DEFAULT_FAMILY` when no family matches."""
    return family_for(model, family) or DEFAULT_FAMILY


# ---- the default, and the built-in dual encoders (transformers, open_clip, jina) ------------------------
# Adapter modules register the families they add; these are the ones served by the existing adapters.
# Each row: what lovr_hf does (text, precision, interval) and what the original script did (original_*).

_TEMPLATE = "00ca611 scripts/evaluation_script/code/CLIP_test.py (the template evaluate/README tells users to copy)"

#: no family matched (a plug-in class, an unknown model): the original's template behaviour under
#: ``--protocol original`` (BGR frames, interval 30 as on the other launchers)
DEFAULT_FAMILY = Family(
    name="other", backend="transformers", original_bgr=True,
    text="the adapter's own (truncate at its text limit, or --text-mode chunk-mean)",
    original_text="not recorded (the template truncates at the model's text limit)",
    original_source=f"no script for this model; {_TEMPLATE}: BGR frames; interval assumed 30",
    notes="any model no family row matches (module:Class plug-ins included)",
)

register_family(Family(
    name="clip", backend="transformers", patterns=(r"(^|/)clip-", r"openai/clip"), model_types=("clip",),
    original_interval=10, interval=10, original_bgr=True,
    text="77 tokens, truncated (special tokens kept); --text-mode chunk-mean averages 77-token chunks",
    original_text="OpenAI clip.tokenize(truncate=True): 77 tokens, the last one forced to EOT; "
                  "lower-cased, ftfy-cleaned",
    precision="bf16 on GPU, fp32 on CPU (--dtype)", original_dtype="float16",
    original_source="00ca611 CLIP_test.py (OpenAI `clip` package, clip.load(ViT-B-32.pt, jit=False): fp16 on "
                    "CUDA; its own 224 px bicubic resize + centre crop); run_clip.sh --encode_video --interval 10 "
                    "(00ca611 and HEAD)",
    hub_ids=("openai/clip-vit-base-patch32",),
    notes="transformers' CLIPModel is the same ViT-B/32 weights; a local CLIP folder whose name says "
          "MetaCLIP is the metaclip family",
))
register_family(Family(
    name="siglip", backend="transformers", patterns=(r"siglip-",), model_types=("siglip",),
    original_bgr=True, text="64 tokens, padding=max_length (as trained; pooled at the last position)",
    original_text="processor(padding=True, truncation=True, max_length=64) in batches of 256 captions: "
                  "padded to the longest of the batch, i.e. 64 whenever one caption of the batch reaches "
                  "64 tokens (LoVR captions do)",
    precision="bf16 on GPU, fp32 on CPU (--dtype)", original_dtype="bfloat16",
    original_source="00ca611 siglip-base-patch16-224_test.py (AutoModel bf16, sdpa; AutoProcessor images, "
                    "32 frames per forward); interval: --calc_pass line only (30 assumed)",
    hub_ids=("google/siglip-base-patch16-224",),
))
register_family(Family(
    name="siglip2", backend="transformers", patterns=(r"siglip2",), model_types=("siglip2", "siglip"),
    type_needs_evidence=True, tokenizer_classes=("GemmaTokenizer", "GemmaTokenizerFast"), priority=1,
    original_bgr=True, text="64 tokens, padding=max_length",
    original_text="processor(padding='max_length', truncation=True, max_length=64), NOT lower-cased",
    precision="bf16 on GPU, fp32 on CPU (--dtype)", original_dtype="float32",
    original_source="00ca611 siglip2-base-patch16-224_test.py (AutoModel without torch_dtype: fp32 weights, "
                    "pixel values cast to bf16 first; fast processor); interval: --calc_pass line only "
                    "(30 assumed)",
    hub_ids=("google/siglip2-base-patch16-224",),
    notes="the fixed-resolution SigLIP2 checkpoints are model_type 'siglip' with a Gemma tokenizer",
))
register_family(Family(
    name="metaclip", backend="transformers", patterns=(r"metaclip",), model_types=("clip",), priority=1,
    type_needs_evidence=True, original_bgr=True,
    text="77 tokens, truncated",
    original_text="processor(padding=True, truncation=True, max_length=77) in batches of 256",
    precision="bf16 on GPU, fp32 on CPU (--dtype)", original_dtype="bfloat16",
    original_source="00ca611 MetaCLIP-ViT-H-14_test.py (AutoModel bf16, sdpa; AutoProcessor images); "
                    "interval: --calc_pass line only (30 assumed)",
    hub_ids=("facebook/metaclip-h14-fullcc2.5b",),
    notes="a CLIPModel (model_type 'clip'): told from OpenAI CLIP by 'metaclip' in its id or path",
))
register_family(Family(
    name="jina-clip", backend="jina", patterns=(r"jina-clip",), model_types=("jina_clip",), priority=2,
    original_interval=30, interval=30, original_bgr=True, text="512 tokens (jina encode_text's max_length default; --max-text-tokens up to 8192)",
    original_text="not recorded (the script was not released)",
    original_source="HEAD evaluate/run_jina-clip-v2.sh --encode_video --interval 30; the script itself was "
                    f"never released: BGR as in every released frame-based script and {_TEMPLATE}",
    hub_ids=("jinaai/jina-clip-v2",), extra=None, remote_code=True,
))
register_family(Family(
    name="open_clip", backend="open_clip", patterns=(r"^hf-hub:", r"^open_clip:", r"^local-dir:"), priority=3,
    original_bgr=True, text="the open_clip tokenizer's context length", extra="openclip",
    original_text="no original script (an open_clip model the paper did not run)",
    original_source=f"no script; {_TEMPLATE}: BGR frames; interval assumed 30",
))


#: family -> how ``--protocol original`` is held to the original: "equal to the original script ..." with the
#: test that proves it, or "differs / not checked: what and why". Kept next to the table so docs/families.md
#: renders it; a family without an entry renders "not checked".
ORACLE: dict[str, str] = {
    "clip": "equal to the original script's library, OpenAI `clip` (openai-clip): clip.tokenize ids on tricky "
            "captions, clip.load's preprocess pixels, embeddings <= 1e-5, all 80 pass@k of a release "
            "(tests/test_oracle_clip.py); frame sampling, BGR, skipped clips (tests/test_release_protocols.py). "
            "Differs: a video's clip order (os.listdir there, scene order here: docs/evaluation.md); fp16 on "
            "CUDA not checked",
    "siglip": "image processor equal to transformers 4.51.3's slow SiglipImageProcessor, pixels cast to bf16 "
              "(tests/test_oracle_processors.py); text padding=True/64 with the mask = the model's forward "
              "(tests/test_embedder_transformers.py::test_siglip_matches_own_forward_with_its_attention_mask). "
              "Not checked: transformers 4's SiglipTokenizer (sentencepiece; needs the real checkpoint)",
    "siglip2": "image processor equal to transformers 4.51.3's SiglipImageProcessorFast (use_fast=True), bf16 "
               "pixels into fp32 weights (tests/test_oracle_processors.py); text max_length, case kept "
               "(tests/test_embedder_transformers.py::test_siglip2_max_length_lowercase_and_original_case; the paper's "
               "fixed-resolution checkpoint, model type siglip: test_fixed_resolution_siglip2_pads_to_max_length_"
               "under_original). "
               "Not checked: transformers 4's GemmaTokenizerFast on the real checkpoint",
    "metaclip": "image processor equal to transformers 4.51.3's slow CLIPImageProcessor, pixels cast to bf16 "
                "(tests/test_oracle_processors.py); text = the model's forward on processor(padding=True, 77) "
                "(tests/test_embedder_transformers.py::test_metaclip_matches_own_forward)",
    "eva02": "text and pixels equal to the original's library: eva_clip tokenises with OpenAI's SimpleTokenizer "
             "and resizes with clip.load's transform, and lovr's open_clip path gives clip.tokenize's ids and "
             "clip's pixels (tests/test_oracle_clip.py::test_open_clip_tokenizer_ids_equal_clip_tokenize, "
             "::test_open_clip_eva02_preprocessing_equals_the_openai_transform). Not checked: the model itself, "
             "BAAI's eva_clip (a GitHub checkout, not on PyPI; its EVA02-CLIP-B-16 config asks for xformers "
             "attention and apex fused LayerNorm, CUDA kernels); lovr runs timm's conversion of the weights",
    "pe_core": "text and pixels equal to the original's library as its source reads: perception_models' "
               "tokenizer is OpenAI's (same BPE file, same cleaning) at context 32, its transform a bilinear "
               "squash with mean/std 0.5; lovr's open_clip path gives the same ids and pixels "
               "(tests/test_oracle_clip.py::test_open_clip_pe_core_text_and_pixels_equal_perception_models). "
               "Not checked: the model itself (perception_models is a GitHub checkout, not on PyPI); lovr runs "
               "timm's conversion of the weights",
    "jina-clip": "not checked: the original script was never released; the model is Hub remote code",
    "blip": "not checked: BLIP_test.py is in no commit of the original",
    "videoclip_xl": "not checked: the model code exists only as a GitHub checkout (no package) and the helper "
                    "that made the original's frames is unreleased",
    "videoclip_xl_v2": "not checked: as videoclip_xl",
    "languagebind": "not checked: the original's full-video input (a merged file) is unreleased; its processor "
                    "is the languagebind package's own, which lovr runs (tests/test_embedder_languagebind.py)",
    "gme": "not checked: the original ran the checkpoint's remote gme_inference code on the 2B/7B weights "
           "(no tiny stand-in of that code offline); lovr reimplements it on transformers' Qwen2-VL",
    "mm_embed": "not checked: Hub remote code of nvidia/MM-Embed, not available offline",
    "internvideo2": "no original script (not in the paper)",
    "mteb": "no original script (not in the paper)",
    "xclip": "no original script (not in the paper)",
    "open_clip": "no original script",
    "other": "no original script",
}


def describe(model: str) -> dict[str, Any]:
    """The family row of ``model`` as a dict (for logs and the recorded run configuration)."""
    fam = family_for(model)
    return dataclasses.asdict(fam) if fam else {}


def _frames(f: Family) -> str:
    if f.video_input == NATIVE_VIDEO:
        return f"{f.video_frames} (video tower)"
    if f.video_input == FILES:
        return "clip files"
    return f"every {f.interval}"


def markdown_table() -> str:
    """docs/families.md's table, rendered from the registry (the docs cannot drift from the code)."""
    cols = ("family", "adapter", "model ids", "frames (lovr)", "original interval", "original BGR",
            "text (lovr)", "text (original)", "precision (lovr)", "original dtype", "pooling", "extra",
            "paper (LoVR)", "original source", "oracle (--protocol original)", "notes", "reproduce (GPU)")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for f in [*families(), DEFAULT_FAMILY]:
        paper = ", ".join(f"{k} {v:g}" for k, v in f.paper.items())
        interval = (str(f.original_interval) if f.original_interval
                    else f"not recorded ({f.interval} assumed)" if f.video_input == FRAMES else "n/a")
        cells = (f.name, f.backend, ", ".join(f"`{h}`" for h in f.hub_ids), _frames(f), interval,
                 "yes" if f.original_bgr else "no", f.text, f.original_text, f.precision,
                 f.original_dtype or "", f.pooling, f.extra or "", paper, f.original_source,
                 ORACLE.get(f.name, "not checked"), f.notes,
                 f"`{f.command()}`")
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_docs() -> str:
    """The whole of docs/families.md."""
    return (
        "# Model families\n\n"
        "Generated from `lovr_hf/backends/embedders/families.py` and the adapters' registrations "
        "(`python -m lovr_hf.backends.embedders.families > docs/families.md`); do not edit by hand.\n\n"
        "`lovr eval --model <id>` picks the family's adapter and defaults from this table; "
        "`--protocol original` applies the *original* columns (docs/evaluation.md, \"Protocols\"). "
        "\"original BGR\": the original script fed R/B-swapped frames. \"not recorded\": the released "
        "launchers carry no `--encode_video` interval for the family; 30 is the value on its launcher line.\n\n"
        + markdown_table()
    )


if __name__ == "__main__":
    # adapters register into the importable module ``lovr_hf.backends.embedders.families``, not into this ``__main__`` copy
    from lovr_hf.backends.embedders import families as _registry

    print(_registry.render_docs(), end="")
