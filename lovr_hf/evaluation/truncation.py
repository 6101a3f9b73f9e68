"""How much of each caption a model's text limit cuts: the truncation rate, per caption kind.

Why: LoVR's full-video captions run to thousands of words and CLIP reads 77 tokens, so under the original
``--text-mode truncate`` a text->video score mostly measures the first sentence. The rate makes that visible
per model. Definitions (one model, one caption kind, the captions that were embedded):

- ``truncation_rate`` = sum over captions of max(0, content tokens - room) / sum of content tokens, where
  *room* is the model's text limit minus its special tokens (CLIP: 77 - 2 = 75): the share of caption
  tokens past the limit (cut under ``truncate``; ``chunk-mean`` embeds them in further chunks);
- ``truncated_captions`` = share of captions with more content tokens than the room.

Counting needs the model's tokenizer but never its weights: a transformers model (Hub id in the local
cache, or a folder) loads ``AutoTokenizer`` and reads its limit as the adapter does (the smaller of the
text config's ``max_position_embeddings`` and the tokenizer's ``model_max_length``, or ``--max-text-tokens``);
the dummy embedder counts words against its ``max_text_tokens``. Other backends (open_clip, jina, plug-ins)
are not counted here: their rows are absent and the log says so (see docs/statistics.md for the
embedding-time alternative).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lovr_hf.evaluation.models import EmbedConfig, resolve_backend
from lovr_hf.model_labels import model_label

logger = logging.getLogger(__name__)

#: texts -> (content tokens per text, room); room None = no limit
Counter = Callable[[Sequence[str]], tuple[np.ndarray, int | None]]
_WORD = re.compile(r"[a-z0-9]+")  # the dummy embedder's word rule (lovr_hf.backends.standins.testing)


def _dummy_counter(limit: int | None) -> Counter:
    def count(texts: Sequence[str]) -> tuple[np.ndarray, int | None]:
        return np.array([len(_WORD.findall(str(t).lower())) for t in texts], dtype=np.int64), limit

    return count


def _transformers_counter(config: EmbedConfig) -> Counter | None:
    from transformers import AutoConfig, AutoTokenizer

    local = Path(config.model).expanduser().exists()
    kw: dict[str, Any] = {"revision": config.revision, "trust_remote_code": config.trust_remote_code,
                          "local_files_only": local}
    try:
        tok = AutoTokenizer.from_pretrained(config.model, **kw)
    except Exception as exc:  # not cached / not a tokenizer folder: the rate stays unknown, said so
        logger.warning("truncation rate of %s unknown: cannot load its tokenizer (%s: %s)", model_label(config.model),
                       type(exc).__name__, exc)
        return None
    tok = getattr(tok, "tokenizer", tok)
    limit = config.max_text_tokens
    if not limit:
        limits = []
        try:
            mcfg = AutoConfig.from_pretrained(config.model, **kw)
            n_pos = getattr(getattr(mcfg, "text_config", mcfg), "max_position_embeddings", None)
            if isinstance(n_pos, int) and n_pos > 0:
                limits.append(n_pos)
        except Exception as exc:
            logger.info("%s: no model config for the text limit (%s)", model_label(config.model), exc)
        tok_max = getattr(tok, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        limit = min(limits) if limits else None
    specials = len(tok("a photo").input_ids) - len(tok("a photo", add_special_tokens=False).input_ids)
    room = max(1, int(limit) - specials) if limit else None

    def count(texts: Sequence[str]) -> tuple[np.ndarray, int | None]:
        if not texts:
            return np.zeros(0, dtype=np.int64), room
        ids = tok([str(t) for t in texts], add_special_tokens=False, verbose=False).input_ids
        return np.array([len(x) for x in ids], dtype=np.int64), room

    return count


def token_counter(config: EmbedConfig) -> Counter | None:
    """A token counter for ``config``'s model, or None when it cannot count without loading the model."""
    backend = resolve_backend(config.model, config.backend)
    if backend == "dummy":
        return _dummy_counter(config.backend_options.get("max_text_tokens", config.max_text_tokens))
    if backend == "transformers":
        return _transformers_counter(config)
    logger.info("truncation rate: backend %s cannot count tokens without loading the model; not reported",
                backend)
    return None


def truncation_rows(counter: Counter, texts_by_kind: dict[str, Sequence[str]],
                    room: int | None = None) -> list[dict[str, Any]]:
    """``truncation_rate`` and ``truncated_captions`` rows (direction = caption kind) per kind; ``room``
    overrides the counter's limit (``lovr eval --verify`` recounts with the recorded one)."""
    rows = []
    for kind, texts in texts_by_kind.items():
        if not texts:
            continue
        n, limit = counter(texts)
        fit = limit if room is None else room
        over = np.zeros_like(n) if fit is None else np.maximum(0, n - fit)
        total = int(n.sum())
        for metric, value in (("truncation_rate", float(over.sum() / total) if total else 0.0),
                              ("truncated_captions", float((over > 0).mean()))):
            rows.append({"direction": kind, "metric": metric, "k": 0, "value": value,
                         "num_queries": len(texts), "text_limit": fit})
    return rows
