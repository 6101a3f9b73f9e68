"""Which embedder a model string means, with which settings: the model side of ``lovr eval``.

``EmbedConfig`` holds what an embedding depends on (model, revision, dtype, text handling, frame sampling)
plus runtime knobs; the functions below turn a model string into a backend class, a folder-safe slug, the
original frame interval, and the identity part of an embedding stage's fingerprint. Kept apart from the
stages (:mod:`lovr_hf.evaluation.embed`, :mod:`lovr_hf.evaluation.embed_video`) so that adding a model family never touches the
resumable embedding engine.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, ClassVar

from lovr_hf.backends.base import EMBEDDERS, Embedder
from lovr_hf.backends.embedders.common import PROTOCOLS
from lovr_hf.backends.embedders.families import (
    ASSUMED_INTERVAL,
    DEFAULT_FAMILY,
    Family,
    families,
    family_or_default,
)
from lovr_hf.evaluation.protocols import wrap_channel_swap
from lovr_hf.ids import strict_slug
from lovr_hf.model_labels import PLUGIN, model_label
from lovr_hf.redact import is_secret_key
from lovr_hf.video.prefetch import DEFAULT_PREFETCH_BYTES

ORIGINAL_INTERVAL = ASSUMED_INTERVAL  # the original launchers' --interval for every family but CLIP
CLIP_INTERVAL = 10  # the original CLIP run (run_clip.sh --encode_video --interval 10)


@dataclasses.dataclass
class EmbedConfig:
    """What an embedding depends on (fingerprinted per stage) plus runtime knobs (``RUNTIME``, not)."""

    model: str = ""  # Hub id, local folder, open_clip spec, or module:Class
    backend: str = "auto"  # see `lovr eval --help`: auto picks the family's adapter
    revision: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    text_mode: str = "truncate"  # truncate (original) | chunk-mean
    max_text_tokens: int | None = None  # override the model's text limit
    interval: int | None = None  # None: the family's (CLIP 10, others 30: docs/families.md)
    num_frames: int | None = None  # N uniform frames per clip and per video instead of --interval
    #: lovr (default) | original: what the original per-family scripts did, differences and all (BGR frames of
    #: frame-based families, their frame interval, precision and text handling; docs/evaluation.md)
    protocol: str = "lovr"
    #: a row of the family table (lovr_hf.backends.embedders.families) by name; None: found from the model string
    family: str | None = None
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # runtime only
    batch_size: int = 64  # texts / frames per forward pass
    device: str = "auto"
    decode_workers: int | None = None  # None: sized to the machine (lovr_hf.video.prefetch.auto_workers)
    decode_backend: str = "auto"
    frames_per_read: int = 32  # frames per hand-over from a decode thread to the encoder
    prefetch_reads: int = 4  # videos decoded ahead of the encoder
    prefetch_bytes: int = DEFAULT_PREFETCH_BYTES  # decoded frames held ahead of the encoder, at most
    text_rows_per_commit: int = 512
    videos_per_commit: int = 1

    RUNTIME: ClassVar[tuple[str, ...]] = (
        "batch_size", "device", "decode_workers", "decode_backend", "frames_per_read", "prefetch_reads", "prefetch_bytes",
        "text_rows_per_commit", "videos_per_commit",
    )


# ---------------------------------------------------------------------------------------------------------
# model resolution
# ---------------------------------------------------------------------------------------------------------


#: embedders that are no model and name their backend by themselves (no Hub id is ever called this)
STAND_INS = ("dummy", "describer")


def _named_class(model: str) -> str | None:
    """The backend a model string names by itself: ``module:Class``, or one of the offline stand-ins that are
    no model (``dummy`` for tests, ``describer`` for the demo)."""
    if PLUGIN.match(model):
        return model
    if model.lower() in STAND_INS:
        return model.lower()
    return None


def resolve_family(config: EmbedConfig) -> Family:
    """The family row of ``config``: ``config.family`` when given, else found from the model string
    (:func:`lovr_hf.backends.embedders.families.family_for`); :data:`~lovr_hf.backends.embedders.families.DEFAULT_FAMILY` when none matches."""
    if config.family is None and _named_class(config.model):
        return DEFAULT_FAMILY  # a plug-in class or the dummy: no family row, the template's behaviour
    fam = family_or_default(config.model, config.family)
    backend = config.backend or "auto"
    if config.family is None and backend != "auto" and fam.backend != backend:
        # an explicit adapter that has a family row of its own (``--backend mteb``, ``--backend open_clip``):
        # a model no row names follows that row (its frame input and protocol), not the template's
        by_name = {f.name: f for f in families()}
        if backend in by_name:
            return by_name[backend]
    return fam


def resolve_backend(model: str, backend: str | None = "auto", family: str | None = None) -> str:
    """The embedder a model string means. An explicit ``backend`` wins; ``module:Class`` given as the model
    -> that class; ``dummy``; otherwise the adapter of the model's family (docs/families.md: jina-clip ->
    ``jina``, ``hf-hub:``/``open_clip:``/``local-dir:`` specs and folders holding ``open_clip_config.json``
    -> ``open_clip``, the families adapters register -> theirs); ``transformers`` when no family matches."""
    if backend and backend != "auto":
        return backend
    named = _named_class(model)
    if named:
        return named
    return family_or_default(model, family).backend


def _backend_of(config: EmbedConfig) -> str:
    return resolve_backend(config.model, config.backend, config.family)








def model_slug(model: str) -> str:
    """A folder-safe, stable name for a model (``[A-Za-z0-9_-]`` only; never escapes a folder).

    Hub ids keep their name (``openai/clip-vit-base-patch32`` -> ``openai__clip-vit-base-patch32``);
    local folders become :func:`model_label`'s ``<folder name>-<content hash>`` (the absolute path of a
    temporary folder never reaches a config name); anything else unsafe is slugged with a hash suffix
    (:func:`lovr_hf.ids.strict_slug`).
    """
    text = model.strip()
    if not text:
        raise ValueError("empty model name")
    name = model_label(text)
    if name == text:
        name = text.replace("/", "__").replace(":", "__")
    return strict_slug(name)


def protocol_slug(slug: str, protocol: str) -> str:
    """The embeddings slug of a protocol: ``slug`` under ``lovr``, ``<slug>--original`` under ``original``,
    so both protocols' embeddings of one model can live side by side in one repo."""
    return slug if protocol == "lovr" else f"{slug}--{protocol}"


