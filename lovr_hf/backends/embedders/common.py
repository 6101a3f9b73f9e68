"""What every embedder adapter does the same way, written once.

Why this module: one adapter per model family of the LoVR paper (plus the open_clip, jina and MTEB bridges)
grew the same steps side by side: checking the text mode, L2 normalisation, chunk-mean, the batched encoding
loop, cutting a caption into model-sized pieces, one load per process through :mod:`model_cache`, device and
dtype resolution, the remote-code refusal, pickling without weights. Ten copies drifted apart (an unknown
text mode was refused by some adapters and silently ran as chunk-mean in others; an explicit
``max_text_tokens`` cut captions in two adapters and was ignored by the rest), so a fix in one copy missed the
others. Everything here is family-neutral; each family's own rules (GME's prompt, X-CLIP's frame count,
VideoCLIP-XL's demo thinning, LanguageBind's processor) stay in its adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import Embedder
from lovr_hf.backends.model_cache import load_once
from lovr_hf.stats.vectors import l2_normalize

TEXT_MODES = ("truncate", "chunk-mean")
PROTOCOLS = ("lovr", "original")


# ---- checks ------------------------------------------------------------------------------------------------

def check_text_mode(mode: str | None) -> str:
    """``mode`` if it is one of :data:`TEXT_MODES`; anything else is refused (never run as another mode)."""
    if mode not in TEXT_MODES:
        raise ValueError(f"text_mode must be one of {TEXT_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def check_frames(frames: Any, *, allow_empty: bool = True) -> np.ndarray:
    """``frames`` as an array ``[n, H, W, 3]`` (RGB, as the visual stage decodes them), else a clear error."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or (not allow_empty and not len(frames)):
        want = "[n, H, W, 3]" if allow_empty else "[n>0, H, W, 3]"
        raise ValueError(f"expected frames {want}, got shape {frames.shape}")
    return frames


def refuse_remote_code(trust_remote_code: bool, model_path: str,
                       runs: str = "runs code from its Hub repo") -> None:
    """Refuse, before anything is downloaded or imported, a model whose own code would run without the user's
    ``--trust-remote-code``."""
    if not trust_remote_code:
        raise ValueError(f"{model_path} {runs}: pass --trust-remote-code if you trust it")


def text_limit(override: int | None, native: int | None, model: str, *, fixed: bool = True) -> int | None:
    """The text limit an adapter applies: an explicit ``max_text_tokens`` (``override``), else the model's own.

    ``fixed``: the model cannot take more tokens than ``native`` (learned position table), so an override
    above it is refused rather than silently cut by the model in every chunk."""
    if not override:
        return native
    if fixed and native and int(override) > int(native):
        raise ValueError(f"max_text_tokens={override} exceeds the text limit of {model} ({native} tokens)")
    return int(override)


# ---- numbers -----------------------------------------------------------------------------------------------

def to_numpy(x: Any) -> np.ndarray:
    """A model output (tensor in any dtype on any device, or array-like) as a float32 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def encode_batches(items: Sequence[Any], batch_size: int, encode: Callable[[list[Any]], Any],
                   dim: Callable[[], int]) -> np.ndarray:
    """``encode`` on consecutive batches of at most ``batch_size`` items -> [n, d] float32, L2-normalised;
    ``[0, dim()]`` for no items (``dim`` is only called then: it may need a forward pass)."""
    size = max(1, int(batch_size))
    out = [to_numpy(encode(list(items[i : i + size]))) for i in range(0, len(items), size)]
    return l2_normalize(np.concatenate(out)) if out else np.zeros((0, dim()), np.float32)


def chunk_mean(
    texts: Sequence[str], split: Callable[[str], list[Any]], encode: Callable[[list[Any]], np.ndarray]
) -> np.ndarray:
    """``chunk-mean`` for any adapter: ``split`` cuts one text into model-sized chunks, ``encode`` embeds a
    list of chunks; each text gets the re-normalised mean of its chunks' embeddings. All chunks of all
    texts go through ``encode`` in one call so the adapter can batch them."""
    pieces: list[Any] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        chunks = split(text)
        pieces.extend(chunks)
        owner.extend([i] * len(chunks))
    emb = encode(pieces)
    sums = np.zeros((len(texts), emb.shape[1]), np.float32)
    np.add.at(sums, np.asarray(owner, dtype=np.int64), emb)
    return l2_normalize(sums)


# ---- text pieces -------------------------------------------------------------------------------------------

def token_pieces(ids: Sequence[int], room: int, decode: Callable[[list[int]], str]) -> list[str]:
    """The content token ids of one text cut every ``room`` tokens, each piece decoded back to text (one
    empty piece for an empty text). The adapter's encoder adds the special tokens / prompt to each piece."""
    room = max(1, int(room))
    ids = list(ids)
    return [decode(ids[i : i + room]) for i in range(0, max(1, len(ids)), room)] or [""]


def hf_pieces(tokenizer: Any, room: int) -> Callable[[str], list[str]]:
    """:func:`token_pieces` with a transformers tokenizer (content ids without special tokens)."""
    def split(text: str) -> list[str]:
        return token_pieces(tokenizer(text, add_special_tokens=False).input_ids, room, tokenizer.decode)

    return split


# ---- loading -----------------------------------------------------------------------------------------------

