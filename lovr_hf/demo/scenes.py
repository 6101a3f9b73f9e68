"""One synthetic scene: what it is (:class:`SceneSpec`), how its frames are drawn (:class:`SceneRenderer`, straight
into YUV 4:2:0 planes with numpy), how a flash brightens a frame (:data:`FLASH_Y`/:data:`FLASH_C`) and which tone
it plays (:func:`scene_tone`, :class:`ToneTrack`). :mod:`lovr_hf.demo.samples` puts scenes back to back into
files with their exact ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

KINDS = ("moving", "pan", "static")


@dataclass(frozen=True)
class SceneSpec:
    """One scene of a synthetic video.

    ``kind``: ``moving`` (default: drifting texture, bouncing blocks, ticker, noise), ``pan`` (a fast
    horizontal camera pan over one continuous texture, no cut) or ``static`` (identical frames).
    ``transition``: how this scene begins after the previous one: ``cut`` or ``fade`` (cross-dissolve of
    ``fade_frames`` frames centred on the scene start). ``flashes``: offsets inside the scene where a
    flash of ``flash_len`` near-white frames starts.
    """

    num_frames: int
    kind: str = "moving"
    transition: str = "cut"
    fade_frames: int = 24
    flashes: tuple[int, ...] = ()
    flash_len: int = 2
    pan_speed: float = 24.0  # pixels per frame at 640 px width (scaled with the frame width)


# ----------------------------------------------------------------------------------------------------
# frame synthesis
# ----------------------------------------------------------------------------------------------------

_GOLDEN = 0.6180339887498949


def _periodic_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1], periodic along x with period ``width`` (so endless pans never jump)."""
    gw = max(2, width // cell)
    gh = max(2, height // cell + 2)
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    tiled = np.tile(grid, (1, 3))
    big = cv2.resize(tiled, (3 * width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:, width : 2 * width], -1.0, 1.0)


def _tri(x: np.ndarray | float, span: float) -> np.ndarray | float:
    """Triangle wave in [0, span]: a position bouncing between two walls."""
    if span <= 0:
        return 0.0 * x
    period = 2.0 * span
    m = np.mod(x, period)
    return np.where(m > span, period - m, m) if isinstance(m, np.ndarray) else (period - m if m > span else m)


class SceneRenderer:
    """Renders frame ``t`` (local index, may be negative or past the end during a dissolve) of one scene."""

    def __init__(self, spec: SceneSpec, index: int, width: int, height: int, seed: int) -> None:
        self.spec = spec
        self.w, self.h = width, height
        rng = np.random.default_rng([seed, index, 7919])
        scale = width / 640.0
        # distinct hue per scene: golden-ratio walk round the colour wheel, random brightness
        hue = 2 * math.pi * ((seed * 0.137 + index * _GOLDEN) % 1.0)
        sat = rng.uniform(38, 52)
        self.u0 = 128 + sat * math.cos(hue)
        self.v0 = 128 + sat * math.sin(hue)
        self.y0 = float(rng.uniform(70, 170)) if index % 2 == 0 else float(rng.uniform(60, 185))
        # periodic canvas (luma at full res, chroma at half res) with a vertical margin for wobble
        self.cw = 2 * width
        self.margin = max(2, (height // 8) // 2 * 2)
        ch = height + 2 * self.margin
        # pans get more fine detail, so that a fast pan really changes many pixels (the hard case)
        fine = 0.55 if spec.kind == "pan" else 0.25
        tex = (1 - fine) * _periodic_noise(rng, ch, self.cw, max(8, int(64 * scale)))
        tex += fine * _periodic_noise(rng, ch, self.cw, max(4, int(12 * scale)))
        amp_y = rng.uniform(28, 40) * (1.5 if spec.kind == "pan" else 1.0)
        self.canvas_y = np.clip(self.y0 + amp_y * tex, 16, 229).astype(np.uint8)
        ctex_u = _periodic_noise(rng, ch // 2, self.cw // 2, max(4, int(40 * scale)))
        ctex_v = _periodic_noise(rng, ch // 2, self.cw // 2, max(4, int(40 * scale)))
        self.canvas_u = np.clip(self.u0 + 12 * ctex_u, 16, 240).astype(np.uint8)
        self.canvas_v = np.clip(self.v0 + 12 * ctex_v, 16, 240).astype(np.uint8)
        # motion of the background
        if spec.kind == "pan":
            self.vx = spec.pan_speed * scale * (1 if rng.random() < 0.5 else -1)
            self.wobble = 0.0
        elif spec.kind == "static":
            self.vx, self.wobble = 0.0, 0.0
        else:
            self.vx = rng.uniform(0.6, 2.0) * scale * (1 if rng.random() < 0.5 else -1)
            self.wobble = self.margin * 0.8
        self.x_off = float(rng.uniform(0, self.cw))
        self.wob_period = rng.uniform(90, 200)
        # bouncing blocks: (w, h, x0, y0, vx, vy, Y, U, V)
        self.blocks = []
        for _ in range(int(rng.integers(3, 6))):
            bw = max(2, int(rng.uniform(40, 120) * scale) // 2 * 2)
            bh = max(2, int(rng.uniform(30, 90) * scale) // 2 * 2)
            bw, bh = min(bw, width // 2 // 2 * 2), min(bh, height // 2 // 2 * 2)
            moving = spec.kind == "moving"
            speed = rng.uniform(1.0, 4.0) * scale if moving else 0.0
            ang = rng.uniform(0, 2 * math.pi)
            bh_hue = hue + rng.uniform(0.6, 2.4)
            self.blocks.append(
                (
                    bw, bh, rng.uniform(0, 4 * width), rng.uniform(0, 4 * height),
                    speed * math.cos(ang), speed * math.sin(ang),
                    int(np.clip(self.y0 + rng.choice([-1, 1]) * rng.uniform(40, 70), 20, 225)),
                    int(128 + 45 * math.cos(bh_hue)), int(128 + 45 * math.sin(bh_hue)),
                )
            )
        # scrolling text-like ticker in some scenes
        self.ticker = None
        if spec.kind == "moving" and rng.random() < 0.6:
            bar_h = max(8, (height // 12) // 2 * 2)
            cell = max(1, bar_h // 9)
            glyph_w, glyph_h = 5 * cell, 7 * cell
            n_chars = max(4, (2 * width) // (glyph_w + cell))
            strip_w = n_chars * (glyph_w + cell)
            strip = np.full((bar_h, strip_w), 28, np.uint8)
            top = (bar_h - glyph_h) // 2
            bits = rng.random((n_chars, 7, 5)) < 0.45
            bits[rng.random(n_chars) < 0.18] = False  # word gaps
            for k in range(n_chars):
                glyph = np.kron(bits[k], np.ones((cell, cell), bool))
                x = k * (glyph_w + cell)
                strip[top : top + glyph_h, x : x + glyph_w][glyph] = 215
            self.ticker = (strip, rng.uniform(1.5, 3.5) * scale, height - bar_h - max(2, height // 30) // 2 * 2)
        # sensor-like noise: a small bank of planes cycled per frame
        if spec.kind == "static":
            self.noise = None
        else:
            self.noise = rng.integers(0, 6, size=(4, height, width), dtype=np.uint8)
        self._cols = np.arange(width)
        self._ccols = np.arange(width // 2)

    def render(self, t: int, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        w, h = self.w, self.h
        x0 = int(round(self.x_off + self.vx * t)) // 2 * 2
        yo = self.margin
        if self.wobble:
            yo = int(round(self.margin + self.wobble * math.sin(2 * math.pi * t / self.wob_period))) // 2 * 2
        cols = (x0 + self._cols) % self.cw
        ccols = (x0 // 2 + self._ccols) % (self.cw // 2)
        np.take(self.canvas_y[yo : yo + h], cols, axis=1, out=y)
        np.take(self.canvas_u[yo // 2 : yo // 2 + h // 2], ccols, axis=1, out=u)
        np.take(self.canvas_v[yo // 2 : yo // 2 + h // 2], ccols, axis=1, out=v)
        for bw, bh, bx, by, vx, vy, cy, cu, cv in self.blocks:
            px = int(_tri(bx + vx * t, w - bw)) // 2 * 2
            py = int(_tri(by + vy * t, h - bh)) // 2 * 2
            y[py : py + bh, px : px + bw] = cy
            u[py // 2 : (py + bh) // 2, px // 2 : (px + bw) // 2] = cu
            v[py // 2 : (py + bh) // 2, px // 2 : (px + bw) // 2] = cv
        if self.ticker is not None:
            strip, speed, top = self.ticker
            off = int(speed * t) % strip.shape[1]
            idx = (off + self._cols) % strip.shape[1]
            bar_h = strip.shape[0]
            np.take(strip, idx, axis=1, out=y[top : top + bar_h])
            u[top // 2 : (top + bar_h) // 2] = 128
            v[top // 2 : (top + bar_h) // 2] = 128
        if self.noise is not None:
            y += self.noise[t % len(self.noise)]


FLASH_Y = np.clip(np.arange(256) + (235 - np.arange(256)) * 0.88, 0, 255).astype(np.uint8)
FLASH_C = np.clip(128 + (np.arange(256) - 128) * 0.12, 0, 255).round().astype(np.uint8)


def scene_tone(k: int) -> float:
    """Scene ``k``'s tone: 12 distinct pitches a semitone apart from 330 Hz, then octaves up."""
    return 330.0 * 2.0 ** ((k % 12) / 12.0) * 2.0 ** (k // 12)


class ToneTrack:
    """The AAC track of :func:`make_video`: video frame ``f`` gets samples ``[f * sr / fps, (f+1) * sr /
    fps)`` of its scene's tone (phase-continuous on the absolute sample clock), muxed right after the
    frame's video packets so that the two streams interleave."""

    def __init__(self, container: av.container.OutputContainer, rate: int, layout: str, fps: Fraction,
                 scene_of: np.ndarray, freqs: list[float]) -> None:
        self.container = container
        self.stream = container.add_stream("aac", rate=rate, layout=layout)
        self.rate, self.layout, self.fps = rate, layout, fps
        self.channels = av.AudioLayout(layout).nb_channels
        self.scene_of, self.freqs = scene_of, freqs

    def write_frame(self, f: int) -> None:
        a = int(Fraction(f * self.rate) / self.fps)
        b = int(Fraction((f + 1) * self.rate) / self.fps)
        if b <= a:
            return
        t = np.arange(a, b, dtype=np.float64) / self.rate
        pcm = (0.25 * np.sin(2 * np.pi * self.freqs[int(self.scene_of[f])] * t)).astype(np.float32)
        data = np.repeat(pcm[None, :], self.channels, axis=0)  # planar: one row per channel
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = a
        frame.time_base = Fraction(1, self.rate)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
