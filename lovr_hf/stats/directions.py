"""The LoVR protocol on top of :mod:`lovr_hf.stats.retrieval`: the directions of the original ``calc_pass``.

Kept apart from the rank maths so that the maths stays a small, dependency-free module; import the
directions from here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lovr_hf.stats.retrieval import defined_ks, parse_ks, rank_metrics, rank_queries

logger = logging.getLogger(__name__)


DIRECTIONS = (
    "text_to_clip",
    "clip_to_text",
    "text_to_video",
    "video_to_text",
    "theme_to_clip",
    "clip_to_theme",
)


def select_clip_queries(clip_ids: Iterable[str], n: int | str = 1000, seed: int = 0) -> list[str]:
    """The clip-caption query set: ``n`` distinct ids (or ``"all"``), deterministic for a seed.

    The ids are ordered by ``sha256(f"{seed}:{id}")`` and the first ``n`` taken (returned sorted): the same
    on every platform and numpy version, independent of input order, and stable when clips are added
    (a new id only displaces others if it hashes before them). ``n >= len(ids)`` returns all ids.
    """
    ids = sorted(set(clip_ids))
    if n == "all":
        return ids
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 or 'all', got {n}")
    if n >= len(ids):
        if n > len(ids):
            logger.warning(
                "asked for %d clip queries but only %d clips have captions: using all", n, len(ids)
            )
        return ids
    key = {i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids}
    return sorted(sorted(ids, key=key.__getitem__)[:n])


@dataclass(frozen=True)
class EmbeddingSet:
    """Embeddings of one kind: ``ids[i]`` is the clip/video id of row ``vectors[i]`` (ids may repeat)."""

    ids: list[str]
    vectors: np.ndarray

    @classmethod
    def of(cls, value: EmbeddingSet | tuple[Sequence[str], Any]) -> EmbeddingSet:
        if isinstance(value, EmbeddingSet):
            return value
        ids, vectors = value
        vec = np.asarray(vectors, dtype=np.float32)
        if vec.ndim != 2 or vec.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids for embeddings of shape {vec.shape}")
        return cls(list(ids), vec)

    def rows_for(self, wanted: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Rows whose id is in ``wanted`` (in ``wanted`` order, all rows of each id)."""
        where = self._where()
        idx = [i for w in wanted for i in where.get(w, [])]
        return [self.ids[i] for i in idx], self.vectors[idx]

    def _where(self) -> dict[str, list[int]]:
        where: dict[str, list[int]] = {}
        for i, x in enumerate(self.ids):
            where.setdefault(x, []).append(i)
        return where


@dataclass
class DirectionRanking:
    """One direction's queries in order, their gold ids, ranks and (with ``top``) the best candidates.

    A query whose own embedding is absent (``present`` False) or whose gold has no embedding is ranked
    ``num_ranked + 1`` (a miss at every k the original reports) with an empty top list.
    """

    direction: str
    query_ids: list[str]
    gold: list[list[str]]
    ranks: np.ndarray
    gold_scores: np.ndarray
    top_ids: list[list[str]]
    top_scores: list[list[float]]
    num_candidates: int
    present: np.ndarray  # bool per query: its own embedding exists

    def rows(self, ks: Sequence[int]) -> list[dict[str, Any]]:
        return _direction_rows(self.direction, self.ranks, self.num_candidates, tuple(ks))


def _ranked_count(ids: Sequence[str], rank_kwargs: Mapping[str, Any]) -> int:
    return len(set(ids)) if rank_kwargs.get("rank_by") == "id" else len(ids)


def rank_direction(
    direction: str,
    queries: EmbeddingSet,
    query_ids: Sequence[str],
    gold: Sequence[str | Sequence[str]],
    candidates: EmbeddingSet,
    *,
    top: int = 0,
    **rank_kwargs: Any,
) -> DirectionRanking:
    """Rank every query of ``query_ids`` (in that order; all embedding rows of each id, or one absent entry
    when it has none) against ``candidates``; ``gold[i]`` = gold id(s) of ``query_ids[i]``."""
    rank_kwargs = {"missing": "last", **rank_kwargs}
    if len(gold) != len(query_ids):
        raise ValueError(f"{len(gold)} gold entries for {len(query_ids)} query ids")
    where = queries._where()
    qid, golds, rows, present = [], [], [], []
    for i, g in zip(query_ids, gold):
        g_list = [g] if isinstance(g, str) else list(g)
        for r in where.get(i, [None]):  # type: ignore[list-item]
            qid.append(i)
            golds.append(g_list)
            rows.append(-1 if r is None else r)
            present.append(r is not None)
    pres = np.asarray(present, dtype=bool)
    n = len(qid)
    n_ranked = _ranked_count(candidates.ids, rank_kwargs)
    ranks = np.full(n, n_ranked + 1, dtype=np.int64)
    gold_scores = np.full(n, -np.inf, dtype=np.float32)
    top_ids: list[list[str]] = [[] for _ in range(n)]
    top_scores: list[list[float]] = [[] for _ in range(n)]
    idx = np.flatnonzero(pres)
    if idx.size:
        vec = queries.vectors[np.asarray(rows, dtype=np.int64)[idx]]
        sub_gold = [golds[i][0] if len(golds[i]) == 1 else golds[i] for i in idx]
        res = rank_queries(vec, sub_gold, candidates.vectors, candidates.ids, top=top, **rank_kwargs)
        ranks[idx] = res.ranks
        gold_scores[idx] = res.gold_scores
        if top:
            for j, ids, sc in zip(idx.tolist(), res.top_ids(), res.top_scores.tolist()):
                top_ids[j] = ids
                top_scores[j] = sc[: len(ids)]
    n_absent = n - int(idx.size)
    if n_absent:
        logger.warning("%s: %d queries have no embedding of their own: counted as misses", direction, n_absent)
    return DirectionRanking(direction, qid, golds, ranks, gold_scores, top_ids, top_scores, len(candidates.ids),
                            pres)


