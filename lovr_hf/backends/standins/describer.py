"""An offline stand-in for a captioning VLM and a retrieval model: it describes what the pixels show.

``lovr demo`` must run on a 2-core machine with no network, yet its output should read like a small
benchmark: captions that describe their clips, merged captions in real language, retrieval above chance.
No video-language model that small exists, so the demo captions with this *frame describer*: a
deterministic function that measures each clip (the colours covering the frame, brightness, texture,
global motion and its direction, flashes, how the picture changes from beginning to end) and writes it
as plain English, and scores retrieval with the matching *describer embedder* (texts by the colour,
light, motion and texture words they use; frames by the same attributes measured on pixels). Both are
named as stand-ins wherever they appear (model ids, card, demo output): they are not models, and their
scores say nothing about any model. They run through the same stages as a real VLM and embedder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import CAPTIONERS, EMBEDDERS, Captioner, Embedder, GenerationParams
from lovr_hf.stats.vectors import l2_normalize

DESCRIBER_ID = "lovr-frame-describer-v1 (offline stand-in, not a model)"
EMBEDDER_ID = "lovr-describer-embedder-v1 (offline stand-in, not a model)"

#: named colours (RGB) of the describer's vocabulary; the embedder's first dimensions, in this order
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15), "white": (240, 240, 240), "grey": (128, 128, 128), "red": (200, 35, 35),
    "orange": (235, 130, 30), "yellow": (230, 215, 50), "olive": (120, 120, 30), "green": (40, 170, 60),
    "teal": (30, 130, 130), "cyan": (60, 210, 220), "blue": (40, 70, 210), "navy": (25, 30, 100),
    "purple": (120, 50, 170), "magenta": (210, 50, 190), "pink": (240, 150, 190), "brown": (120, 75, 40),
}
_NAMES = list(COLOURS)
_RGB = np.array([COLOURS[n] for n in _NAMES], np.float32)
LIGHT = ("dark", "dim", "bright")
MOTION = ("still", "slow", "fast")
TEXTURE = ("smooth", "textured", "grainy")
DIRECTIONS = ("left", "right", "up", "down")
VOCAB = _NAMES + list(LIGHT) + list(MOTION) + list(TEXTURE) + list(DIRECTIONS) + ["flash"]
_WORD = re.compile(r"[a-z]+")
_SYNONYMS = {"gray": "grey", "quickly": "fast", "rapidly": "fast", "slowly": "slow", "gently": "slow",
             "motionless": "still", "static": "still", "dimly": "dim", "brightly": "bright", "flashes": "flash",
             "noisy": "grainy", "speckled": "grainy", "patterned": "textured", "plain": "smooth"}


def _small(frames: np.ndarray, side: int = 48) -> np.ndarray:
    """Frames subsampled to about ``side`` pixels on the long edge (float32): the attributes are coarse."""
    n, h, w = frames.shape[:3]
    step = max(1, max(h, w) // side)
    return frames[:, ::step, ::step].astype(np.float32)


def colour_shares(frames: np.ndarray) -> np.ndarray:
    """Share of pixels nearest to each named colour, per frame: [n, len(COLOURS)]."""
    f = _small(frames)
    px = f.reshape(len(f), -1, 3)
    d2 = ((px[:, :, None, :] - _RGB[None, None]) ** 2).sum(-1)
    idx = d2.argmin(-1)
    return np.stack([np.bincount(i, minlength=len(_NAMES)) / i.size for i in idx]).astype(np.float32)


def _light(f: np.ndarray) -> str:
    y = float((0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]).mean())
    return "dark" if y < 60 else "dim" if y < 105 else "bright" if y > 165 else ""


def _texture(f: np.ndarray) -> str:
    g = f.mean(-1)
    edges = float(np.abs(np.diff(g, axis=-1)).mean() + np.abs(np.diff(g, axis=-2)).mean())
    return "smooth" if edges < 6 else "grainy" if edges > 30 else "textured"


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Global translation from ``a`` to ``b`` (phase correlation on grey frames): (dx, dy) in pixels."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    r = fb * np.conj(fa)
    corr = np.fft.ifft2(r / np.maximum(np.abs(r), 1e-6)).real
    dy, dx = np.unravel_index(int(corr.argmax()), corr.shape)
    h, w = corr.shape
    return float(dx - w if dx > w // 2 else dx), float(dy - h if dy > h // 2 else dy)


def _motion(f: np.ndarray) -> tuple[str, str | None]:
    if len(f) < 2:
        return "still", None
    change = float(np.abs(np.diff(f, axis=0)).mean())
    speed = "still" if change < 2.0 else "slow" if change < 14.0 else "fast"
    g = f.mean(-1)
    if len(g) >= 3:  # what stays put on screen (grain, overlays) would pin the correlation peak at 0: remove it
        g = g - np.median(g, axis=0)
    shifts = np.array([_shift(g[i], g[i + 1]) for i in range(len(g) - 1)])
    dx, dy = np.median(shifts, axis=0) if len(shifts) else (0.0, 0.0)
    direction = None
    if speed != "still" and max(abs(dx), abs(dy)) >= 1.0:
        direction = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    return speed, direction


def _flash(f: np.ndarray) -> bool:
    y = f.mean(axis=(1, 2, 3))
    return len(y) >= 3 and bool(((y - np.median(y)) > 80).any())


def _colours_phrase(shares: np.ndarray) -> list[str]:
    order = np.argsort(-shares)
    picked = [_NAMES[i] for i in order[:3] if shares[i] >= 0.12]
    return picked or [_NAMES[int(order[0])]]


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(frames: np.ndarray) -> str:
    """Three short paragraphs about a clip's frames (a pure function of the pixels)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"expected frames [n>0, H, W, 3], got shape {frames.shape}")
    f = _small(frames)
    shares = colour_shares(frames)
    thirds = [p for p in np.array_split(np.arange(len(f)), 3) if len(p)]
    overall = _colours_phrase(shares.mean(0))
    light, texture = _light(f), _texture(f)
    speed, direction = _motion(f)
    lit = f"{light} " if light else ""
    p1 = (f"A {lit}{texture} scene in which {_join(overall)} cover most of the frame."
          if len(overall) > 1 else f"A {lit}{texture} scene in which {overall[0]} covers most of the frame.")
    if speed == "still":
        p2 = "The picture stays still: nothing moves and the camera holds its position."
    else:
        way = f" towards the {direction}" if direction else ""
        p2 = (f"The picture moves {'quickly' if speed == 'fast' else 'slowly'}{way}, "
              f"{'shapes and patterns sliding across the frame' if direction else 'its patterns shifting in place'}.")
    if _flash(f):
        p2 += " A brief white flash interrupts the scene."
    starts = [_colours_phrase(shares[p].mean(0))[0] for p in thirds]
    if len(set(starts)) == 1:
        p3 = f"From beginning to end the scene keeps its {starts[0]} look."
    else:
        p3 = f"It opens on {starts[0]}, turns {starts[len(starts) // 2]} in the middle and ends on {starts[-1]}."
    return f"{p1}\n\n{p2}\n\n{p3}"


