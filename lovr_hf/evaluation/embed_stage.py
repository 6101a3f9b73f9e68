"""The shared part of the embedding stages (:mod:`lovr_hf.evaluation.embed` for captions,
:mod:`lovr_hf.evaluation.embed_video` for clips and videos): the caption kinds and their status policy, the
embedder load, per-batch timings and the gather that replaces only a stage's own kinds in the shared
``embeddings-<slug>`` config. Below both stage modules, so neither imports the other.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from filelock import FileLock

from lovr_hf import schema
from lovr_hf.backends.base import Embedder
from lovr_hf.engine.stage import Stage
from lovr_hf.engine.workdir import log_removed
from lovr_hf.evaluation.models import EmbedConfig, model_payload, shared_embedder
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)

#: caption kind -> the config its rows come from
TEXT_KINDS: dict[str, str] = {
    "clip_caption": schema.CLIP_CAPTIONS,
    "video_caption": schema.VIDEO_CAPTIONS,
    "theme_caption": schema.THEME_CAPTIONS,
}
VISUAL_KINDS = ("clip", "video")
#: Status policy: caption rows whose text is embedded (and so scored), per kind. ``needs_review`` clip
#: captions are real text below the quality threshold: embedded, flagged (scoring may exclude them with
#: ``--exclude-needs-review``). A ``failed`` video caption had LLM joins fall back to the original text:
#: its text is complete, so it is embedded and flagged by ``failed_calls``. A failed clip or theme
#: caption has no text. Empty captions are never embedded.
EMBEDDED_STATUSES: dict[str, tuple[str, ...]] = {
    "clip_caption": (schema.OK, schema.NEEDS_REVIEW),
    "video_caption": (schema.OK, schema.NEEDS_REVIEW, schema.FAILED),
    "theme_caption": (schema.OK, schema.NEEDS_REVIEW),
}


def load_embedder(config: EmbedConfig) -> Embedder:
    """The shared embedder for ``config`` with its weights loaded (its ``load()``). A load that fails
    for a reason other than a bug raises :class:`~lovr_hf.failures.SetupError` naming the cause in one line
    (folder missing, not cached while offline, Hub unreachable, 401); a bug propagates with its traceback."""
    from lovr_hf.failures import start_backend

    return start_backend(lambda: shared_embedder(config), config.model)


class EmbedStage(Stage):
    """Shared parts: lazily built embedder, per-batch timings, and a gather that merges kinds.

    Several stages write one ``embeddings-<slug>`` config, so ``gather`` replaces only the kinds this stage
    produces (and only rows of units still in the input), under a lock.
    """

    kinds: tuple[str, ...] = ()
    version = "1"
    digest_column = "input_digest"  # scoring stored embeddings checks them against the current inputs
    incremental_gather = False  # several stages share the config: each rebuilds its kinds in full

    def __init__(self, config: EmbedConfig, slug: str) -> None:
        super().__init__(config)
        self.slug = slug
        self.outputs = (schema.embeddings_config(slug),)  # type: ignore[misc]
        self.status_config = self.outputs[0]  # type: ignore[misc]
        self._backend: Embedder | None = None
        self._stats: dict[str, float] = {}

    fingerprint_config_key = None  # the model's payload is the identity (lovr_hf.evaluation.models)

    def fingerprint_extra(self) -> dict[str, Any]:
        # the slug too: committed batch files are named after the output config
        return {"model": model_payload(self.config), "output": self.outputs[0]}

    def setup(self) -> None:
        """Build the embedder and load its weights once, before any row: a model that cannot load stops the
        command here (:class:`lovr_hf.failures.SetupError`, one line) instead of failing every row in turn."""
        t0 = time.perf_counter()
        self._backend = load_embedder(self.config)
        # the first batch's meta carries the load (a cached model costs ~0): it is never encode time
        self._stats = {"load_s": time.perf_counter() - t0}

    def _add(self, key: str, value: float) -> None:
        self._stats[key] = self._stats.get(key, 0.0) + float(value)

    def batch_meta(self) -> dict[str, Any]:
        meta = {"kinds": list(self.kinds), **self._stats}
        self._stats = {}
        return meta

    def model_id(self) -> str:
        """The ``model`` column of the rows: the backend's model, a local folder by its label
        (:func:`lovr_hf.model_labels.model_label`), never its absolute path (published tables must not carry it)."""
        assert self._backend is not None
        raw = self._backend.model_id()
        if getattr(self, "_label_of", (None, None))[0] != raw:  # hashing a folder once per stage, not per batch
            self._label_of = (raw, model_label(raw))
        return self._label_of[1]

    def write_outputs(self, repo: BenchmarkRepo, tables: dict[str, pa.Table], units: set[str],
                      olds: dict[str, pa.Table | None] | None = None) -> None:
        """Replace only this stage's kinds in the shared ``embeddings-<slug>`` config, under a lock."""
        config = self.outputs[0]
        mine = tables[config]
        repo.work_root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(repo.work_root / "embeddings.lock")):
            before = repo.config_files().get(config)
            if before is not None:
                old = repo.read_table(config)
                is_mine = pc.is_in(old["kind"], value_set=pa.array(list(self.kinds)))
                log_removed(self.name, config, old.filter(is_mine), mine, self.input_key, units)
                mine = pa.concat_tables([old.filter(pc.invert(is_mine)), mine])
            repo.write(config, mine)
