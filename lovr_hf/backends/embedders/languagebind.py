"""LanguageBind-Video (the ``languagebind`` PyPI package) as a retrieval embedder, registered as ``languagebind``.

What the original did (``LanguageBind_test.py`` at commit 00ca611): ``LanguageBindVideo.from_pretrained`` /
``LanguageBindVideoTokenizer`` / ``LanguageBindVideoProcessor(model.config, tokenizer)``; every clip FILE went
through the processor (decord, 8 frames at ``np.linspace(0, n - 1, 8, dtype=int)``, /255, CLIP mean/std,
short side 224, centre crop 224, and a ``RandomHorizontalFlipVideo(p=0.5)`` left in the eval transform) and
``model(**inputs).image_embeds``; each full video was ONE merged file (``video_data/merged/<vid>.mp4``, not
released) through the same processor; texts went through the processor's tokenizer (77 tokens,
``padding="max_length"``, truncated) and ``text_embeds``; fp32, no autocast; ``--interval`` unused.

Here: ``video_input = "files"``: :meth:`embed_video_files` gets one group of files per item. A one-file group
is given to the package's processor itself; a group of several files (a full video = its clips in order) is
the concatenation of the files, sampled by the processor's own rule (8 frames at ``linspace`` over the total
frame count, decoded with decord as the processor does) and passed through the processor's own transform:
the frames a stream-copied merged file would give, without writing one. The random flip is OFF by default
(deterministic embeddings, as mteb does); ``random_flip=True`` (``--protocol original``) keeps it, seeded per
item so reruns agree.

Dependencies: ``languagebind`` declares ``transformers<5`` but its video code runs on transformers 5 with two
repairs done here (transformers 5's ``from_pretrained`` re-initialises the text tower's embeddings after
loading them, so the model is built by its constructor and given the checkpoint's tensors, see
:func:`load_model`; its processor is built as its ``__init__`` does, see :func:`make_processor`), so it is installed with ``pip install --no-deps languagebind
pytorchvideo`` next to the ``lovr_hf[languagebind]`` extra (einops, peft, iopath, torchaudio, decord).
``pytorchvideo`` imports ``torchvision.transforms.functional_tensor``, gone from torchvision >= 0.17: aliased
to ``torchvision.transforms.functional`` before import, as mteb does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import sys
import threading
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
    hf_pieces,
    model_ref,
    text_limit,
)
from lovr_hf.backends.embedders.families import FILES, Family, register_family
from lovr_hf.backends.extras import require_extra
from lovr_hf.backends.files import load_weights, segments_of

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "LanguageBind/LanguageBind_Video"  # the original's WEIGHT_PATH .../LanguageBind_Video
TEXT_LIMIT = 77
_MODULES = ("languagebind", "pytorchvideo", "einops", "peft", "iopath", "torchaudio", "decord")
INSTALL = "pip install 'lovr_hf[languagebind]' && pip install --no-deps languagebind pytorchvideo"
_FLIP_LOCK = threading.Lock()  # the seeded random flip borrows the process-wide random generators


def import_languagebind() -> Any:
    """The ``languagebind`` package, with the torchvision alias its pytorchvideo import needs."""
    require_extra("languagebind", "languagebind", *_MODULES, install=INSTALL,
                  note="languagebind declares transformers<5; its video model runs on 5 with lovr_hf's repair")
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional

        sys.modules["torchvision.transforms.functional_tensor"] = functional
    with decord_bridge_kept():  # the package sets decord's (thread-local) bridge to torch on import
        import languagebind
    return languagebind


@contextlib.contextmanager
def decord_bridge_kept() -> Iterator[None]:
    """Restore this thread's decord bridge afterwards: the package's import and every call of its video loader
    switch it to ``torch``, which would change what lovr_hf's own decord reads return."""
    import decord.bridge as bridge

    before = getattr(bridge._CURRENT_BRIDGE, "type", "native")
    try:
        yield
    finally:
        bridge.set_bridge(before)


def model_folder(model_path: str, revision: str | None = None) -> str:
    """A local folder holding the model (a Hub id is downloaded: config, tokenizer and weight files only)."""
    if Path(model_path).expanduser().is_dir():
        return str(Path(model_path).expanduser())
    from huggingface_hub import snapshot_download

    return snapshot_download(model_path, revision=revision,
                             allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin"])


def checkpoint_state(folder: str) -> dict[str, Any]:
    """Every tensor of the folder's weight files (safetensors first; ``.bin`` read with ``weights_only``)."""
    files = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors or .bin weight files")
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_weights(f))
    return state


