"""OpenAI CLIP's own text cleaning and image preprocessing, for the clip family under ``--protocol original``.

Why this module: the original ``CLIP_test.py`` (TechNomad-ds/LoVR-benchmark 00ca611) ran OpenAI's ``clip``
package, not transformers. Two of its steps differ from what a transformers CLIP folder does by itself:

* text: ``clip.tokenize`` cleans every caption before the BPE -- ``ftfy.fix_text``, ``html.unescape`` twice,
  strip, every run of Unicode white space collapsed to one space, lower-cased. transformers' CLIPTokenizer
  only NFC-normalises, collapses white space and lower-cases, so a caption with ``’``, mojibake or
  ``&amp;`` got other token ids. :func:`clean_caption` applies the ``clip`` package's pipeline (with the
  libraries it uses: ``ftfy``, ``html``, ``regex``) and :func:`raw_tokenizer` takes the tokenizer's own
  normaliser out, so the cleaned text reaches the BPE exactly as ``clip.tokenize`` hands it over (no second
  NFC pass that ``clip`` does not make).
* pixels: ``clip.load``'s transform is torchvision's ``Resize(n_px, BICUBIC)`` on a PIL image (PIL's bicubic
  resize of the short side), ``CenterCrop(n_px)``, ``ToTensor``, ``Normalize`` with OpenAI's mean/std.
  transformers 5 loads the torchvision-tensor CLIPImageProcessor, up to 2/255 away on some pixels, and its
  PIL processor centres the crop with floor division where torchvision rounds. :func:`openai_clip_pixels`
  builds the same torchvision pipeline ``clip`` builds.

The ``clip`` package itself is only the tests' oracle (tests/test_oracle_clip.py): nothing here imports it.
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

#: the normalisation constants of OpenAI's CLIP preprocessing (``clip.clip._transform``)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clean_caption(text: str) -> str:
    """A caption as ``clip.tokenize`` feeds it to its BPE: ftfy-fixed, HTML entities unescaped twice, white
    space collapsed (Unicode ``\\s`` as the ``regex`` module defines it), stripped, lower-cased."""
    import ftfy
    import regex

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    text = regex.sub(r"\s+", " ", text).strip()
    return text.lower()


def raw_tokenizer(tokenizer: Any) -> Any:
    """A copy of a tokenizers-backed tokenizer without its normaliser (the text arrives already cleaned by
    :func:`clean_caption`); the tokenizer itself when it has no backend or no normaliser."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer
    data = json.loads(backend.to_str())
    if data.get("normalizer") is None:
        return tokenizer
    data["normalizer"] = None
    out = copy.deepcopy(tokenizer)
    out._tokenizer = Tokenizer.from_str(json.dumps(data))
    return out


_TRANSFORMS: dict[int, Any] = {}


def openai_transform(n_px: int) -> Any:
    """The torchvision pipeline ``clip.load`` returns as ``preprocess`` for an ``n_px`` model (PIL in,
    ``[3, n_px, n_px]`` float32 out)."""
    if n_px not in _TRANSFORMS:
        from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

        _TRANSFORMS[n_px] = Compose([
            Resize(n_px, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(n_px),
            lambda image: image.convert("RGB"),
            ToTensor(),
            Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ])
    return _TRANSFORMS[n_px]


def openai_clip_pixels(frames: Sequence[np.ndarray], n_px: int) -> Any:
    """uint8 ``[H, W, 3]`` frames -> ``[n, 3, n_px, n_px]`` float32 pixel values, as ``clip.load``'s transform
    makes them from ``Image.fromarray(frame)``."""
    import torch
    from PIL import Image

    transform = openai_transform(int(n_px))
    return torch.stack([transform(Image.fromarray(np.ascontiguousarray(f))) for f in frames])