def _direction_rows(
    direction: str, ranks: np.ndarray, n_candidates: int, ks: tuple[int, ...]
) -> list[dict[str, Any]]:
    if ranks.size == 0:
        logger.warning("%s: no queries, skipped", direction)
        return []
    metrics = rank_metrics(ranks, defined_ks(ks, n_candidates))
    rows = []
    for name, value in metrics.items():
        if name.startswith("pass@"):
            metric, k = "pass@k", int(name[5:])
        else:
            metric, k = name, 0
        rows.append(
            {
                "direction": direction,
                "metric": metric,
                "k": k,
                "value": value,
                "num_queries": int(ranks.size),
                "num_candidates": int(n_candidates),
            }
        )
    return rows


def rank_directions(
    embeddings: Mapping[str, EmbeddingSet | tuple[Sequence[str], Any]],
    *,
    clip_queries: int | str | Sequence[str] = 1000,
    seed: int = 0,
    directions: Iterable[str] | None = None,
    top: int = 0,
    **rank_kwargs: Any,
) -> list[DirectionRanking]:
    """:func:`evaluate_directions` as per-query rankings (one :class:`DirectionRanking` per direction)."""
    sets = {kind: EmbeddingSet.of(v) for kind, v in embeddings.items()}
    wanted = tuple(directions) if directions is not None else DIRECTIONS
    unknown = set(wanted) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown directions {sorted(unknown)}; known: {DIRECTIONS}")
    out: list[DirectionRanking] = []

    def pair(to_visual: str, to_text: str, text: EmbeddingSet, visual: EmbeddingSet, text_ids: list[str]) -> None:
        """Both directions between one text set and one visual set (each only when asked for).

        Text->visual: every text row is a query, gold = its own id. Visual->text: one query per id that has
        a caption (the original divides by the caption count), gold = that id's caption(s)."""
        if to_visual in wanted:
            ids = list(dict.fromkeys(text.ids))
            out.append(rank_direction(to_visual, text, ids, ids, visual, top=top, **rank_kwargs))
        if to_text in wanted:
            out.append(rank_direction(to_text, visual, text_ids, text_ids, text, top=top, **rank_kwargs))

    if any(d in wanted for d in ("text_to_clip", "clip_to_text")) and "clip_caption" in sets and "clip" in sets:
        captions = sets["clip_caption"]
        if isinstance(clip_queries, (int, str)):
            selected = select_clip_queries(captions.ids, clip_queries, seed)
        else:
            selected = sorted(set(clip_queries))
        pair("text_to_clip", "clip_to_text", EmbeddingSet(*captions.rows_for(selected)), sets["clip"], selected)
    for to_visual, to_text, text_kind, visual_kind in (("text_to_video", "video_to_text", "video_caption", "video"),
                                                        ("theme_to_clip", "clip_to_theme", "theme_caption", "clip")):
        if text_kind in sets and visual_kind in sets:
            text = sets[text_kind]
            pair(to_visual, to_text, text, sets[visual_kind], list(dict.fromkeys(text.ids)))
    return out


def evaluate_directions(
    embeddings: Mapping[str, EmbeddingSet | tuple[Sequence[str], Any]],
    *,
    clip_queries: int | str | Sequence[str] = 1000,
    seed: int = 0,
    ks: str | int | Iterable[int] | None = None,
    directions: Iterable[str] | None = None,
    **rank_kwargs: Any,
) -> list[dict[str, Any]]:
    """Every retrieval direction of the original ``calc_pass`` as result rows.

    ``embeddings`` maps a kind (``clip_caption``, ``video_caption``, ``theme_caption``, ``clip``,
    ``video``, the ``kind`` column of the embeddings table) to ``(ids, [n, d] vectors)`` where the id of a
    caption is the clip/video it describes (theme captions: the clip id, as in the original). Directions:

    - ``text_to_clip``: the selected clip captions (``clip_queries``: a count drawn with
      :func:`select_clip_queries` and ``seed``, ``"all"``, or explicit ids) vs **all** clips. The
      official release ships exactly its 1,000 query captions, so ``"all"`` (or those ids) reproduces
      the published query set;
    - ``clip_to_text``: the selected clips vs the selected captions only;
    - ``text_to_video`` / ``video_to_text``: all video captions vs all videos, and back;
    - ``theme_to_clip`` / ``clip_to_theme``: theme captions vs all clips; clips with a theme vs the themes
      (only when ``theme_caption`` is given).

    As in the original, a query whose gold item (or, for visual->text, whose own visual embedding) is
    missing stays in the denominator as a miss (rank = candidates + 1). Visual->text queries are the ids
    that have a caption (the original divides by the caption count), one per distinct id: for
    ``clip_to_theme`` the original divides by the number of theme *rows*, which differs only when a clip
    has several theme captions (there it could never reach 1.0). ``rank_kwargs`` go to
    :func:`gold_ranks`. Rows: ``direction, metric ("pass@k" | "median_rank" | "mean_rank"), k (0 for the
    rank metrics), value, num_queries, num_candidates``.
    """
    ks = parse_ks(ks)
    rows: list[dict[str, Any]] = []
    for ranking in rank_directions(embeddings, clip_queries=clip_queries, seed=seed, directions=directions,
                                   **rank_kwargs):
        rows.extend(ranking.rows(ks))
    return rows
