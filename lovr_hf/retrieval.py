"""Retrieval metrics (pass@k, median / mean rank) for LoVR, vectorised and memory-bounded.

The original LoVR ``calc_pass`` builds the full ``queries x candidates`` similarity matrix, then for every k
runs ``torch.topk`` and a Python membership loop. Here every query gets the *rank* of its gold item once, and
pass@k for all k follows from ``rank <= k``: the same hits as the original's top-k membership test on the
same scores (see "Ties" for the one case where the original itself is not deterministic; a different BLAS,
e.g. the original on GPU, may round scores that agree to ~1e-7 the other way, as two runs of the original
on different devices would).

Rank rule (``rank_by="row"``, the default and the original's semantics)
    Candidate rows carry ids that may repeat (several captions, frames or rows of one clip). The gold rows of
    a query are all rows whose id is one of the query's gold ids (one id, or a list for multi-positive
    queries). With ``g`` = the best gold-row score::

        rank = 1 + #{rows r whose id is not a gold id : score(r) > g}

    i.e. the rank of the best-scoring gold row among the rows of other ids. ``rank <= k`` is exactly "a gold
    row is in the top-k rows", the original's ``t_src in [src[j] for j in topk(sim, k)]`` test, so a
    multi-positive query is a hit when *any* gold id is in the top k (rank = min over the gold ids).
    ``rank_by="id"`` instead ranks ids: each id scores its best row, and the rank counts *distinct* other ids
    scoring strictly higher (max-pooling rows per id). Both rules agree when candidate ids are unique.

Ties
    ``ties="optimistic"`` (default) counts strictly higher scores only, so candidates tied with the gold rank
    behind it. ``torch.topk`` (the original) orders tied scores arbitrarily (on CPU not even by index), so at
    a tie straddling the k-th place the original may or may not count the hit; the optimistic rule always
    does, and ``ties="pessimistic"`` (count ``>=``) never does. The two bound the original; they differ only
    on exactly equal float32 scores (duplicate embeddings, e.g. identical captions or black clips).

Chunking rule (bounded memory)
    Scores are computed block by block into ONE reused float32 buffer (``np.matmul(..., out=buf)``) plus one
    bool buffer of the same shape. A block is ``query_chunk x candidate_chunk`` with
    ``candidate_chunk = min(C, candidate_chunk_size)`` (default 65,536 rows) and
    ``query_chunk = chunk_size`` or, by default, ``max(1, 2**25 // candidate_chunk)`` (capped at Q), so the
    buffers take at most ~160 MiB (32 Mi scores x 5 bytes) whatever Q and C are: 40,804 candidates give
    822-query blocks, 1M candidates give 512 x 65,536 blocks. Besides the inputs, only the id bookkeeping
    grows with C (an id -> code dict and a few int64 arrays, ~100 bytes per candidate row); measured peak
    working memory: ~170 MiB at 40,804 x 40,804, ~260 MiB for 1,000 queries x 1M candidates.
    ``rank_by="id"`` adds a per-id max buffer and, when rows of one id are not already contiguous and in
    first-appearance order, one reordered copy of the candidates.
    With one candidate block (C <= 65,536, e.g. all of LoVR) the gold score is read from the same matmul
    as the other scores. With several candidate blocks it is computed first by a float32 dot product of the
    query with its gold rows, which can differ from the matmul in the last bit; that matters only for
    exactly tied scores (see Ties). Gold rows themselves are never counted, whatever the rounding.

All maths is numpy float32 (like the original); no torch needed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = tuple(range(1, 21))  # original ``--topk`` default: 1..20
DEFAULT_CANDIDATE_CHUNK = 65_536
BLOCK_ELEMENTS = 1 << 25  # scores per block: 128 MiB float32 + 32 MiB bool
_LOOP_COUNT_MIN_WIDTH = 2048  # wider blocks: per-row 1-D count_nonzero is ~2x faster than axis=1

RankBy = Literal["row", "id"]
Ties = Literal["optimistic", "pessimistic"]
Missing = Literal["raise", "last"]

GoldSpec = Hashable | Sequence[Hashable]

__all__ = [
    "DEFAULT_KS",
    "DIRECTIONS",
    "EmbeddingSet",
    "evaluate_directions",
    "gold_ranks",
    "parse_ks",
    "pass_at_k",
    "rank_metrics",
    "retrieval_metrics",
    "select_clip_queries",
]


# ---------------------------------------------------------------------------------------------------------
# core: ranks
# ---------------------------------------------------------------------------------------------------------


def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] array, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr)
    # a NaN gold score would compare False against everything and rank 1: refuse instead
    # (checked in row blocks so the temporary stays small for a million candidates)
    step = max(1, BLOCK_ELEMENTS // max(1, arr.shape[1]))
    for i in range(0, arr.shape[0], step):
        if not np.isfinite(arr[i : i + step]).all():
            raise ValueError(f"{name} contains NaN or inf")
    return arr


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("cannot L2-normalise an all-zero embedding")
    return x / norms


def _gold_lists(gold: Sequence[GoldSpec] | np.ndarray) -> list[Hashable | list[Hashable]]:
    """Per query: one gold id (str/int/scalar) or a list of ids (list/tuple/array = multi-positive)."""
    if isinstance(gold, np.ndarray) and gold.ndim == 1:
        return gold.tolist()
    return [g if isinstance(g, (str, bytes)) or not isinstance(g, Iterable) else list(g) for g in gold]


def _encode_ids(candidate_ids: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, dict[Hashable, int]]:
    """Integer code per candidate row, codes in first-appearance order (numpy scalars hash like Python's)."""
    ids = candidate_ids.tolist() if isinstance(candidate_ids, np.ndarray) else candidate_ids
    id_to_code: dict[Hashable, int] = {}
    codes = np.fromiter(
        (id_to_code.setdefault(x, len(id_to_code)) for x in ids), dtype=np.int64, count=len(ids)
    )
    return codes, id_to_code


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted 1-D array."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _count_into(counts: np.ndarray, mask: np.ndarray) -> None:
    if mask.shape[1] >= _LOOP_COUNT_MIN_WIDTH:
        for i in range(mask.shape[0]):
            counts[i] += np.count_nonzero(mask[i])
    else:
        counts += np.count_nonzero(mask, axis=1)


def gold_ranks(
    queries: Any,
    gold: Sequence[GoldSpec] | np.ndarray,
    candidates: Any,
    candidate_ids: Sequence[Hashable] | np.ndarray,
    *,
    chunk_size: int | None = None,
    candidate_chunk_size: int | None = None,
    rank_by: RankBy = "row",
    ties: Ties = "optimistic",
    missing: Missing = "raise",
    normalize: bool = False,
) -> np.ndarray:
    """Rank (1 = best) of each query's best gold candidate, by cosine (dot) similarity.

    Args:
        queries: ``[Q, d]`` embeddings, L2-normalised (or pass ``normalize=True``).
        gold: per query one candidate id, or a list of ids (multi-positive: rank = best gold).
        candidates: ``[C, d]`` embeddings, L2-normalised.
        candidate_ids: ``C`` ids, may repeat across rows (see the module doc for the rank rule).
        chunk_size: queries per block (default: ``2**25 // candidate_chunk``, see the chunking rule).
        candidate_chunk_size: candidate rows per block (default 65,536; ``rank_by="id"`` keeps the rows of
            one id in one block, so a block may be wider when one id has more rows than that).
        rank_by: ``"row"`` (original semantics) or ``"id"`` (distinct ids, each scored by its best row).
        ties: ``"optimistic"`` (count strictly higher, default) or ``"pessimistic"`` (count higher or equal).
        missing: a query none of whose gold ids is among ``candidate_ids``: ``"raise"`` (default) or
            ``"last"`` = rank ``N + 1`` with N the number of rows (``"row"``) or ids (``"id"``), i.e. a miss
            for every k < N + 1 -- what the original does when a gold item has no features.
        normalize: L2-normalise both sides first (copies the inputs).

    Returns:
        int64 array of Q ranks.
    """
    if rank_by not in ("row", "id"):
        raise ValueError(f"rank_by must be 'row' or 'id', got {rank_by!r}")
    if ties not in ("optimistic", "pessimistic"):
        raise ValueError(f"ties must be 'optimistic' or 'pessimistic', got {ties!r}")
    if missing not in ("raise", "last"):
        raise ValueError(f"missing must be 'raise' or 'last', got {missing!r}")
    q = _as_matrix(queries, "queries")
    c = _as_matrix(candidates, "candidates")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"dimension mismatch: queries d={q.shape[1]}, candidates d={c.shape[1]}")
    if len(candidate_ids) != c.shape[0]:
        raise ValueError(f"{len(candidate_ids)} candidate ids for {c.shape[0]} candidate rows")
    gold_lists = _gold_lists(gold)
    if len(gold_lists) != q.shape[0]:
        raise ValueError(f"{len(gold_lists)} gold entries for {q.shape[0]} queries")
    if normalize:
        q, c = _normalize(q), _normalize(c)
    n_q, n_c = q.shape[0], c.shape[0]
    if n_q == 0:
        return np.zeros(0, dtype=np.int64)
    if n_c == 0:
        raise ValueError("no candidates")

    codes, id_to_code = _encode_ids(candidate_ids)
    n_ids = len(id_to_code)
    if n_ids == n_c:
        rank_by = "row"  # unique ids: both rules coincide, skip the per-id reduction

    # (query, gold code) pairs, sorted by query
    pq_list: list[int] = []
    pc_list: list[int] = []
    missing_queries = []
    for i, ids in enumerate(gold_lists):
        if not isinstance(ids, list):  # one gold id: the common case
            code = id_to_code.get(ids)
            if code is None:
                missing_queries.append(i)
            else:
                pq_list.append(i)
                pc_list.append(code)
            continue
        found = sorted({id_to_code[x] for x in ids if x in id_to_code})
        if not found:
            missing_queries.append(i)
        pq_list.extend([i] * len(found))
        pc_list.extend(found)
    if missing_queries:
        if missing == "raise":
            first = gold_lists[missing_queries[0]]
            raise ValueError(
                f"{len(missing_queries)} queries have no gold id among the candidate ids "
                f"(first: query {missing_queries[0]}, gold {first!r}); pass missing='last' to count them as misses"
            )
        logger.info("%d of %d queries have no gold candidate: ranked last", len(missing_queries), n_q)
    pq = np.asarray(pq_list, dtype=np.int64)
    pc = np.asarray(pc_list, dtype=np.int64)

    # candidate order: as given ("row"), or grouped by id ("id"; copies the candidates only when needed)
    group_starts = np.zeros(0, dtype=np.int64)
    if rank_by == "id":
        order = np.argsort(codes, kind="stable")
        if not np.array_equal(order, np.arange(n_c)):
            c = c[order]
            codes = codes[order]
        group_starts = _segment_starts(codes)  # codes are 0..n_ids-1, so group j starts at group_starts[j]

    # (query, gold row) pairs: every row of every gold id (rows in the possibly reordered candidate matrix)
    rows_sorted = np.argsort(codes, kind="stable")
    code_count = np.bincount(codes, minlength=n_ids)
    code_first = np.concatenate([[0], np.cumsum(code_count)[:-1]])
    n_rows_pair = code_count[pc]
    rq = np.repeat(pq, n_rows_pair)
    within = np.arange(rq.size) - np.repeat(np.cumsum(n_rows_pair) - n_rows_pair, n_rows_pair)
    rr = rows_sorted[np.repeat(code_first[pc], n_rows_pair) + within]

    # candidate blocks; "id" keeps an id's rows together
    cc = min(n_c, candidate_chunk_size or DEFAULT_CANDIDATE_CHUNK)
    if cc < 1:
        raise ValueError("candidate_chunk_size must be >= 1")
    bounds = [0]
    while bounds[-1] < n_c:
        end = min(bounds[-1] + cc, n_c)
        if rank_by == "id" and end < n_c:
            # extend to the next group boundary
            nxt = np.searchsorted(group_starts, end, side="left")
            end = int(group_starts[nxt]) if nxt < group_starts.size else n_c
        bounds.append(end)
    blocks = list(zip(bounds[:-1], bounds[1:], strict=True))
    width = max(b - a for a, b in blocks)
    qc = chunk_size or max(1, BLOCK_ELEMENTS // width)
    if qc < 1:
        raise ValueError("chunk_size must be >= 1")
    qc = min(qc, n_q)
    single_block = len(blocks) == 1

    score_buf = np.empty(qc * width, dtype=np.float32)
    mask_buf = np.empty(qc * width, dtype=bool)
    if rank_by == "id":
        group_widths = [
            int(np.searchsorted(group_starts, b) - np.searchsorted(group_starts, a)) for a, b in blocks
        ]
        group_buf = np.empty(qc * max(group_widths), dtype=np.float32)
    compare = np.greater if ties == "optimistic" else np.greater_equal
    counts = np.zeros(n_q, dtype=np.int64)
    # pair index ranges per query (pairs sorted by query)
    rq_bounds = np.searchsorted(rq, np.arange(0, n_q + qc, qc).clip(max=n_q))
    pq_bounds = np.searchsorted(pq, np.arange(0, n_q + qc, qc).clip(max=n_q))

    for bi, q0 in enumerate(range(0, n_q, qc)):
        q1 = min(q0 + qc, n_q)
        n = q1 - q0
        qblk = q[q0:q1]
        lrq = rq[rq_bounds[bi] : rq_bounds[bi + 1]] - q0
        lrr = rr[rq_bounds[bi] : rq_bounds[bi + 1]]
        lpq = pq[pq_bounds[bi] : pq_bounds[bi + 1]] - q0
        lpc = pc[pq_bounds[bi] : pq_bounds[bi + 1]]
        g = np.full(n, -np.inf, dtype=np.float32)  # no gold: every finite score is higher -> ranked last
        seg = _segment_starts(lrq)
        if not single_block and lrq.size:
            s = np.einsum("ij,ij->i", qblk[lrq], c[lrr])
            g[lrq[seg]] = np.maximum.reduceat(s, seg)
        cnt = counts[q0:q1]
        for c0, c1 in blocks:
            w = c1 - c0
            scores = score_buf[: n * w].reshape(n, w)
            np.matmul(qblk, c[c0:c1].T, out=scores)
            if single_block and lrq.size:
                g[lrq[seg]] = np.maximum.reduceat(scores[lrq, lrr], seg)
            if rank_by == "id":
                k0, k1 = np.searchsorted(group_starts, [c0, c1])
                table = group_buf[: n * (k1 - k0)].reshape(n, k1 - k0)
                np.maximum.reduceat(scores, group_starts[k0:k1] - c0, axis=1, out=table)
                sel = (lpc >= k0) & (lpc < k1)
                table[lpq[sel], lpc[sel] - k0] = -np.inf  # gold ids never count against themselves
            else:
                table = scores
                sel = (lrr >= c0) & (lrr < c1)
                table[lrq[sel], lrr[sel] - c0] = -np.inf  # gold rows never count against themselves
            mask = mask_buf[: table.size].reshape(table.shape)
            compare(table, g[:, None], out=mask)
            _count_into(cnt, mask)
    return counts + 1


# ---------------------------------------------------------------------------------------------------------
# aggregates
# ---------------------------------------------------------------------------------------------------------


def parse_ks(spec: str | int | Iterable[int] | None) -> tuple[int, ...]:
    """``"1,5,10"`` / ``5`` / ``[1, 5]`` / None (-> 1..20, the original default) -> sorted unique ks."""
    if spec is None:
        return DEFAULT_KS
    if isinstance(spec, str):
        items = [int(s) for s in spec.replace(" ", "").split(",") if s]
    elif isinstance(spec, (int, np.integer)):
        items = [int(spec)]
    else:
        items = [int(k) for k in spec]
    if not items or any(k < 1 for k in items):
        raise ValueError(f"k values must be positive integers, got {spec!r}")
    return tuple(sorted(set(items)))


def pass_at_k(
    ranks: np.ndarray | Sequence[int], ks: str | int | Iterable[int] | None = None
) -> dict[str, float]:
    """``{"pass@k": fraction of queries with rank <= k}`` (= Recall@k with one gold item)."""
    r = np.asarray(ranks)
    if r.size == 0:
        raise ValueError("no queries")
    return {f"pass@{k}": float(np.count_nonzero(r <= k) / r.size) for k in parse_ks(ks)}


def rank_metrics(
    ranks: np.ndarray | Sequence[int], ks: str | int | Iterable[int] | None = None
) -> dict[str, float]:
    """pass@k for every k, then ``median_rank`` and ``mean_rank``."""
    r = np.asarray(ranks)
    out = pass_at_k(r, ks)
    out["median_rank"] = float(np.median(r))
    out["mean_rank"] = float(np.mean(r))
    return out


def retrieval_metrics(
    queries: Any,
    gold: Sequence[GoldSpec] | np.ndarray,
    candidates: Any,
    candidate_ids: Sequence[Hashable] | np.ndarray,
    ks: str | int | Iterable[int] | None = (1, 5, 10),
    **rank_kwargs: Any,
) -> dict[str, float]:
    """``{"pass@1": ..., "pass@5": ..., "pass@10": ..., "median_rank": ..., "mean_rank": ...}``.

    ``rank_kwargs`` go to :func:`gold_ranks` (chunking, ``rank_by``, ``ties``, ``missing``, ``normalize``).
    """
    return rank_metrics(gold_ranks(queries, gold, candidates, candidate_ids, **rank_kwargs), ks)


# ---------------------------------------------------------------------------------------------------------
# protocol: the original calc_pass directions
# ---------------------------------------------------------------------------------------------------------

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
        where: dict[str, list[int]] = {}
        for i, x in enumerate(self.ids):
            where.setdefault(x, []).append(i)
        idx = [i for w in wanted for i in where.get(w, [])]
        return [self.ids[i] for i in idx], self.vectors[idx]


def _direction_rows(
    direction: str, ranks: np.ndarray, n_candidates: int, ks: tuple[int, ...]
) -> list[dict[str, Any]]:
    if ranks.size == 0:
        logger.warning("%s: no queries, skipped", direction)
        return []
    metrics = rank_metrics(ranks, ks)
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
    sets = {kind: EmbeddingSet.of(v) for kind, v in embeddings.items()}
    ks = parse_ks(ks)
    wanted = tuple(directions) if directions is not None else DIRECTIONS
    unknown = set(wanted) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown directions {sorted(unknown)}; known: {DIRECTIONS}")
    rank_kwargs = {"missing": "last", **rank_kwargs}

    def text_to_visual(text: EmbeddingSet, visual: EmbeddingSet) -> tuple[np.ndarray, int]:
        return gold_ranks(text.vectors, text.ids, visual.vectors, visual.ids, **rank_kwargs), len(visual.ids)

    def visual_to_text(
        visual: EmbeddingSet, text: EmbeddingSet, query_ids: Sequence[str]
    ) -> tuple[np.ndarray, int]:
        # one query per id that has a caption; its visual rows (usually one) are separate queries
        present = set(visual.ids)
        ids, vecs = visual.rows_for([i for i in query_ids if i in present])
        ranks = gold_ranks(vecs, ids, text.vectors, text.ids, **rank_kwargs)
        n_absent = sum(1 for i in query_ids if i not in present)
        if n_absent:
            logger.warning("%d query ids have no visual embedding: counted as misses", n_absent)
        n_ranked = len(set(text.ids)) if rank_kwargs.get("rank_by") == "id" else len(text.ids)
        return np.concatenate([ranks, np.full(n_absent, n_ranked + 1, dtype=np.int64)]), len(text.ids)

    rows: list[dict[str, Any]] = []

    def pair(to_visual: str, to_text: str, text: EmbeddingSet, visual: EmbeddingSet, text_ids: list[str]) -> None:
        """Both directions between one text set and one visual set (each only when asked for)."""
        if to_visual in wanted:
            rows.extend(_direction_rows(to_visual, *text_to_visual(text, visual), ks))
        if to_text in wanted:
            rows.extend(_direction_rows(to_text, *visual_to_text(visual, text, text_ids), ks))

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
    return rows
