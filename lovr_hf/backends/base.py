"""The small interfaces every backend family implements.

Each interface is deliberately narrow (one or two methods) so that a new model or service is one
small class. Implementations register themselves in the matching registry below.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lovr_hf.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class GenerationParams:
    """Sampling settings shared by captioners and LLMs (defaults = the original LoVR captioner)."""

    temperature: float = 0.9
    top_p: float = 0.001
    repetition_penalty: float = 1.05
    max_new_tokens: int = 1024
    do_sample: bool = True
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend:
    """What every model backend (captioner, chat LLM, embedder) offers a command before its first row.

    :func:`lovr_hf.failures.start_backend` calls :meth:`load` and :meth:`check_server` once, so a model that
    cannot load or a server that refuses the key stops the command with one line instead of failing every row.
    """

    name: str = "backend"
    #: the frame size this model wants decoded (a captioner's pixel budget, an embedder's input size; read by
    #: :func:`lovr_hf.video.decode_plan.size_request`: None, a ``FrameSize``, ``(width, height)``, a mapping or
    #: an object with ``resolve(w, h)``); default None = frames at their stored size, resized by the model's
    #: own preprocessing
    decode_size: Any = None

    def load(self) -> Any:
        """Load the weights now (once: later calls reuse them). Default: nothing to load."""
        return None

    def check_server(self, what: str = "model") -> None:
        """Check the server and key this backend calls (``what`` names it in the message). Default: no server."""

    def model_id(self) -> str:
        return self.name


class Captioner(Backend, ABC):
    """Vision-language model: frames of each clip -> one caption per clip."""

    name: str = "captioner"

    @abstractmethod
    def caption(
        self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams
    ) -> list[str]:
        """``batch``: one uint8 array [n_frames, H, W, 3] per clip; ``prompt``: {"system", "user"}."""

    #: what the last :meth:`caption` call measured (``tokens_out``, ...), added to the stage's cost log;
    #: None = the backend measures nothing
    last_stats: dict[str, Any] | None = None


def approx_tokens(text: str) -> int:
    """Rough token count (~4 characters per token for English) when no tokenizer is at hand."""
    return math.ceil(len(text) / 4)


class ChatLLM(Backend, ABC):
    """Text LLM speaking chat messages (OpenAI-style ``[{"role", "content"}]``)."""

    name: str = "llm"
    #: the model's context in tokens, which the merge sizes its inputs to (None: unknown, inputs unbounded)
    max_context_tokens: int | None = None

    @abstractmethod
    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> str:
        """Return the reply text; raise on failure (callers record failures per row)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model: its tokenizer where it has one; default :func:`approx_tokens`."""
        return approx_tokens(text)


class Embedder(Backend, ABC):
    """Retrieval model: texts and frames into one shared, L2-normalised space."""

    name: str = "embedder"

    @property
    def max_text_tokens(self) -> int | None:
        """Text length limit in tokens (None = no limit), used by --text-mode truncate / chunk-mean; adapters
        override it (a read-only property: the limit comes from the model and the config, never set later)."""
        return None

    # -- capabilities the stages read (declared here with their defaults, never probed with hasattr) ---------
    #: the model runs code from its Hub repo: ``lovr eval`` refuses it before any download unless
    #: ``--trust-remote-code`` is given (default False: nothing of the Hub repo runs)
    requires_remote_code: bool = False
    #: under ``--protocol original`` the family's original script picked each clip's frame by its similarity
    #: to the gold caption (MM-Embed): the visual stage reproduces it and flags the rows as oracle
    #: (default False: frames are sampled, never chosen by the answer)
    original_oracle_frame: bool = False
    #: bumped by an adapter whose ``--protocol original`` output changed, so older embeddings are made anew
    #: (part of the original protocol's fingerprint); None = never changed
    original_revision: int | None = None

    def text_chunk_ids(self, text: str) -> list[list[int]] | None:
        """``--text-mode chunk-mean``: the token ids of each chunk ``text`` is embedded as, so the stage can
        record how many chunks were averaged. Default None: the embedder cannot tell (counted as one)."""
        return None

    @abstractmethod
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """[n, d] float32, L2-normalised."""

    @abstractmethod
    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3] -> [n, d] float32, L2-normalised."""

    #: how the visual stage feeds this model: ``"frames"`` (decoded frames: ``embed_frames`` pooled, or
    #: ``embed_video`` for a native video tower) or ``"files"`` (``embed_video_files`` on the clip files)
    video_input: str = "frames"
    #: native video towers: frames per clip / per video taken by the family's own rule (uniform);
    #: None = the interval sampling of frame-based families
    video_frames: int | None = None

    def embed_video(self, frames: np.ndarray) -> np.ndarray | None:
        """Native video tower, if any: [n, H, W, 3] -> [d]. None = mean-pool frame embeddings."""
        return None

    def embed_video_files(self, groups: Sequence[Sequence[str]]) -> np.ndarray | None:
        """``video_input == "files"``: one item per group of video files in time order (a clip = its one file,
        a full video = its clip files; the adapter merges a group as its family did) -> [n, d]. None = the
        embedder does not read files."""
        return None