def load_model(lb: Any, folder: str) -> Any:
    """The package's ``LanguageBindVideo`` built by its constructor and given the checkpoint's tensors.

    Not ``from_pretrained``: on transformers 5 it builds the model on the meta device and then RE-INITIALISES
    the text tower's token and position embeddings (transformers' ``CLIPTextEmbeddings`` inside the package's
    model: its non-persistent ``position_ids`` buffer counts as missing, so the whole module is initialised
    after the weights were loaded), which silently gives random text embeddings. transformers 4, which the
    package was written for, built the model for real and loaded every tensor; this does the same."""
    config = lb.LanguageBindVideoConfig.from_pretrained(folder)
    model = lb.LanguageBindVideo(config)
    missing, unexpected = model.load_state_dict(checkpoint_state(folder), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match LanguageBindVideo (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    repair_position_ids(model)
    return model.eval()


def repair_position_ids(model: Any) -> int:
    """Refill every embedding's ``position_ids`` buffer with ``arange`` (a checkpoint saved with a stale or
    garbage buffer, e.g. by transformers 5's meta-device ``from_pretrained``, would index out of range).
    Returns the number of buffers fixed."""
    import torch

    fixed = 0
    for module in model.modules():
        ids = getattr(module, "position_ids", None)
        emb = getattr(module, "position_embedding", None)
        if isinstance(ids, torch.Tensor) and emb is not None and hasattr(emb, "num_embeddings"):
            want = torch.arange(ids.shape[-1], device=ids.device).expand(ids.shape)
            if not torch.equal(ids, want):
                ids.copy_(want)
                fixed += 1
    return fixed


def make_processor(config: Any, tokenizer: Any) -> Any:
    """``LanguageBindVideoProcessor(config, tokenizer)``. On transformers 5 its ``ProcessorMixin.__init__``
    refuses the package's call (it now wants the tokenizer as an argument of its own); the processor's
    ``__init__`` only sets four attributes from the package's own functions, so they are set the same way."""
    lb = import_languagebind()
    try:
        return lb.LanguageBindVideoProcessor(config, tokenizer)
    except ValueError:
        from languagebind.video import processing_video as pv

        proc = pv.LanguageBindVideoProcessor.__new__(pv.LanguageBindVideoProcessor)
        proc.config, proc.tokenizer = config, tokenizer
        proc.transform = pv.get_video_transform(config)
        proc.image_processor = pv.load_and_transform_video
        return proc


@EMBEDDERS.register("languagebind")
class LanguageBindEmbedder(PieceTextEmbedder):
    """LanguageBind-Video: texts through its tokenizer, videos through its own processor on the files.

    ``dtype``: ``auto`` = fp32, as the original ran it; an explicit dtype casts the weights and the pixels.
    """

    name = "languagebind"
    video_input = "files"
    video_frames = 8  # vision_config.num_frames of LanguageBind_Video (read from the model once loaded)
    _LOADED = ("_model", "_processor")
    _cuts_at_override = True  # the processor's tokenizer is given context_length

    def __init__(
        self,
        model_path: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | None = "auto",
        batch_size: int = 4,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        random_flip: bool = False,
        protocol: str = "lovr",
    ) -> None:
        import_languagebind()
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.random_flip = bool(random_flip) or protocol == "original"

    def model_id(self) -> str:
        return model_ref(self.model_path, self.revision) + (" (random flip)" if self.random_flip else "")

    def load(self) -> Any:
        if self._model is None:
            device, dtype = device_and_dtype(self.device, self.dtype, auto="float32")
            model, tokenizer = self.shared((self.model_path, self.revision, device, str(dtype)),
                                           lambda: self._load_uncached(device, dtype))
            processor = make_processor(model.config, tokenizer)  # per embedder: its transform is edited below
            if not self.random_flip:
                from torchvision.transforms import Compose

                processor.transform = Compose([t for t in processor.transform.transforms
                                               if "RandomHorizontalFlip" not in type(t).__name__])
            self._model, self._processor = model, processor
            self.video_frames = int(model.config.vision_config.num_frames)
        return self._model

    def _load_uncached(self, device: str, dtype: Any) -> tuple[Any, Any]:
        lb = import_languagebind()
        folder = model_folder(self.model_path, self.revision)
        model = load_model(lb, folder).to(device=device, dtype=dtype).eval()
        return model, lb.LanguageBindVideoTokenizer.from_pretrained(folder)

    @property
    def max_text_tokens(self) -> int | None:
        return text_limit(self._limit, TEXT_LIMIT, self.model_id())

    # ---- text ---------------------------------------------------------------------------------------------
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """The processor's tokenizer: ``max_text_tokens`` tokens, padding max_length, truncated."""
        import torch

        model = self.load()
        device = next(model.parameters()).device

        def encode(batch: list[str]) -> Any:
            enc = self._processor(text=batch, context_length=self.max_text_tokens, return_tensors="pt")
            with torch.inference_mode():
                return model.get_text_features(input_ids=enc["input_ids"].to(device),
                                               attention_mask=enc["attention_mask"].to(device))

        return encode_batches(texts, self.batch_size, encode, lambda: self.dim)

    def _text_pieces(self, text: str) -> list[str]:
        self.load()
        return hf_pieces(self._processor.tokenizer, int(self.max_text_tokens) - 2)(text)

    # ---- video --------------------------------------------------------------------------------------------
    def _flip_seed(self, key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")

    def _transform(self, video: Any, key: str) -> Any:
        """The processor's own transform on a (C, T, H, W) uint8 tensor (seeded when the flip is kept)."""
        import torch

        if not self.random_flip:
            return self._processor.transform(video)
        # torchvision's video flip draws from Python's random, newer ones from torch: both are seeded per item and
        # restored after; one lock, so two threads never interleave their seeds (or their flips)
        with _FLIP_LOCK:
            state = random.getstate()
            try:
                with torch.random.fork_rng(devices=[]):
                    random.seed(self._flip_seed(key))
                    torch.manual_seed(self._flip_seed(key))
                    return self._processor.transform(video)
            finally:
                random.setstate(state)

    def _pixels_of_group(self, group: Sequence[Any]) -> Any:
        import decord
        import torch

        segs = segments_of(group)
        key = "|".join(f"{p}:{a}:{n}" for p, a, n in segs)
        if len(segs) == 1 and segs[0][1] == 0 and segs[0][2] is None and not self.random_flip:
            # one whole file: the package's processor itself, exactly as the original called it
            with decord_bridge_kept():
                return self._processor(images=[segs[0][0]], return_tensors="pt")["pixel_values"][0]
        readers = [decord.VideoReader(p, ctx=decord.cpu(0)) for p, _, _ in segs]
        counts = [len(r) - a if n is None else min(n, len(r) - a) for r, (_, a, n) in zip(readers, segs)]
        total = sum(counts)
        if total <= 0:
            raise ValueError("no frames in " + key)
        wanted = np.linspace(0, total - 1, self.video_frames, dtype=int)  # the processor's decord rule
        starts = np.cumsum([0, *counts[:-1]])
        frames = []
        for g in wanted:
            c = int(np.searchsorted(starts, g, side="right") - 1)
            with decord_bridge_kept():
                decord.bridge.set_bridge("native")
                frames.append(readers[c].get_batch([int(g - starts[c] + segs[c][1])]).asnumpy()[0])
        video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)  # (T, H, W, C) -> (C, T, H, W)
        return self._transform(video, key)

    def _encode_pixels(self, pixels: list[Any]) -> np.ndarray:
        import torch

        model = self.load()
        param = next(model.parameters())

        def encode(batch: list[Any]) -> Any:
            with torch.inference_mode():
                return model.get_image_features(pixel_values=torch.stack(batch).to(param.device, dtype=param.dtype))

        return encode_batches(pixels, self.batch_size, encode, lambda: self.dim)

    def embed_video_files(self, groups: Sequence[Sequence[Any]]) -> np.ndarray:
        self.load()
        return self._encode_pixels([self._pixels_of_group(g) for g in groups])

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """Decoded frames (RGB, [n, H, W, 3]) -> one vector: ``video_frames`` of them at the processor's
        ``linspace`` rule, through its transform (for callers that decode themselves)."""
        import torch

        self.load()
        frames = check_frames(frames, allow_empty=False)
        idx = np.linspace(0, len(frames) - 1, self.video_frames, dtype=int)
        video = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(3, 0, 1, 2)
        key = hashlib.sha256(frames[idx].tobytes()).hexdigest()
        return self._encode_pixels([self._transform(video, key)])[0]

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Each frame as a still video (the frame repeated ``video_frames`` times): LanguageBind-Video has no
        image tower of its own."""
        frames = check_frames(frames)
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.embed_video(np.repeat(f[None], self.video_frames, 0)) for f in frames])


register_family(Family(
    name="languagebind", backend="languagebind", patterns=(r"languagebind",), model_types=("LanguageBindVideo",),
    priority=2, video_input=FILES, video_frames=8, original_bgr=False,
    text="77 tokens, padding=max_length, truncated (the processor's tokenizer)",
    pooling="video tower on 8 frames (np.linspace over the file), no pooling of frame features",
    precision="fp32", extra="languagebind",
    install="pip install --no-deps languagebind==0.1.0 pytorchvideo==0.1.5",  # it declares transformers<5
    hub_ids=("LanguageBind/LanguageBind_Video", "LanguageBind/LanguageBind_Video_FT"),
    notes="its own processor on each clip FILE; a full video = its clip files concatenated (the original used "
          "an unreleased merged file); the processor's RandomHorizontalFlipVideo(p=0.5) is off by default, "
          "kept (seeded per item) under --protocol original; --interval unused",
))
