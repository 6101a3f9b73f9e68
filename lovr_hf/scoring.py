"""Scoring: stored embeddings -> result rows of every LoVR direction (the original ``calc_pass``).

``EvalConfig`` (embedding settings plus the scoring protocol) lives here because scoring is what the
protocol decides; :mod:`lovr_hf.evaluation` runs embedding then scoring, :mod:`lovr_hf.results` renders.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import __version__, schema
from lovr_hf.embed import TEXT_KINDS
from lovr_hf.models import EmbedConfig, model_slug
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.retrieval import EmbeddingSet, evaluate_directions, parse_ks

logger = logging.getLogger(__name__)

_MAIN_DIRECTIONS = ("text_to_clip", "clip_to_text", "text_to_video", "video_to_text")
_THEME_DIRECTIONS = ("theme_to_clip", "clip_to_theme")


@dataclasses.dataclass
class EvalConfig(EmbedConfig):
    """Embedding settings plus the scoring protocol (the protocol is not part of any fingerprint)."""

    model_name: str | None = None  # label in results (default: the model string); also names the slug
    clip_queries: str = "1000"  # text->clip query captions: a count drawn with --seed, or "all"
    seed: int = 0
    topk: str | None = None  # "1,5,10"; None = 1..20 (original default)
    exclude_needs_review: bool = False  # leave ``needs_review`` captions out of the query sets (default: in, flagged)

    def label(self) -> str:
        return self.model_name or self.model

    def slug(self) -> str:
        return model_slug(self.label())


@dataclasses.dataclass
class KindRows:
    """The ``ok`` embedding rows of one kind."""

    ids: list[str]
    video_ids: list[str]
    vectors: np.ndarray


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        raise ValueError(f"embeddings of different widths: {sorted(set(lengths.tolist()))}")
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), int(lengths[0]))


def load_embeddings(repo: BenchmarkRepo, slug: str) -> tuple[dict[str, KindRows], dict[str, Any]]:
    """Embedding rows per kind (status ok only) and the settings they were made with."""
    config = schema.embeddings_config(slug)
    if not repo.has(config):
        raise FileNotFoundError(
            f"{repo.root} has no {config!r}: embed first (lovr eval --encode_text / --encode_video)"
        )
    t = repo.read_table(config)
    bad = t.filter(pc.not_equal(t[schema.STATUS], schema.OK))
    if bad.num_rows:
        counts: dict[str, int] = {}
        for kind in bad.column("kind").to_pylist():
            counts[kind] = counts.get(kind, 0) + 1
        logger.warning("%s: rows not ok (counted as misses): %s", config, counts)
    t = t.filter(pc.equal(t[schema.STATUS], schema.OK))
    out: dict[str, KindRows] = {}
    for kind in sorted(set(t.column("kind").to_pylist())):
        k = t.filter(pc.equal(t["kind"], kind))
        out[kind] = KindRows(k.column("item_id").to_pylist(), k.column(schema.VIDEO_ID).to_pylist(),
                             _vectors(k.column("embedding")))

    def uniq(kinds: Sequence[str], col: str) -> Any:
        vals = t.filter(pc.is_in(t["kind"], value_set=pa.array(list(kinds)))).column(col).to_pylist()
        vals = sorted({v for v in vals if v is not None}, key=str)
        if len(vals) > 1:
            logger.warning("%s: mixed %s values %s", config, col, vals)
        return ",".join(map(str, vals)) if col == "text_mode" else (vals[0] if vals else None)

    settings = {"text_mode": uniq(list(TEXT_KINDS), "text_mode"),
                "interval": uniq(["clip", "video"], "interval"),
                "uniform_frames": uniq(["clip", "video"], "uniform_frames")}
    return out, settings


def _theme_sets(sets: dict[str, KindRows]) -> dict[str, EmbeddingSet] | None:
    """Theme captions vs clips. Clip-level themes: gold = their clip. Video-level themes (what ``lovr merge``
    writes): gold = every clip of their video (clips are relabelled by video id, so a hit is any clip of the
    video in the top k; clip->theme asks each clip for its video's theme)."""
    theme, clips = sets.get("theme_caption"), sets.get("clip")
    if theme is None or clips is None or not theme.ids:
        return None
    video_level = np.array([i == v for i, v in zip(theme.ids, theme.video_ids)])
    if video_level.all():
        return {"theme_caption": EmbeddingSet(list(theme.video_ids), theme.vectors),
                "clip": EmbeddingSet(list(clips.video_ids), clips.vectors)}
    if video_level.any():
        logger.warning("theme captions: %d video-level themes left out (mixed with clip-level themes)",
                       int(video_level.sum()))
    keep = ~video_level
    return {"theme_caption": EmbeddingSet([i for i, k in zip(theme.ids, keep) if k], theme.vectors[keep]),
            "clip": EmbeddingSet(list(clips.ids), clips.vectors)}


def calc_pass(repo: BenchmarkRepo, config: EvalConfig) -> list[dict[str, Any]]:
    """Result rows of every direction the stored embeddings allow (the original ``calc_pass``)."""
    sets, settings = load_embeddings(repo, config.slug())
    ks = parse_ks(config.topk)
    cq: int | str = "all" if str(config.clip_queries).lower() == "all" else int(config.clip_queries)
    main = {k: EmbeddingSet(v.ids, v.vectors) for k, v in sets.items() if k != "theme_caption"}
    rows = evaluate_directions(main, clip_queries=cq, seed=config.seed, ks=ks, directions=_MAIN_DIRECTIONS)
    theme = _theme_sets(sets)
    if theme is not None:
        rows += evaluate_directions(theme, ks=ks, directions=_THEME_DIRECTIONS)
    extra = {"model": config.label(), "protocol": config.protocol, "slice": "all", "text_mode": settings["text_mode"], "interval": settings["interval"],
             "uniform_frames": settings["uniform_frames"], "query_seed": config.seed,
             "lovr_hf_version": __version__}
    return [{**extra, **r} for r in rows]


