"""VideoCLIP-XL and VideoCLIP-XL-v2 (alibaba-pai) as retrieval embedders, registered as ``videoclip_xl``.

What the original did (``VideoCLIP-XL_test.py`` / ``VideoCLIP-XL-v2_test.py`` at commit 00ca611, identical but
for the weight file): ``from modeling import VideoCLIP_XL`` (the model's GitHub repository,
github.com/alibaba-pai/VideoCLIP-XL; no PyPI package), its state dict loaded from ``VideoCLIP-XL.bin``;
texts: ``text_encoder.tokenize(texts, truncate=True)`` (Long-CLIP, 248 tokens) and
``model.text_model.encode_text``; videos: frames every ``--interval`` frames (10 for XL, 30 for v2 in the run
scripts) through ``video_preprocessing_frame`` (an unreleased frames variant of the repository's
``demo.video_preprocessing``: 8 frames ``frames[::len // 8][:8]``, resized to 224x224, ImageNet mean/std,
[1, 8, 3, 224, 224]) and ``model.vision_model.get_vid_features``; fp32.

Here the model code is run from a local checkout of that repository (``code_dir``; by default the model folder
itself when it holds ``modeling.py``): that is code from outside lovr_hf, so the adapter refuses without
``trust_remote_code`` (``--trust-remote-code``). Its modules (``modeling``, ``utils``) are imported under
private names so they never clash with other top-level ``utils`` modules. Weights: the folder's ``.bin``
(read with ``weights_only=True``) or ``.safetensors``. ``embed_video`` applies the demo's rule: 8
frames ``frames[::n // 8][:8]`` of what it is given (the visual stage gives exactly 8 uniform frames; the
original protocol's interval frames get the same thinning); fewer than 8 repeat in place (the original's
helper is unreleased, its demo's ``step = 0`` would fail). Frames are RGB; ``channel_order="bgr"`` (set by
``--protocol original``) reverses them as the demo's ``fr[:, :, ::-1]`` does on the decord RGB frames the
original passed (the demo reads BGR with OpenCV, so its flip gives RGB; on decord frames it gives BGR — likely
what the unreleased helper did, not verified).

Tested against a local stand-in of the repository (tests/remote_code/videoclip_xl_standin/) implementing that
API on a tiny random network; the real code and weights need the Hub / GitHub and were not run here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    PieceTextEmbedder,
    check_frames,
    device_and_dtype,
    encode_batches,
    model_ref,
    refuse_remote_code,
    text_limit,
    token_pieces,
)
from lovr_hf.backends.embedders.families import NATIVE_VIDEO, Family, register_family
from lovr_hf.backends.files import load_weights

logger = logging.getLogger(__name__)

NUM_FRAMES = 8
IMAGE_SIZE = 224
TEXT_LIMIT = 248  # Long-CLIP: 77 * 4 - 60
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # the repository's demo normalize(): ImageNet
STD = np.array([0.229, 0.224, 0.225], np.float32)
_REPO_MODULES = ("modeling", "utils", "demo")
WEIGHT_NAMES = ("VideoCLIP-XL-v2.bin", "VideoCLIP-XL.bin")


def demo_frame_indices(n: int, k: int = NUM_FRAMES) -> list[int]:
    """The repository demo's thinning ``frames[::n // k][:k]``; fewer than ``k`` frames repeat in place."""
    if n <= 0:
        raise ValueError("no frames")
    if n < k:
        return [i * n // k for i in range(k)]
    return list(range(0, n, n // k))[:k]


@contextlib.contextmanager
def _isolated_import(code_dir: Path, tag: str) -> Iterator[None]:
    """Import the repository's top-level modules (``modeling``, ``utils``...) from ``code_dir`` and keep them
    under ``_lovr_videoclip_xl_<tag>.<name>``: other modules named ``utils`` (before and after) are untouched."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in _REPO_MODULES}
    sys.path.insert(0, str(code_dir))
    try:
        yield
    finally:
        sys.path.remove(str(code_dir))
        for k in [k for k in sys.modules if k.split(".")[0] in _REPO_MODULES]:
            sys.modules[f"_lovr_videoclip_xl_{tag}.{k}"] = sys.modules.pop(k)
        sys.modules.update(saved)


def find_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected one weight file ({' or '.join(WEIGHT_NAMES)}, *.bin, "
                                f"*.safetensors), found {[p.name for p in found]}; pass weights=<file>")
    return found[0]


@EMBEDDERS.register("videoclip_xl")
class VideoCLIPXLEmbedder(PieceTextEmbedder):
    """VideoCLIP-XL(-v2): Long-CLIP text tower (248 tokens) and a video tower on 8 frames.

    ``dtype``: ``auto`` = fp32, as the original ran it; an explicit dtype casts the weights and the inputs.
    """

    name = "videoclip_xl"
    requires_remote_code = True
    video_frames = NUM_FRAMES
    _LOADED = ("_model", "_text_encoder")

    def __init__(
        self,
        model_path: str,
        *,
        trust_remote_code: bool = False,
        code_dir: str | None = None,
        weights: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | None = "auto",
        batch_size: int = 16,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        channel_order: str | None = None,
        protocol: str = "lovr",
    ) -> None:
        refuse_remote_code(trust_remote_code, model_path, "runs the VideoCLIP-XL repository's code")
        channel_order = channel_order or ("bgr" if protocol == "original" else "rgb")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be rgb or bgr, got {channel_order!r}")
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.trust_remote_code = trust_remote_code
        self.code_dir = code_dir
        self.weights = weights
        self.channel_order = channel_order

    def model_id(self) -> str:
        return model_ref(self.model_path, self.revision) + (" (bgr)" if self.channel_order == "bgr" else "")

    def _folder(self) -> Path:
        path = Path(self.model_path).expanduser()
        if path.is_dir():
            return path
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.model_path, revision=self.revision))

    def load(self) -> Any:
        if self._model is None:
            folder = self._folder()
            code = Path(self.code_dir).expanduser() if self.code_dir else folder
            if not (code / "modeling.py").is_file():
                raise FileNotFoundError(
                    f"{code}: no modeling.py; VideoCLIP-XL's code is its GitHub repository "
                    "(github.com/alibaba-pai/VideoCLIP-XL): clone it and pass --backend-option code_dir=<checkout>")
            weights = Path(self.weights).expanduser() if self.weights else find_weights(folder)
            device, dtype = device_and_dtype(self.device, self.dtype, auto="float32")
            key = (str(code.resolve()), str(weights.resolve()), device, str(dtype))
            self._model, self._text_encoder = self.shared(key, lambda: self._load_uncached(code, weights, device,
                                                                                          dtype))
        return self._model

    def _load_uncached(self, code: Path, weights: Path, device: str, dtype: Any) -> tuple[Any, Any]:
        refuse_remote_code(self.trust_remote_code, self.model_path, "runs the VideoCLIP-XL repository's code")
        tag = hashlib.sha256(str(code.resolve()).encode()).hexdigest()[:8]
        with _isolated_import(code, tag):
            modeling = importlib.import_module("modeling")
            text_encoder = importlib.import_module("utils.text_encoder.text_encoder")
            model = modeling.VideoCLIP_XL()
        # VideoCLIP-XL ships only a .bin; reading it is covered by the same consent as its code (checked above)
        model.load_state_dict(load_weights(weights, allow_torch_format=self.trust_remote_code))
        return model.to(device=device, dtype=dtype).eval(), text_encoder

    def _param(self) -> Any:
        return next(self.load().parameters())

    @property
    def max_text_tokens(self) -> int | None:
        return text_limit(self._limit, TEXT_LIMIT, self.model_id())

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Truncate: the repository's ``tokenize(truncate=True)`` cuts at 248 tokens."""
        import torch

        model = self.load()
        device = self._param().device

        def encode(batch: list[str]) -> Any:
            tokens = self._text_encoder.tokenize(batch, truncate=True)
            with torch.inference_mode():
                return model.text_model.encode_text(tokens.to(device))

        return encode_batches(texts, self.batch_size, encode, lambda: self.dim)

    def _text_pieces(self, text: str) -> list[str]:
        self.load()
        tok = self._text_encoder._tokenizer  # the repository's SimpleTokenizer
        return [p.strip() for p in token_pieces(tok.encode(text), int(self.max_text_tokens) - 2, tok.decode)]

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """[n, H, W, 3] uint8 RGB -> float32 [8, 3, 224, 224]: the demo's frames, resize and normalisation."""
        import cv2

        picked = np.asarray(frames)[demo_frame_indices(len(frames))]
        if self.channel_order == "bgr":
            picked = picked[..., ::-1]
        out = [(cv2.resize(np.ascontiguousarray(f), (IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32) / 255.0 - MEAN) / STD
               for f in picked]
        return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32)

    def embed_videos(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        """Several videos (each [n, H, W, 3]) -> [len, d], batched through the video tower."""
        import torch

        model = self.load()
        param = self._param()

        def encode(batch: list[np.ndarray]) -> Any:
            x = torch.from_numpy(np.stack([self.preprocess(check_frames(v, allow_empty=False)) for v in batch]))
            with torch.inference_mode():
                return model.vision_model.get_vid_features(x.to(param.device, dtype=param.dtype))

        return encode_batches(videos, self.batch_size, encode, lambda: self.dim)

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        return self.embed_videos([frames])[0]

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Each frame as a still video (repeated 8 times): VideoCLIP-XL has no image path of its own."""
        return self.embed_videos([f[None] for f in check_frames(frames)])


_COMMON = dict(
    backend="videoclip_xl", video_input=NATIVE_VIDEO, video_frames=NUM_FRAMES, original_bgr=False,
    text="248 tokens (Long-CLIP tokenizer), truncated", pooling="video tower on 8 frames (demo rule "
    "frames[::n // 8][:8]), no pooling of frame features", precision="fp32",
)
register_family(Family(
    name="videoclip_xl", patterns=(r"videoclip[-_]xl",), priority=2, original_interval=10, interval=10,
    hub_ids=("alibaba-pai/VideoCLIP-XL",), remote_code=True, run_options="--backend-option code_dir=<checkout>",
    notes="model code = github.com/alibaba-pai/VideoCLIP-XL (no PyPI package): --trust-remote-code, "
          "--backend-option code_dir=<checkout>; original: run_video_clip_xl.sh --interval 10, then the demo's "
          "8 of those frames; frames probably BGR there (unreleased helper): channel_order=bgr under "
          "--protocol original", **_COMMON,
))
register_family(Family(
    name="videoclip_xl_v2", patterns=(r"videoclip[-_]xl[-_]v2",), priority=3, original_interval=30, interval=30,
    hub_ids=("alibaba-pai/VideoCLIP-XL-v2",), remote_code=True, run_options="--backend-option code_dir=<checkout>",
    notes="as videoclip_xl with VideoCLIP-XL-v2.bin; original: run_video_clip_xl-v2.sh --interval 30", **_COMMON,
))
