"""Which embedder a model string means, with which settings: the model side of ``lovr eval``.

``EmbedConfig`` holds what an embedding depends on (model, revision, dtype, text handling, frame sampling)
plus runtime knobs; the functions below turn a model string into a backend class, a folder-safe slug, the
original frame interval, and the identity part of an embedding stage's fingerprint. Kept apart from the
stages (:mod:`lovr_hf.embed`, :mod:`lovr_hf.embed_video`) so that adding a model family never touches the
resumable embedding engine.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from lovr_hf.backends.base import EMBEDDERS, Embedder
from lovr_hf.ids import check_id, safe_id, short_hash

ORIGINAL_INTERVAL = 30  # original evaluation default
CLIP_INTERVAL = 10  # the original CLIP script
TEXT_MODES = ("truncate", "chunk-mean")
PROTOCOLS = ("lovr", "original")
_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module:Class (no '/', '-': never a Hub id)


@dataclasses.dataclass
class EmbedConfig:
    """What an embedding depends on (fingerprinted per stage) plus runtime knobs (``RUNTIME``, not)."""

    model: str = ""  # Hub id, local folder, open_clip spec, or module:Class
    backend: str = "auto"  # auto | transformers | dummy | open_clip | jina | module:Class
    revision: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    text_mode: str = "truncate"  # truncate (original) | chunk-mean
    max_text_tokens: int | None = None  # override the model's text limit
    interval: int | None = None  # None: 10 for CLIP models, 30 otherwise (original defaults)
    num_frames: int | None = None  # N uniform frames per clip and per video instead of --interval
    #: lovr (default) | original: what the original per-family scripts did, differences and all (BGR frames of
    #: frame-based families, their frame interval and text handling; docs/evaluation.md lists every difference)
    protocol: str = "lovr"
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # runtime only
    batch_size: int = 64  # texts / frames per forward pass
    device: str = "auto"
    decode_workers: int = 2
    decode_backend: str = "auto"
    frames_per_read: int = 32  # frames decoded (and held) at once per clip piece
    prefetch_reads: int = 4  # pieces decoded ahead of the encoder
    text_rows_per_commit: int = 512
    videos_per_commit: int = 1

    RUNTIME: ClassVar[tuple[str, ...]] = (
        "batch_size", "device", "decode_workers", "decode_backend", "frames_per_read", "prefetch_reads",
        "text_rows_per_commit", "videos_per_commit",
    )


# ---------------------------------------------------------------------------------------------------------
# model resolution
# ---------------------------------------------------------------------------------------------------------


OPEN_CLIP_CONFIG = "open_clip_config.json"  # marks a local open_clip model folder (the Hub layout)


def resolve_backend(model: str, backend: str | None = "auto") -> str:
    """``auto``: ``module:Class`` given as the model -> that class; ``dummy``; jina-clip -> ``jina``;
    ``hf-hub:``/``open_clip:``/``local-dir:`` specs and local folders holding ``open_clip_config.json`` ->
    ``open_clip``; anything else -> ``transformers``."""
    if backend and backend != "auto":
        return backend
    if _PLUGIN.match(model):
        return model
    low = model.lower()
    if low == "dummy":
        return "dummy"
    if "jina-clip" in low:
        return "jina"
    if low.startswith(("hf-hub:", "open_clip:", "local-dir:")):
        return "open_clip"
    if os.path.isfile(os.path.join(os.path.expanduser(model), OPEN_CLIP_CONFIG)):
        return "open_clip"
    return "transformers"


def model_slug(model: str) -> str:
    """A folder-safe, stable name for a model (``[A-Za-z0-9_-]`` only; never escapes a folder).

    Hub ids keep their name (``openai/clip-vit-base-patch32`` -> ``openai__clip-vit-base-patch32``);
    local folders become ``<folder name>-<hash of the absolute path>`` (two folders named ``clip`` differ);
    anything else unsafe is slugged with a hash suffix (:func:`lovr_hf.ids.safe_id`).
    """
    text = model.strip()
    if not text:
        raise ValueError("empty model name")
    path = Path(text).expanduser()
    if not _PLUGIN.match(text) and path.exists():
        resolved = path.resolve()
        name = f"{resolved.name or 'model'}-{short_hash(str(resolved))}"
    else:
        name = text.replace("/", "__").replace(":", "__")
    return check_id(safe_id(name))


def default_interval(model: str, backend: str) -> int:
    """The original's frame interval: 10 for CLIP (model_type ``clip`` or a name starting with ``clip``)."""
    if backend == "transformers":
        cfg = Path(model).expanduser() / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("model_type") == "clip":
                    return CLIP_INTERVAL
            except (OSError, ValueError):
                pass
    name = model.rstrip("/").split("/")[-1].split(":")[-1].lower()
    return CLIP_INTERVAL if name.startswith("clip") else ORIGINAL_INTERVAL


