"""Score-block helpers of :mod:`lovr_hf.stats.retrieval`: input checks, id coding, per-row counting and the
merge of partial top lists in tie-break order. Apart from the ranking loop so that each part stays readable;
the rules they implement (tie-breaking, chunking) are documented once, in the retrieval module's docstring.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

BLOCK_ELEMENTS = 1 << 25  # scores per block: 128 MiB float32 + 32 MiB bool
_LOOP_COUNT_MIN_WIDTH = 2048  # wider blocks: per-row 1-D count_nonzero is ~2x faster than axis=1

GoldSpec = Hashable | Sequence[Hashable]


def as_matrix(x: Any, name: str) -> np.ndarray:
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


def gold_id_lists(gold: Sequence[GoldSpec] | np.ndarray) -> list[Hashable | list[Hashable]]:
    """Per query: one gold id (str/int/scalar) or a list of ids (list/tuple/array = multi-positive)."""
    if isinstance(gold, np.ndarray) and gold.ndim == 1:
        return gold.tolist()
    return [g if isinstance(g, (str, bytes)) or not isinstance(g, Iterable) else list(g) for g in gold]


def encode_ids(candidate_ids: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, dict[Hashable, int]]:
    """Integer code per candidate row, codes in first-appearance order (numpy scalars hash like Python's)."""
    ids = candidate_ids.tolist() if isinstance(candidate_ids, np.ndarray) else candidate_ids
    id_to_code: dict[Hashable, int] = {}
    codes = np.fromiter(
        (id_to_code.setdefault(x, len(id_to_code)) for x in ids), dtype=np.int64, count=len(ids)
    )
    return codes, id_to_code


def segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted 1-D array."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def count_into(counts: np.ndarray, mask: np.ndarray) -> None:
    if mask.shape[1] >= _LOOP_COUNT_MIN_WIDTH:
        for i in range(mask.shape[0]):
            counts[i] += np.count_nonzero(mask[i])
    else:
        counts += np.count_nonzero(mask, axis=1)


def _desc_key(scores: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is descending score order (-0.0 and 0.0 equal)."""
    bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)
    asc = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))
    return (np.uint32(0xFFFFFFFF) - asc).astype(np.uint64)


def merge_top(parts: list[tuple[np.ndarray, ...]], top: int, gold_first: bool) -> tuple[np.ndarray, ...]:
    """Keep each query's ``top`` best entries of (query, score, is_gold, index), in tie-break order; returns
    them with their 0-based list positions.

    ``parts`` must list entries in ascending candidate index within equal (query, score, gold) -- earlier
    blocks first, each block's entries in column order -- so one stable sort on a (query, score, gold) key
    also orders ties by index (gold entries are sorted by index first)."""
    tq, ts, tg, ti = (np.concatenate(x) for x in zip(*(p[:4] for p in parts), strict=True))
    gold = np.flatnonzero(tg)
    if gold.size > 1:  # gold rows of one query may come out of index order: put them in order
        order = gold[np.lexsort((ti[gold], tq[gold]))]
        tq[gold], ts[gold], ti[gold] = tq[order], ts[order], ti[order]
    gbit = (~tg if gold_first else tg).astype(np.uint64)
    key = (tq.astype(np.uint64) << np.uint64(33)) | (_desc_key(ts) << np.uint64(1)) | gbit
    order = np.argsort(key, kind="stable")
    tq, ts, tg, ti = tq[order], ts[order], tg[order], ti[order]
    pos = _positions(tq)
    keep = pos < top
    return tq[keep], ts[keep], tg[keep], ti[keep], pos[keep]


def _positions(sorted_keys: np.ndarray) -> np.ndarray:
    """0-based position of each entry within its run of equal keys (``sorted_keys`` sorted)."""
    starts = segment_starts(sorted_keys)
    return np.arange(sorted_keys.size) - np.repeat(starts, np.diff(np.r_[starts, sorted_keys.size]))