def default_interval(model: str, backend: str | None = None, protocol: str = "lovr",
                     family: str | None = None) -> int:
    """The family's frame interval (docs/families.md): 10 for CLIP, 30 for the others.

    Decided by the family table (local folders by ``model_type``, narrowed by name), never by a name
    prefix alone: a local MetaCLIP folder and ``facebook/metaclip-...`` get the same interval. ``backend``
    is accepted for compatibility and not needed.
    """
    cfg = EmbedConfig(model=model, backend=backend or "auto", protocol=protocol, family=family)
    return resolve_family(cfg).interval_for(protocol)


def resolved_interval(config: EmbedConfig) -> int | None:
    """The interval actually used (None when ``num_frames`` uniform sampling is on)."""
    if config.num_frames:
        return None
    if config.interval is not None:
        if config.interval < 1:
            raise ValueError(f"interval must be >= 1, got {config.interval}")
        return int(config.interval)
    return resolve_family(config).interval_for(config.protocol)


# ---------------------------------------------------------------------------------------------------------
# protocols
# ---------------------------------------------------------------------------------------------------------


def check_protocol(config: EmbedConfig) -> None:
    """Refuse settings the protocol excludes: ``original`` means the original's computation, so it takes
    no option the original scripts did not have (``--text-mode chunk-mean``, ``--num-frames`` for a
    frame-sampling family). ``--interval`` stays allowed: the original scripts took it as a flag."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {config.protocol!r}")
    if config.protocol != "original":
        return
    if config.text_mode != "truncate":
        raise ValueError("--protocol original truncates captions at the model's text limit, as the original "
                         f"scripts did: --text-mode {config.text_mode} is a lovr-protocol option")
    fam = resolve_family(config)
    if config.num_frames and fam.video_input == "frames":
        raise ValueError(f"--protocol original samples every --interval frames (family {fam.name}): "
                         "--num-frames is a lovr-protocol option")


def effective_dtype(config: EmbedConfig) -> str:
    """The dtype the embedder loads: ``--dtype`` as given, except ``auto`` under ``original`` on a GPU, which
    loads the family's original precision where the table records one (CLIP fp16, SigLIP/MetaCLIP bf16).

    The original scripts ran on CUDA; on a CPU ``auto`` stays fp32 (what OpenAI's ``clip.load`` does there).
    """
    if config.protocol == "original" and config.dtype in ("auto", None):
        original = resolve_family(config).original_dtype
        if original:
            from lovr_hf.backends.devices import resolve_device

            if resolve_device(config.device).startswith("cuda"):
                return original
    return config.dtype


def swaps_channels(config: EmbedConfig) -> bool:
    """Whether the embedder of ``config`` receives R/B-swapped frames (``original`` on a BGR family)."""
    return resolve_family(config).swaps_channels(config.protocol)


def protocol_payload(config: EmbedConfig) -> dict[str, Any] | None:
    """What the protocol changes in an embedding (None under ``lovr``): part of every embedding fingerprint.

    Always present under ``original``, even where nothing but the protocol label differs, because the
    embedding rows record the protocol they were made under.
    """
    if config.protocol == "lovr":
        return None
    fam = resolve_family(config)
    try:
        cls: Any = EMBEDDERS.get(_backend_of(config))
    except Exception:  # unknown or broken: check_embedder reports it; the fingerprint stays computable
        cls = None
    return {
        "name": config.protocol, "family": fam.name, "bgr_frames": swaps_channels(config),
        "dtype_on_cuda": fam.original_dtype if config.dtype in ("auto", None) else config.dtype,
        "adapter_protocol": bool(cls is not None and "protocol" in _accepted(cls, {"protocol": None})),
        # bumped by an adapter whose --protocol original output changed: older embeddings are made anew
        "adapter_revision": cls.original_revision if cls is not None else None,
    }


# ---------------------------------------------------------------------------------------------------------
# building embedders
# ---------------------------------------------------------------------------------------------------------


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
    """The embedder class for ``config``, refusing early: unknown backend, missing extra, a model that
    runs remote code (class attribute ``requires_remote_code``) without ``trust_remote_code``, or a setting
    the protocol excludes (:func:`check_protocol`)."""
    check_protocol(config)
    backend = _backend_of(config)
    if backend == "open_clip":
        import importlib.util

        if importlib.util.find_spec("open_clip") is None:
            raise ImportError("the open_clip backend needs open_clip_torch: pip install 'lovr_hf[openclip]'")
    cls = EMBEDDERS.get(backend)
    if cls.requires_remote_code and not config.trust_remote_code:
        raise ValueError(f"{config.model} runs code from its Hub repo: pass --trust-remote-code "
                         "if you trust it")
    return cls


def make_embedder(config: EmbedConfig) -> Embedder:
    """The embedder for ``config`` (standard options filtered to what its class accepts).

    Standard options: ``model_path, device, dtype, revision, trust_remote_code, batch_size, text_mode,
    max_text_tokens, protocol`` (an adapter whose original text handling differs declares ``protocol``).
    Under ``--protocol original`` the embedder of a family whose original fed BGR frames is wrapped so it
    receives R/B-swapped frames (:class:`lovr_hf.evaluation.protocols.ChannelSwapEmbedder`).
    """
    backend = _backend_of(config)
    cls = check_embedder(config)
    opts: dict[str, Any] = {
        "model_path": config.model, "device": config.device, "dtype": effective_dtype(config),
        "revision": config.revision, "trust_remote_code": config.trust_remote_code,
        "batch_size": config.batch_size, "text_mode": config.text_mode,
        "max_text_tokens": config.max_text_tokens, "protocol": config.protocol,
        "family": resolve_family(config).name,  # an explicit --family reaches the adapters that take it
    }
    if backend == config.model or backend == "dummy":  # the model string names the class itself
        opts.pop("model_path")
    opts = _accepted(cls, opts)
    opts.update(config.backend_options)  # explicit options always go through
    embedder = cls(**opts)
    return wrap_channel_swap(embedder) if swaps_channels(config) else embedder


_EMBEDDERS_BUILT: dict[str, Embedder] = {}


def shared_embedder(config: EmbedConfig) -> Embedder:
    """One embedder per process and configuration: the text and video stages share it (a plug-in that
    loads weights in its constructor loads them once)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(EmbedConfig)}
    key = json.dumps(fields, sort_keys=True, default=str)
    if key not in _EMBEDDERS_BUILT:
        _EMBEDDERS_BUILT[key] = make_embedder(config)
    return _EMBEDDERS_BUILT[key]


def release_embedders() -> int:
    """Forget every embedder built in this process and the weights they loaded, so that a run scoring several
    models one after the other holds one in memory at a time; returns how many weight sets were released."""
    from lovr_hf.backends.model_cache import release_kinds

    _EMBEDDERS_BUILT.clear()
    return release_kinds("embedder")


def model_payload(config: EmbedConfig) -> dict[str, Any]:
    """The model identity part of a fingerprint (plus the protocol's effects under ``original``)."""
    payload = {
        "backend": _backend_of(config), "model": config.model,
        "revision": config.revision, "dtype": config.dtype,
        # the one redaction rule: a secret never enters a fingerprint, an option like ``keyframes`` does
        "backend_options": {k: v for k, v in config.backend_options.items() if not is_secret_key(k)},
    }
    proto = protocol_payload(config)
    if proto is not None:
        payload["protocol"] = proto
    if config.family is not None:
        payload["family"] = config.family
    return payload
