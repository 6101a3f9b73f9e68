"""Retrieval metrics (pass@k, median / mean rank) for LoVR, vectorised and memory-bounded.

The original LoVR ``calc_pass`` builds the full ``queries x candidates`` similarity matrix, then for every k
runs ``torch.topk`` and a Python membership loop. Here every query gets the *rank* of its gold item once, and
pass@k for all k follows from ``rank <= k``: the same hits as the original's top-k membership test on the
same scores (see "Tie-breaking" for the one case where the original itself is not deterministic; a different BLAS,
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

Tie-breaking (the one rule; the metric module, rankings and ``lovr eval --verify`` all use it)
    ``ties="optimistic"`` (default) counts strictly higher scores only, so candidates tied with the gold rank
    behind it. ``torch.topk`` (the original) orders tied scores arbitrarily (on CPU not even by index), so at
    a tie straddling the k-th place the original may or may not count the hit; the optimistic rule always
    does, and ``ties="pessimistic"`` (count ``>=``) never does. The two bound the original; they differ only
    on exactly equal float32 scores (duplicate embeddings, e.g. identical captions or black clips).
    Top-N candidate lists (:func:`rank_queries` with ``top``, the ``rankings-<model>`` configs) order
    candidates by score descending; equal scores put the gold first (optimistic; last under pessimistic),
    then the lower candidate index (row order of the candidate embeddings, or for ``rank_by="id"`` the
    first-appearance order of the id). So whenever rank <= N the gold's 1-based position in the list is
    exactly its rank, and a list is a pure function of the scores.

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
    exactly tied scores (see Tie-breaking); top lists then list the gold rows with those same dot-product
    scores, so a listed gold always sits at its rank. Gold rows themselves are never counted, whatever the
    rounding. Top lists (``top > 0``) add one partial sort per block, in
    row pieces of <= 4 MiB, and a merge of at most ``top`` entries per query.

All maths is numpy float32 (like the original); no torch needed.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lovr_hf.stats.score_blocks import (
    BLOCK_ELEMENTS,
    GoldSpec,
    as_matrix,
    count_into,
    encode_ids,
    gold_id_lists,
    merge_top,
    segment_starts,
)
from lovr_hf.stats.vectors import l2_normalize

logger = logging.getLogger(__name__)

DEFAULT_KS: tuple[int, ...] = tuple(range(1, 21))  # original ``--topk`` default: 1..20
DEFAULT_CANDIDATE_CHUNK = 65_536

RankBy = Literal["row", "id"]
Ties = Literal["optimistic", "pessimistic"]
Missing = Literal["raise", "last"]


__all__ = [
    "DEFAULT_KS",
    "Ranking",
    "gold_ranks",
    "parse_ks",
    "pass_at_k",
    "rank_metrics",
    "rank_queries",
    "retrieval_metrics",
]


# ---------------------------------------------------------------------------------------------------------
# core: ranks
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranking:
    """Ranks plus the evidence behind them (see "Tie-breaking" in the module doc).

    ``top_index[i]`` lists query i's best ``top`` candidates as indices into ``labels`` (the candidate rows
    for ``rank_by="row"``, the distinct ids in first-appearance order for ``"id"``), best first, padded
    with -1; ``top_scores`` the matching float32 scores (NaN padding); ``gold_scores`` the best gold score
    per query (-inf when the query has no gold candidate).
    """

    ranks: np.ndarray
    gold_scores: np.ndarray
    top_index: np.ndarray
    top_scores: np.ndarray
    labels: list[Hashable]

    def top_ids(self) -> list[list[Hashable]]:
        labels = self.labels
        return [[labels[j] for j in row if j >= 0] for row in self.top_index.tolist()]


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
    return rank_queries(queries, gold, candidates, candidate_ids, chunk_size=chunk_size,
                        candidate_chunk_size=candidate_chunk_size, rank_by=rank_by, ties=ties, missing=missing,
                        normalize=normalize).ranks


_TOP_STRIDE = 8  # top-N pre-filter: the N-th best of every 8th column bounds the row's N-th best from below


def _block_top(table: np.ndarray, top: int, offset: int) -> tuple[np.ndarray, ...]:
    """Entries of ``table`` (gold entries already -inf) that may be among their row's ``top`` best: a superset
    (every entry >= the ``top``-th best of a strided subsample, itself <= the row's ``top``-th best), reduced
    to the exact lists, ties included, by :func:`~lovr_hf.stats.score_blocks.merge_top`. ~3x cheaper than a full partition."""
    n, w = table.shape
    qs, cs = [], []
    step = max(1, (1 << 20) // max(1, w))  # rows per piece: temporaries of <= 4 MiB
    for r0 in range(0, n, step):
        part = table[r0 : r0 + step]
        if w >= 2 * top * _TOP_STRIDE:
            sub = part[:, ::_TOP_STRIDE]
            tau = np.partition(sub, sub.shape[1] - top, axis=1)[:, sub.shape[1] - top]
            mask = part >= tau[:, None]
            mask &= part > -np.inf
        elif w > top:
            kth = np.partition(part, w - top, axis=1)[:, w - top]
            mask = part >= kth[:, None]
            mask &= part > -np.inf
        else:
            mask = part > -np.inf
        flat = np.flatnonzero(mask)
        qs.append(flat // w + r0)
        cs.append(flat % w)
    q = np.concatenate(qs)
    c = np.concatenate(cs)
    return q, table[q, c], np.zeros(q.size, dtype=bool), c.astype(np.int64) + offset


def rank_queries(
    queries: Any,
    gold: Sequence[GoldSpec] | np.ndarray,
    candidates: Any,
    candidate_ids: Sequence[Hashable] | np.ndarray,
    *,
    top: int = 0,
    chunk_size: int | None = None,
    candidate_chunk_size: int | None = None,
    rank_by: RankBy = "row",
    ties: Ties = "optimistic",
    missing: Missing = "raise",
    normalize: bool = False,
) -> Ranking:
    """:func:`gold_ranks` plus each query's gold score and, with ``top > 0``, its ``top`` best candidates.

    The top lists follow the tie-break rule of the module doc, so the gold's position in them is its rank
    whenever the rank is <= ``top``. Extra cost with ``top``: one partial sort per score block.
    """
    if rank_by not in ("row", "id"):
        raise ValueError(f"rank_by must be 'row' or 'id', got {rank_by!r}")
    if ties not in ("optimistic", "pessimistic"):
        raise ValueError(f"ties must be 'optimistic' or 'pessimistic', got {ties!r}")
    if missing not in ("raise", "last"):
        raise ValueError(f"missing must be 'raise' or 'last', got {missing!r}")
    top = int(top)
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    q = as_matrix(queries, "queries")
    c = as_matrix(candidates, "candidates")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"dimension mismatch: queries d={q.shape[1]}, candidates d={c.shape[1]}")
    if len(candidate_ids) != c.shape[0]:
        raise ValueError(f"{len(candidate_ids)} candidate ids for {c.shape[0]} candidate rows")
    gold_lists = gold_id_lists(gold)
    if len(gold_lists) != q.shape[0]:
        raise ValueError(f"{len(gold_lists)} gold entries for {q.shape[0]} queries")
    if normalize:
        q, c = l2_normalize(q, zero_rows="raise"), l2_normalize(c, zero_rows="raise")
    n_q, n_c = q.shape[0], c.shape[0]
    labels_in = candidate_ids.tolist() if isinstance(candidate_ids, np.ndarray) else list(candidate_ids)
    if n_q == 0:
        return Ranking(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32),
                       np.zeros((0, top), dtype=np.int64), np.zeros((0, top), dtype=np.float32), labels_in)
    if n_c == 0:
        raise ValueError("no candidates")

    codes, id_to_code = encode_ids(candidate_ids)
    n_ids = len(id_to_code)
    if n_ids == n_c:
        rank_by = "row"  # unique ids: both rules coincide, skip the per-id reduction
    labels = labels_in if rank_by == "row" else list(id_to_code)

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
        group_starts = segment_starts(codes)  # codes are 0..n_ids-1, so group j starts at group_starts[j]

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
    gold_scores = np.full(n_q, -np.inf, dtype=np.float32)
    top_index = np.full((n_q, top), -1, dtype=np.int64)
    top_scores = np.full((n_q, top), np.nan, dtype=np.float32)
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
        g = gold_scores[q0:q1]  # no gold: every finite score is higher -> ranked last
        seg = segment_starts(lrq)
        found: list[tuple[np.ndarray, ...]] = []
        if not single_block and lrq.size:
            s = np.einsum("ij,ij->i", qblk[lrq], c[lrr])
            g[lrq[seg]] = np.maximum.reduceat(s, seg)
            if top:  # listed gold entries carry the same dot-product scores as the rank (list position = rank)
                if rank_by == "id":
                    lrc = codes[lrr]
                    pair_seg = np.flatnonzero(np.r_[True, (lrq[1:] != lrq[:-1]) | (lrc[1:] != lrc[:-1])])
                    found.append((lrq[pair_seg], np.maximum.reduceat(s, pair_seg), np.ones(pair_seg.size, bool),
                                  lrc[pair_seg]))
                else:
                    found.append((lrq, s.astype(np.float32), np.ones(lrq.size, bool), lrr))
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
                gq, gcol, offset = lpq[sel], lpc[sel] - k0, int(k0)
            else:
                table = scores
                sel = (lrr >= c0) & (lrr < c1)
                gq, gcol, offset = lrq[sel], lrr[sel] - c0, c0
            if top and single_block:
                found.append((gq, table[gq, gcol].copy(), np.ones(gq.size, dtype=bool), gcol + offset))
            table[gq, gcol] = -np.inf  # gold rows (ids) never count against themselves
            mask = mask_buf[: table.size].reshape(table.shape)
            compare(table, g[:, None], out=mask)
            count_into(cnt, mask)
            if top:
                found.append(_block_top(table, top, offset))
                found = [merge_top(found, top, ties == "optimistic")]
        if top and found:
            tq, ts, _, ti, pos = found[0]
            top_index[q0 + tq, pos] = ti
            top_scores[q0 + tq, pos] = ts

    return Ranking(counts + 1, gold_scores, top_index, top_scores, labels)


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


def defined_ks(ks: Sequence[int], num_candidates: int) -> list[int]:
    """The k that have a value: k <= the number of candidates. Beyond it the original's ``torch.topk`` raises,
    and a query without an embedding (ranked ``candidates + 1``, a miss) would turn into a hit."""
    return [k for k in ks if k <= num_candidates]


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