class SceneDetector(ABC):
    """Shot-boundary detector: a video file -> the frame indices where new scenes start.

    Only :meth:`detect` is required (PySceneDetect's narrow detector idea). What the segment stage may use
    beyond it is declared here with defaults, never probed: a plug-in that implements ``detect`` alone is
    segmented correctly, adaptive search included (it is then re-created at each threshold tried).
    """

    name: str = "detector"
    #: the score threshold in use, recorded in ``videos.threshold`` (None: the detector has no threshold)
    threshold: float | None = None
    #: decoder threads the segment stage sets to its share of the cores (0 = the decoder's choice); a
    #: detector that does not decode with PyAV ignores it; it never changes the output
    threads: int = 0
    #: True when :meth:`scores` and :meth:`cuts_from_scores` are implemented: ``--adaptive`` then decodes
    #: each video once and re-thresholds the scores, instead of running ``detect`` at every threshold
    rescorable: bool = False

    @abstractmethod
    def detect(self, path: str) -> list[int]:
        """Frame indices (0-based, ascending, > 0) of the first frame of each new scene."""

    def analyze(self, path: str) -> Any:
        """More than :meth:`detect` where the detector knows it: a ``DetectionResult``
        (``backends.detectors.detector_base``: cuts, threshold, ``extra["downscale"]`` the factor used), or
        None (the default) when ``detect`` and :attr:`threshold` are all there is."""
        return None

    def scores(self, path: str) -> Any:
        """Per-frame scores of one decode (only where :attr:`rescorable`)."""
        raise NotImplementedError(f"detector {self.name!r} is not rescorable")

    def cuts_from_scores(self, scores: Any, threshold: float | None = None) -> list[int]:
        """The cuts :meth:`detect` would give at ``threshold``, from :meth:`scores` without decoding again
        (only where :attr:`rescorable`)."""
        raise NotImplementedError(f"detector {self.name!r} is not rescorable")


@dataclass(frozen=True)
class Judgement:
    """One caption's score in [0, 10], or why there is none."""

    score: float | None
    error: str | None = None


def _on_scale(score: Any) -> float | None:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 10.0 else None


class QualityScorer(ABC):
    """Caption quality judge: 0-10, higher is better.

    A judge that cannot give a score (its call failed, its reply has no number) is a failure, never a score:
    the caption stage reads :meth:`judge`, one :class:`Judgement` per caption with either a score or the
    error, and records such clips as ``failed`` instead of re-captioning them as "bad".
    """

    name: str = "scorer"

    @abstractmethod
    def score(self, captions: Sequence[str], frames: Sequence[np.ndarray] | None = None) -> list[float]:
        """One score in [0, 10] per caption."""

    def judge(self, captions: Sequence[str], frames: Sequence[np.ndarray] | None = None) -> list[Judgement]:
        """Scores or errors for ``captions``. Default: :meth:`score`, where an exception fails the whole call
        and a value outside [0, 10] or NaN fails that caption; a judge that knows why a caption has no score
        (an LLM judge) overrides this."""
        try:
            scores = self.score(captions, frames)
        except Exception as exc:
            reason = f"quality scorer failed: {type(exc).__name__}: {exc}"
            logger.warning("%s", reason)
            return [Judgement(None, reason) for _ in captions]
        if len(scores) != len(captions):
            return [Judgement(None, f"quality scorer returned {len(scores)} scores for {len(captions)} captions")
                    for _ in captions]
        out = []
        for s in scores:
            value = _on_scale(s)
            out.append(Judgement(value) if value is not None else
                       Judgement(None, f"quality scorer gave {s!r}, not a score in [0, 10]"))
        return out


# one module per line (several people add backends at once); optional ones register only when importable
CAPTIONERS: Registry[Captioner] = Registry(
    "captioners",
    (
        "lovr_hf.backends.captioners.transformers",
        "lovr_hf.backends.captioners.openai",
        "lovr_hf.backends.captioners.vllm",
        "lovr_hf.backends.standins.testing",
        "lovr_hf.backends.standins.describer",
    ),
    base=Captioner,
)
LLMS: Registry[ChatLLM] = Registry(
    "llms",
    (
        "lovr_hf.backends.llms.openai",
        "lovr_hf.backends.llms.transformers",
        "lovr_hf.backends.standins.testing",
    ),
    base=ChatLLM,
)
EMBEDDERS: Registry[Embedder] = Registry(
    "embedders",
    (
        "lovr_hf.backends.embedders.transformers",
        "lovr_hf.backends.embedders.openclip",
        "lovr_hf.backends.embedders.jina",
        "lovr_hf.backends.standins.testing",
        "lovr_hf.backends.standins.describer",
        "lovr_hf.backends.embedders.blip",
        "lovr_hf.backends.embedders.xclip",
        "lovr_hf.backends.embedders.gme",
        "lovr_hf.backends.embedders.mm_embed",
        "lovr_hf.backends.embedders.languagebind",
        "lovr_hf.backends.embedders.mteb",
        "lovr_hf.backends.embedders.videoclip_xl",
    ),
    base=Embedder,
)
DETECTORS: Registry[SceneDetector] = Registry(
    "detectors",
    (
        "lovr_hf.backends.detectors.fast",
        "lovr_hf.backends.detectors.pyscenedetect",
        "lovr_hf.backends.detectors.transnet",
    ),
    base=SceneDetector,
)
SCORERS: Registry[QualityScorer] = Registry("scorers", ("lovr_hf.backends.captioners.scorers",), base=QualityScorer)
