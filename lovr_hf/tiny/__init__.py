"""Real, tiny, randomly initialised models saved to a folder: tests and the offline demo never need the Hub.

Each builder creates a genuine architecture (Qwen2.5-VL, Qwen2-VL, Qwen3-VL, CLIP, SigLIP, BLIP, X-CLIP, GME,
open_clip, LanguageBind, ...) from a small config, a tokenizer trained locally with ``tokenizers`` on a fixed
built-in corpus, and the real processors, and saves them with ``save_pretrained``. The folders reload through
the Auto classes exactly like a Hub checkpoint, so every code path that loads a model by id/folder is
exercised for real. Weights, configs and tokenizers depend only on ``seed`` and the fixed corpus: two builds
are byte-equal, so a tiny model's content label (:func:`lovr_hf.model_labels.model_label`) is the same on
every machine. (CLIP's ``</w>`` BPE is learned by :func:`lovr_hf.tiny.common._learn_merges`, the
``tokenizers`` trainer's rule with the initial symbols numbered in sorted order: the trainer numbers them in
hash order, which changed the vocabulary on every call.)

Builders are idempotent: a complete folder (marked by ``lovr_tiny.json``, written last) is reused as is.
A build goes to a temporary sibling folder that is renamed into place, so concurrent builders (e.g. two
processes of one ``accelerate launch``) never see a half-written folder.

What every builder shares (the corpus, BPE training, the atomic build, the tiny tower sizes) lives in
:mod:`lovr_hf.tiny.common`; the builders live in one module per family (:mod:`lovr_hf.tiny.qwen_vl`,
:mod:`lovr_hf.tiny.clip`, ...). This package lists the builders, its public API:
``from lovr_hf.tiny import build_tiny_clip``.
"""

from lovr_hf.tiny.blip import build_tiny_blip
from lovr_hf.tiny.clip import build_tiny_clip, build_tiny_open_clip, build_tiny_siglip
from lovr_hf.tiny.gme import build_tiny_gme
from lovr_hf.tiny.llava_onevision import build_tiny_llava_onevision
from lovr_hf.tiny.openclip_timm import build_tiny_eva02_clip, build_tiny_pe_core
from lovr_hf.tiny.qwen_vl import build_tiny_qwen2vl, build_tiny_qwen3vl, build_tiny_qwen25vl
from lovr_hf.tiny.siglip2 import build_tiny_siglip2
from lovr_hf.tiny.smolvlm import build_tiny_smolvlm2
from lovr_hf.tiny.xclip import build_tiny_xclip

__all__ = [
    "build_tiny_blip",
    "build_tiny_clip",
    "build_tiny_eva02_clip",
    "build_tiny_gme",
    "build_tiny_llava_onevision",
    "build_tiny_open_clip",
    "build_tiny_pe_core",
    "build_tiny_qwen25vl",
    "build_tiny_qwen2vl",
    "build_tiny_qwen3vl",
    "build_tiny_siglip",
    "build_tiny_siglip2",
    "build_tiny_smolvlm2",
    "build_tiny_xclip",
]
