"""Deterministic, fast stand-in backends (registered as ``dummy``) for pipeline and fault-tolerance tests.

They do real work on their inputs, so their outputs change when the inputs do: the captioner describes
the frames' actual colours and motion, the LLM rewrites the paragraphs it was sent, the embedder maps
colour words in texts and the colours of frames into the same dimensions (so text->clip retrieval over
dummy captions of dummy clips scores well above chance). Failure knobs let tests exercise the error
paths of the stages (exceptions, out-of-memory, empty outputs, flaky calls) without a model.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import CAPTIONERS, EMBEDDERS, LLMS, Captioner, ChatLLM, Embedder, GenerationParams
from lovr_hf.backends.captioners.common import OutOfMemory
from lovr_hf.stats.vectors import l2_normalize

#: named reference colours shared by the dummy captioner (words) and embedder (dimensions)
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (220, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 220, 50),
    "green": (40, 180, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 70, 220),
    "purple": (140, 50, 200),
    "pink": (240, 130, 190),
    "brown": (130, 80, 40),
}
_PALETTE_NAMES = list(PALETTE)
_PALETTE_RGB = np.array([PALETTE[n] for n in _PALETTE_NAMES], dtype=np.float32)


def colour_name(rgb: Sequence[float]) -> str:
    """Nearest palette colour to an RGB triple."""
    d = ((_PALETTE_RGB - np.asarray(rgb, np.float32)[None]) ** 2).sum(1)
    return _PALETTE_NAMES[int(d.argmin())]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected frames [n>0, H, W, 3], got shape {frames.shape}")
    return frames


@CAPTIONERS.register("dummy")
class DummyCaptioner(Captioner):
    """Describes each clip from its pixels: frame count, size, mean colour per half, brightness, motion.

    Failure knobs (all off by default): ``fail_frame_counts`` raise ``RuntimeError`` for a clip with that
    many frames; ``oom_above_frames`` raise the transformers backend's ``OutOfMemory`` when a clip has
    more frames than that (a stage can retry with fewer); ``empty_frame_counts`` return ``""``;
    ``delay_s`` sleeps per clip (to test overlap of decoding and generation).
    """

    name = "dummy"

    def __init__(
        self,
        *,
        fail_frame_counts: Sequence[int] = (),
        oom_above_frames: int | None = None,
        empty_frame_counts: Sequence[int] = (),
        delay_s: float = 0.0,
        **_: Any,
    ) -> None:
        self.fail_frame_counts = set(int(x) for x in fail_frame_counts)
        self.oom_above_frames = oom_above_frames
        self.empty_frame_counts = set(int(x) for x in empty_frame_counts)
        self.delay_s = float(delay_s)
        self.last_stats: dict[str, Any] = {}
        self.calls = 0

    def model_id(self) -> str:
        return "dummy-captioner-v1"

    def describe(self, frames: np.ndarray) -> str:
        """The caption for one clip (pure function of the frames)."""
        frames = _check_frames(frames)
        n, h, w = frames.shape[:3]
        f = frames.astype(np.float32)
        mean = f.reshape(-1, 3).mean(0)
        left, right = f[:, :, : w // 2].reshape(-1, 3).mean(0), f[:, :, w // 2 :].reshape(-1, 3).mean(0)
        brightness = float(mean.mean())
        level = "dark" if brightness < 85 else "bright" if brightness > 170 else "moderately lit"
        motion = float(np.abs(np.diff(f, axis=0)).mean()) if n > 1 else 0.0
        pace = "static" if motion < 2 else "slow" if motion < 12 else "fast"
        first = colour_name(f[0].reshape(-1, 3).mean(0))
        last = colour_name(f[-1].reshape(-1, 3).mean(0))
        return (
            f"The clip shows {n} frames of {w}x{h} pixels dominated by {colour_name(mean)} tones "
            f"(mean colour {mean[0]:.0f}, {mean[1]:.0f}, {mean[2]:.0f}). The left side is mostly "
            f"{colour_name(left)} and the right side mostly {colour_name(right)}.\n\n"
            f"The scene is {level} and the camera movement is {pace} (mean frame change {motion:.1f}). "
            f"It opens on {first} and ends on {last}.\n\n"
            f"Overall the atmosphere is {'calm' if pace == 'static' else 'lively'}."
        )

    def caption(
        self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams
    ) -> list[str]:
        self.calls += 1
        t0 = time.perf_counter()
        out = []
        for frames in batch:
            frames = _check_frames(frames)
            n = len(frames)
            if n in self.fail_frame_counts:
                raise RuntimeError(f"dummy captioner: refusing a clip of {n} frames")
            if self.oom_above_frames is not None and n > self.oom_above_frames:
                raise OutOfMemory(f"dummy captioner: {n} frames > {self.oom_above_frames}")
            if self.delay_s:
                time.sleep(self.delay_s)
            out.append("" if n in self.empty_frame_counts else self.describe(frames))
        words = [len(t.split()) for t in out]
        self.last_stats = {
            "clips": len(out),
            "tokens_out": int(sum(words)),
            "tokens_out_per_clip": words,
            "preprocess_s": 0.0,
            "generate_s": time.perf_counter() - t0,
        }
        return out


_LABEL = re.compile(
    r"^\s*(?:paragraph\s*[12ab]|first paragraph|second paragraph|[12ab][.):])\s*[:.)-]?\s*", re.I
)
_SCORE_ASK = re.compile(r"\bscore\b", re.I)


@LLMS.register("dummy")
class DummyChatLLM(ChatLLM):
    """Answers lovr_hf's merge prompts (join / integrate / theme) like the stand-in OpenAI server's default
    responder; any other message: rewrites its last two paragraphs as "<p1>\\n<marker><p2>".

    That is the reply format the merge prompt asks for (two paragraphs separated by a newline), so the
    merge stage parses it like a real model's. Paragraphs are the message's blank-line separated blocks
    (a leading "Paragraph 1:"-style label is dropped); a message with one block is returned as is.
    A conversation mentioning "score" (a quality-judge prompt) gets ``judge_score`` as its reply.
    Knobs: the first ``fail_first`` calls raise ``RuntimeError`` (retries); ``reply`` replaces every
    answer (e.g. garbage).
    """

    name = "dummy"

    def __init__(
        self,
        *,
        marker: str = "[merged] ",
        judge_score: float = 8.0,
        fail_first: int = 0,
        reply: str | None = None,
        **_: Any,
    ) -> None:
        self.marker = marker
        self.judge_score = judge_score
        self.fail_first = int(fail_first)
        self.reply = reply
        self.calls = 0
        self._lock = threading.Lock()

    def model_id(self) -> str:
        return "dummy-llm-v1"

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> str:
        with self._lock:
            self.calls += 1
            calls = self.calls
        if calls <= self.fail_first:
            raise RuntimeError(f"dummy LLM: simulated failure {calls}/{self.fail_first}")
        if self.reply is not None:
            return self.reply
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        if not isinstance(user, str):
            user = " ".join(str(part.get("text", "")) for part in user if isinstance(part, dict))
        system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        if _SCORE_ASK.search(system) or _SCORE_ASK.search(user):
            return f"{self.judge_score:g}"
        merge_reply = _merge_prompt_reply(user)
        if merge_reply is not None:  # the real merge prompts: an honest rewrite the reply guard accepts
            return merge_reply
        blocks = [b.strip() for b in re.split(r"\n\s*\n", user) if b.strip()]
        if len(blocks) < 2:
            return user.strip()
        p1, p2 = (_LABEL.sub("", b).replace("\n", " ").strip() for b in blocks[-2:])
        return f"{p1}\n{self.marker}{p2}"


def _merge_prompt_reply(user: str) -> str | None:
    """The answer of :func:`lovr_hf.testing.fake_openai.default_responder` to lovr_hf's merge prompts (join,
    integration, theme), else None: the two paragraphs joined with a transition word, nothing invented."""
    from lovr_hf.testing.fake_openai import _INTEGRATE, _TRANSITION, default_responder

    if _TRANSITION.search(user) or _INTEGRATE.search(user) or "overall theme of the video" in user:
        return default_responder({"messages": [{"role": "user", "content": user}]})
    return None


def _hash_bucket(token: str, buckets: int) -> int:
    return zlib.crc32(token.encode("utf-8")) % buckets


_WORD = re.compile(r"[a-z0-9]+")


@EMBEDDERS.register("dummy")
class DummyEmbedder(Embedder):
    """Colour statistics + hashed bag of words in one L2-normalised space.

    Dimensions ``[0, len(PALETTE))`` are shared: a text counts its palette colour words there, a frame
    puts a soft assignment of its mean colour there (so dummy captions retrieve their clips). Text words
    also land in hashed dimensions, frames add a coarse 2x2 colour layout, each in their own block.
    ``max_text_tokens`` (words) enables the truncate / chunk-mean text modes.
    """

    name = "dummy"

    def __init__(
        self,
        *,
        dim: int = 64,
        max_text_tokens: int | None = None,
        text_mode: str = "truncate",
        colour_weight: float = 3.0,
        **_: Any,
    ) -> None:
        self.n_colour = len(PALETTE)
        self.n_layout = 12
        if dim < self.n_colour + self.n_layout + 8:
            raise ValueError(f"dim must be >= {self.n_colour + self.n_layout + 8}")
        self.dim = int(dim)
        self._max_words = max_text_tokens
        self.text_mode = text_mode
        self.colour_weight = float(colour_weight)

    @property
    def max_text_tokens(self) -> int | None:  # words, for this stand-in
        return self._max_words

    def model_id(self) -> str:
        return f"dummy-embedder-v1-d{self.dim}"

    def _text_vec(self, words: list[str]) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        start = self.n_colour + self.n_layout
        for word in words:
            if word in PALETTE:
                v[_PALETTE_NAMES.index(word)] += self.colour_weight
            v[start + _hash_bucket(word, self.dim - start)] += 1.0
        return v

    def embed_text(self, texts: Sequence[str], text_mode: str | None = None) -> np.ndarray:
        mode = text_mode or self.text_mode
        if mode not in ("truncate", "chunk-mean"):
            raise ValueError(f"unknown text_mode {mode!r}")
        rows = []
        for text in texts:
            words = _WORD.findall(str(text).lower())
            limit = self.max_text_tokens
            if limit is None or len(words) <= limit:
                rows.append(l2_normalize(self._text_vec(words)))
            elif mode == "truncate":
                rows.append(l2_normalize(self._text_vec(words[:limit])))
            else:
                chunks = [
                    l2_normalize(self._text_vec(words[i : i + limit])) for i in range(0, len(words), limit)
                ]
                rows.append(l2_normalize(np.mean(chunks, axis=0)))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames [n, H, W, 3], got shape {frames.shape}")
        out = np.zeros((len(frames), self.dim), np.float32)
        if len(frames) == 0:
            return out
        f = frames.astype(np.float32)
        mean = f.mean(axis=(1, 2))  # [n, 3]
        d2 = ((mean[:, None, :] - _PALETTE_RGB[None]) ** 2).sum(-1)  # [n, palette]
        soft = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * 40.0**2))
        out[:, : self.n_colour] = self.colour_weight * soft / soft.sum(1, keepdims=True)
        h, w = f.shape[1:3]
        quads = [
            f[:, : h // 2, : w // 2],
            f[:, : h // 2, w // 2 :],
            f[:, h // 2 :, : w // 2],
            f[:, h // 2 :, w // 2 :],
        ]
        layout = np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1)  # [n, 12]
        out[:, self.n_colour : self.n_colour + self.n_layout] = (layout - np.tile(mean, (1, 4))) / 64.0
        return l2_normalize(out)