def resolved_interval(config: EmbedConfig) -> int | None:
    """The interval actually used (None when ``num_frames`` uniform sampling is on)."""
    if config.num_frames:
        return None
    if config.interval is not None:
        if config.interval < 1:
            raise ValueError(f"interval must be >= 1, got {config.interval}")
        return int(config.interval)
    return default_interval(config.model, resolve_backend(config.model, config.backend))


def _accepted(factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``factory`` takes (all of them when it has ``**kwargs``): plug-ins need not accept all."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    return {k: v for k, v in options.items() if k in params}


def check_embedder(config: EmbedConfig) -> type[Embedder]:
    """The embedder class for ``config``, refusing early: unknown backend, missing extra, or a model that
    runs remote code (class attribute ``requires_remote_code``) without ``trust_remote_code``."""
    backend = resolve_backend(config.model, config.backend)
    if backend == "open_clip":
        import importlib.util

        if importlib.util.find_spec("open_clip") is None:
            raise ImportError("the open_clip backend needs open_clip_torch: pip install 'lovr_hf[openclip]'")
    cls = EMBEDDERS.get(backend)
    if getattr(cls, "requires_remote_code", False) and not config.trust_remote_code:
        raise ValueError(f"{config.model} runs code from its Hub repo: pass --trust-remote-code "
                         "if you trust it")
    return cls


def make_embedder(config: EmbedConfig) -> Embedder:
    """The embedder for ``config`` (standard options filtered to what its class accepts)."""
    backend = resolve_backend(config.model, config.backend)
    cls = check_embedder(config)
    opts: dict[str, Any] = {
        "model_path": config.model, "device": config.device, "dtype": config.dtype, "revision": config.revision,
        "trust_remote_code": config.trust_remote_code, "batch_size": config.batch_size,
        "text_mode": config.text_mode, "max_text_tokens": config.max_text_tokens,
    }
    if backend == config.model or backend == "dummy":  # the model string names the class itself
        opts.pop("model_path")
    opts = _accepted(cls, opts)
    opts.update(config.backend_options)  # explicit options always go through
    return cls(**opts)


_EMBEDDERS_BUILT: dict[str, Embedder] = {}


def shared_embedder(config: EmbedConfig) -> Embedder:
    """One embedder per process and configuration: the text and video stages share it (a plug-in that
    loads weights in its constructor loads them once)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(EmbedConfig)}
    key = json.dumps(fields, sort_keys=True, default=str)
    if key not in _EMBEDDERS_BUILT:
        _EMBEDDERS_BUILT[key] = make_embedder(config)
    return _EMBEDDERS_BUILT[key]


def model_payload(config: EmbedConfig) -> dict[str, Any]:
    """The model identity part of a fingerprint."""
    return {
        "backend": resolve_backend(config.model, config.backend), "model": config.model,
        "revision": config.revision, "dtype": config.dtype,
        "backend_options": {k: v for k, v in config.backend_options.items() if "key" not in k.lower()},
    }