@CAPTIONERS.register("describer")
class FrameDescriber(Captioner):
    """Captions = :func:`describe` of the sampled frames; prompt and sampling settings do not matter to it."""

    name = "describer"

    def __init__(self, **_: Any) -> None:
        self.last_stats: dict[str, Any] = {}

    def model_id(self) -> str:
        return DESCRIBER_ID

    def caption(self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams) -> list[str]:
        out = [describe(frames) for frames in batch]
        self.last_stats = {"clips": len(out), "tokens_out": sum(len(t.split()) for t in out)}
        return out


@EMBEDDERS.register("describer")
class DescriberEmbedder(Embedder):
    """Texts and frames in the describer's vocabulary space (one dimension per word of :data:`VOCAB`).

    A text counts the vocabulary words it uses (colours weighted by the order they are named in, as the
    describer names the dominant colour first); a frame puts its colour shares, light and texture there.
    """

    name = "describer"
    max_text_tokens: int | None = None

    def __init__(self, **_: Any) -> None:
        self.dim = len(VOCAB)

    def model_id(self) -> str:
        return EMBEDDER_ID

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, text in enumerate(texts):
            seen = 0
            for w in _WORD.findall(str(text).lower()):
                w = _SYNONYMS.get(w, w)
                if w in COLOURS:
                    out[r, VOCAB.index(w)] += 1.0 / (1 + 0.5 * seen)
                    seen += 1
                elif w in VOCAB:
                    out[r, VOCAB.index(w)] += 0.5
        return l2_normalize(out)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        out = np.zeros((len(frames), self.dim), np.float32)
        if not len(frames):
            return out
        out[:, : len(_NAMES)] = colour_shares(frames) * 2.0
        for i, f in enumerate(_small(frames)):
            for word in (_light(f), _texture(f)):
                if word:
                    out[i, VOCAB.index(word)] += 0.5
        return l2_normalize(out)