def device_and_dtype(device: str | None, dtype: Any, auto: str | None = None) -> tuple[str, Any]:
    """(device, torch dtype): ``"auto"`` device = cuda:LOCAL_RANK or cpu; ``"auto"`` dtype = ``auto`` when the
    family has a fixed precision (e.g. ``"float32"`` for models run in fp32 by their original code), else
    bf16 on GPU and fp32 on CPU (:func:`lovr_hf.backends.devices.resolve_dtype`)."""
    from lovr_hf.backends.devices import resolve_device, resolve_dtype

    dev = resolve_device(device)
    if dtype in (None, "", "auto") and auto is not None:
        dtype = auto
    return dev, resolve_dtype(dtype, dev)


def model_ref(model_path: str, revision: str | None) -> str:
    """``model@revision`` (the id of the loaded weights), or the model alone."""
    return f"{model_path}@{revision}" if revision else model_path


class LazyEmbedder(Embedder):
    """Shared mechanics of the adapters: weights loaded lazily, once per process (:func:`load_once`: the text
    and video stages, retries and threads get the same objects, and two threads asking at once load once),
    never pickled into workers; the embedding width measured once.

    Subclasses list their loaded attributes in ``_LOADED`` (dropped when pickled) and implement
    ``_encode_texts(list[str]) -> [n, d]`` (used to measure :attr:`dim`)."""

    _LOADED: tuple[str, ...] = ("_model",)

    def _settings(self, model_path: str, *, revision: str | None = None, device: str = "auto",
                  dtype: str | None = "auto", batch_size: int = 1, text_mode: str = "truncate",
                  max_text_tokens: int | None = None) -> None:
        """The standard options every adapter takes (``lovr eval``'s flags), checked, and nothing loaded yet."""
        self.model_path, self.revision, self.device, self.dtype = model_path, revision, device, dtype
        self.batch_size = max(1, int(batch_size))
        self.text_mode = check_text_mode(text_mode)
        self._limit = max_text_tokens
        for name in self._LOADED:
            setattr(self, name, None)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._LOADED:
            if name in state:
                state[name] = None
        return state

    def shared(self, key: tuple[Any, ...], loader: Callable[[], Any]) -> Any:
        """``loader()`` once per process for ``key`` (which must hold all that changes what it loads)."""
        cls = type(self)
        return load_once(("embedder", f"{cls.__module__}.{cls.__qualname__}", *key), loader)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Embedding width, measured once with one short text through the model."""
        if getattr(self, "_dim", None) is None:
            self._dim = int(self._encode_texts(["a"]).shape[1])
        return self._dim


class PieceTextEmbedder(LazyEmbedder):
    """:meth:`embed_text` for adapters that encode caption strings.

    ``truncate`` (the original behaviour): the model's own cut at its limit; under an explicit
    ``max_text_tokens`` below it, the first piece of :meth:`_text_pieces` (what ``chunk-mean`` embeds first),
    for adapters whose model cannot be told a shorter limit (``_cuts_at_override`` False). ``chunk-mean``: the
    re-normalised mean of every piece. Subclasses implement ``_encode_texts`` and ``_text_pieces`` and set
    ``text_mode`` and ``_limit`` (the explicit ``max_text_tokens`` or None)."""

    text_mode: str = "truncate"
    _limit: int | None = None
    #: the model's own encoder is given the explicit limit (so truncation needs no help here)
    _cuts_at_override: bool = False

    def _text_pieces(self, text: str) -> list[str]:
        raise NotImplementedError

    def embed_text(self, texts: Sequence[str], text_mode: str | None = None) -> np.ndarray:
        """[n, d] float32, L2-normalised. ``chunk-mean``: mean of the piece embeddings, re-normalised."""
        mode = check_text_mode(text_mode or self.text_mode)
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if mode == "chunk-mean":
            return chunk_mean(texts, self._text_pieces, self._encode_texts)
        if self._limit and not self._cuts_at_override:
            texts = [self._text_pieces(t)[0] for t in texts]
        return self._encode_texts(texts)


class RemoteCodeEmbedder(PieceTextEmbedder):
    """Models whose encode API is their own code (jina-clip, MM-Embed): ``AutoModel`` / ``AutoTokenizer`` with
    the user's ``trust_remote_code`` (refused without it, here and again at load: never assumed by the
    loader), loaded once per process. Subclasses set ``trust_remote_code`` and the standard options."""

    requires_remote_code = True
    trust_remote_code: bool = False
    _LOADED = ("_model", "_tokenizer")

    def model_id(self) -> str:
        return model_ref(self.model_path, self.revision)

    def load(self) -> Any:
        if self._model is None:
            device, dtype = device_and_dtype(self.device, self.dtype)
            self._model = self.shared((self.model_path, self.revision, device, str(dtype)),
                                      lambda: self._load_uncached(device, dtype))
        return self._model

    def _load_uncached(self, device: str, dtype: Any) -> Any:
        from transformers import AutoModel

        refuse_remote_code(self.trust_remote_code, self.model_path)
        model = AutoModel.from_pretrained(self.model_path, revision=self.revision,
                                          trust_remote_code=self.trust_remote_code, dtype=dtype)
        return model.to(device).eval()

    def tokenizer(self) -> Any:
        """The model's ``AutoTokenizer`` (its code may define it too), for cutting captions into pieces."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            refuse_remote_code(self.trust_remote_code, self.model_path)
            self._tokenizer = self.shared(
                (self.model_path, self.revision, "tokenizer"),
                lambda: AutoTokenizer.from_pretrained(self.model_path, revision=self.revision,
                                                      trust_remote_code=self.trust_remote_code))
        return self._tokenizer
