"""lovr_hf.stats.retrieval against the original LoVR algorithm (full similarity matrix + torch.topk membership)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lovr_hf.stats import retrieval
from lovr_hf.stats.directions import DIRECTIONS, EmbeddingSet, evaluate_directions, select_clip_queries
from lovr_hf.stats.retrieval import (
    gold_ranks,
    parse_ks,
    pass_at_k,
    retrieval_metrics,
)

KS = tuple(range(1, 21))


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---- the original algorithm (LoVR calc_pass), written out as the naive reference -------------------------


def original_hits(query_feat, query_gold, cand_feat, cand_src, k) -> int:
    """Full similarity matrix, torch.topk, Python membership test: the original calc_pass loop.

    ``query_gold`` entries may be a list (multi-positive: hit when any gold id is among the top-k ids).
    """
    sim = torch.from_numpy(np.asarray(query_feat)) @ torch.from_numpy(np.asarray(cand_feat)).T
    _, topk_ids = torch.topk(sim, k, dim=1)
    hits = 0
    for i, gold in enumerate(query_gold):
        golds = gold if isinstance(gold, list) else [gold]
        top_src = [cand_src[j] for j in topk_ids[i]]
        if any(g in top_src for g in golds):
            hits += 1
    return hits


def naive_id_ranks(query_feat, query_gold, cand_feat, cand_src) -> np.ndarray:
    """Rank by distinct ids (each id scored by its best row), by sorting: the reference for rank_by='id'."""
    sim = np.asarray(query_feat, dtype=np.float64) @ np.asarray(cand_feat, dtype=np.float64).T
    ids = sorted(set(cand_src))
    out = []
    for i, gold in enumerate(query_gold):
        golds = set(gold if isinstance(gold, list) else [gold])
        best = {u: max(sim[i, j] for j in range(len(cand_src)) if cand_src[j] == u) for u in ids}
        g = max(best[u] for u in golds)
        out.append(1 + sum(1 for u in ids if u not in golds and best[u] > g))
    return np.array(out)


# ---- gold_ranks vs the original -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repeated_case():
    """Candidate ids repeat (2-3 rows per id), some queries have two gold ids."""
    rng = np.random.default_rng(7)
    q, c = _unit(rng, 103, 24), _unit(rng, 257, 24)
    cand_ids = [f"clip{i % 97}" for i in range(257)]  # ids 0..62 have 3 rows, the rest 2
    gold: list = [f"clip{int(rng.integers(0, 97))}" for _ in range(103)]
    for i in range(0, 103, 4):
        gold[i] = [gold[i], f"clip{int(rng.integers(0, 97))}"]
    return q, gold, c, cand_ids


@pytest.mark.parametrize(
    ("chunk_size", "candidate_chunk_size"),
    [(None, None), (1, None), (10, None), (103, 50), (17, 64), (200, 1), (7, 256)],
)
def test_row_ranks_equal_original_topk(repeated_case, chunk_size, candidate_chunk_size):
    # chunk sizes that do not divide Q = 103 or C = 257, incl. several candidate blocks and 1-row blocks
    q, gold, c, cand_ids = repeated_case
    ranks = gold_ranks(q, gold, c, cand_ids, chunk_size=chunk_size, candidate_chunk_size=candidate_chunk_size)
    assert ranks.dtype == np.int64 and ranks.shape == (103,)
    for k in (1, 2, 3, 5, 10, 20, 50):
        assert int((ranks <= k).sum()) == original_hits(q, gold, c, cand_ids, k), k
    assert ranks.min() >= 1 and ranks.max() <= 257


@pytest.mark.parametrize(("chunk_size", "candidate_chunk_size"), [(None, None), (9, 40), (103, 1)])
def test_id_ranks_equal_naive_distinct_ids(repeated_case, chunk_size, candidate_chunk_size):
    q, gold, c, cand_ids = repeated_case
    ranks = gold_ranks(
        q, gold, c, cand_ids, rank_by="id", chunk_size=chunk_size, candidate_chunk_size=candidate_chunk_size
    )
    np.testing.assert_array_equal(ranks, naive_id_ranks(q, gold, c, cand_ids))
    rows = gold_ranks(q, gold, c, cand_ids)
    assert (ranks <= rows).all() and (ranks < rows).any()  # other ids' extra rows only count by row


def test_id_mode_on_shuffled_ids_and_unique_ids():
    rng = np.random.default_rng(3)
    q, c = _unit(rng, 30, 8), _unit(rng, 60, 8)
    cand_ids = [f"v{int(x)}" for x in rng.integers(0, 20, 60)]  # unsorted, uneven repeats
    gold = [cand_ids[int(j)] for j in rng.integers(0, 60, 30)]
    np.testing.assert_array_equal(
        gold_ranks(q, gold, c, cand_ids, rank_by="id", candidate_chunk_size=7),
        naive_id_ranks(q, gold, c, cand_ids),
    )
    unique = [f"u{i}" for i in range(60)]
    gold_u = [unique[int(j)] for j in rng.integers(0, 60, 30)]
    np.testing.assert_array_equal(
        gold_ranks(q, gold_u, c, unique, rank_by="id"), gold_ranks(q, gold_u, c, unique, rank_by="row")
    )


def test_multi_positive_is_min_over_golds(repeated_case):
    q, gold, c, cand_ids = repeated_case
    multi = [i for i, g in enumerate(gold) if isinstance(g, list)]
    both = gold_ranks(q[multi], [gold[i] for i in multi], c, cand_ids)
    first = gold_ranks(q[multi], [gold[i][0] for i in multi], c, cand_ids)
    second = gold_ranks(q[multi], [gold[i][1] for i in multi], c, cand_ids)
    np.testing.assert_array_equal(both, np.minimum(first, second))


def test_repeated_gold_rows_use_best_row():
    # clip "a" has a weak and a strong row; rows of other ids below the strong row do not count
    c = np.array([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6], [0.6, 0.8]], dtype=np.float32)
    ids = ["a", "a", "b", "b"]
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(gold_ranks(q, ["a", "b"], c, ids), [1, 2])
    np.testing.assert_array_equal(gold_ranks(q, ["b", "a"], c, ids), [2, 1])


# ---- ties ------------------------------------------------------------------------------------------------


def test_tie_rule_optimistic_and_pessimistic():
    # exact float32 ties: duplicated unit vectors under other ids
    e = np.eye(4, dtype=np.float32)
    cands = np.stack([e[0], e[0], e[0], e[1], e[2]])
    ids = ["gold", "twin1", "twin2", "x", "y"]
    q = e[:1]
    assert gold_ranks(q, ["gold"], cands, ids).tolist() == [1]  # ties never outrank the gold
    assert gold_ranks(q, ["gold"], cands, ids, ties="pessimistic").tolist() == [3]  # every tie does
    assert gold_ranks(q, ["x"], cands, ids).tolist() == [4]  # 3 strictly higher; tie with "y" is free
    assert gold_ranks(q, ["x"], cands, ids, ties="pessimistic").tolist() == [5]
    # rank_by="id" with ties among one id's own rows: still one competitor per id
    assert gold_ranks(
        q, ["x"], cands, ["g", "t", "t", "x", "y"], rank_by="id", ties="pessimistic"
    ).tolist() == [4]


def test_ties_bound_the_original_topk():
    # torch.topk orders ties arbitrarily: the original's hit count lies between the two tie rules
    rng = np.random.default_rng(0)
    base = _unit(rng, 6, 8)
    cands = np.repeat(base, 4, axis=0)  # every vector 4 times, under 4 different ids
    ids = [f"c{i}" for i in range(len(cands))]
    q = np.repeat(base, 4, axis=0)
    gold = list(ids)  # query i is a copy of candidate row i, tied with 3 rows of other ids
    opt = gold_ranks(q, gold, cands, ids)
    pes = gold_ranks(q, gold, cands, ids, ties="pessimistic")
    assert (opt == 1).all() and (pes == 4).all()
    for k in (1, 2, 3, 4, 5):
        orig = original_hits(q, gold, cands, ids, k)
        assert int((pes <= k).sum()) <= orig <= int((opt <= k).sum())
    assert original_hits(q, gold, cands, ids, 4) == 24  # no tie straddles k = 4: all three agree


# ---- top-N lists: the documented tie-break rule -------------------------------------------------------------


def naive_top(query_feat, query_gold, cand_feat, cand_src, n, rank_by="row", ties="optimistic"):
    """Sort every candidate (row, or id scored by its best row) by (-score, gold first/last, index)."""
    sim = np.asarray(query_feat, dtype=np.float32) @ np.asarray(cand_feat, dtype=np.float32).T
    ids = list(dict.fromkeys(cand_src))
    out = []
    for i, gold in enumerate(query_gold):
        golds = set(gold if isinstance(gold, list) else [gold])
        if rank_by == "row":
            entries = [(sim[i, j], cand_src[j] in golds, j, cand_src[j]) for j in range(len(cand_src))]
        else:
            entries = [(max(sim[i, j] for j in range(len(cand_src)) if cand_src[j] == u), u in golds, k, u)
                       for k, u in enumerate(ids)]
        gold_key = (lambda g: not g) if ties == "optimistic" else (lambda g: g)
        entries.sort(key=lambda e: (-e[0], gold_key(e[1]), e[2]))
        out.append(([e[3] for e in entries[:n]], [float(e[0]) for e in entries[:n]]))
    return out


@pytest.mark.parametrize(("rank_by", "ties", "chunk_size", "candidate_chunk_size"),
                         [("row", "optimistic", None, None), ("row", "pessimistic", 7, 40),
                          ("id", "optimistic", 9, 50), ("id", "pessimistic", None, None), ("row", "optimistic", 1, 1)])
def test_top_lists_follow_the_tie_rule_and_place_the_gold_at_its_rank(repeated_case, rank_by, ties, chunk_size,
                                                                     candidate_chunk_size):
    q, gold, c, cand_ids = repeated_case
    # exact ties: duplicate some candidate rows under other ids and make some queries copies of candidates.
    # The vectors are made integer-valued first: two identical float rows need not score the same in the last
    # bit (a BLAS kernel may sum the columns of one matmul in different orders, e.g. in its edge tiles; seen on
    # an AMD CPU), whereas dot products of small integers are exact in float32 in any order, so every tie here
    # is exact on any CPU and the rule, not the kernel, decides the order
    q, c = np.round(q * 8), np.round(c * 8)
    c = np.concatenate([c, c[:30]])
    cand_ids = cand_ids + [f"dup{i}" for i in range(30)]
    q = np.concatenate([q, c[:10]])
    gold = gold + [cand_ids[i] for i in range(10)]
    res = retrieval.rank_queries(q, gold, c, cand_ids, top=20, rank_by=rank_by, ties=ties, chunk_size=chunk_size,
                                 candidate_chunk_size=candidate_chunk_size)
    np.testing.assert_array_equal(res.ranks, gold_ranks(q, gold, c, cand_ids, rank_by=rank_by, ties=ties,
                                                        chunk_size=chunk_size,
                                                        candidate_chunk_size=candidate_chunk_size))
    ref = naive_top(q, gold, c, cand_ids, 21, rank_by, ties)  # one more: the neighbour of the last place
    ref_scores = np.array([sc[:20] for _, sc in ref], dtype=np.float32)
    np.testing.assert_allclose(res.top_scores, ref_scores, atol=1e-6)
    if candidate_chunk_size is None:  # one block: every score from the same matmul, exactly the reference
        assert res.top_ids() == [ids[:20] for ids, _ in ref]
    else:  # several blocks: the gold's score is a separate dot product, so exact ties may split by an ulp;
        # everywhere else the lists are the reference's
        for (got_ids, (want_ids, sc)) in zip(res.top_ids(), ref):
            for p, (a, b) in enumerate(zip(got_ids, want_ids)):
                near = [abs(sc[p] - sc[o]) < 1e-6 for o in (p - 1, p + 1) if 0 <= o < len(sc)]
                assert a == b or any(near)
    for i, g in enumerate(gold):
        golds = set(g if isinstance(g, list) else [g])
        top = res.top_ids()[i]
        first = next((p for p, x in enumerate(top, start=1) if x in golds), None)
        if rank_by == "id" or not any(cand_ids.count(x) > 1 for x in golds):
            # the gold's position in the list is its rank (row mode: when no repeated non-gold row intervenes
            # this holds by the rule; checked where the gold id has one row)
            assert first == (res.ranks[i] if res.ranks[i] <= 20 else None), i
    assert np.isfinite(res.gold_scores).all()


def test_top_lists_prefilter_on_wide_blocks_keeps_every_tie():
    # >= 320 candidates: the strided pre-filter path; many exact ties at and around the 20th place
    rng = np.random.default_rng(5)
    base = _unit(rng, 200, 12)
    c = np.concatenate([base, base[:100], base[:100]])  # 100 vectors three times under different ids
    assert len(c) >= 2 * 20 * retrieval._TOP_STRIDE
    ids = [f"c{i}" for i in range(len(c))]
    q = np.concatenate([base[:20], _unit(rng, 20, 12)])
    gold = [ids[int(j)] for j in rng.integers(0, len(c), 40)]
    for ties in ("optimistic", "pessimistic"):
        res = retrieval.rank_queries(q, gold, c, ids, top=20, ties=ties)
        assert res.top_ids() == [x for x, _ in naive_top(q, gold, c, ids, 20, ties=ties)]
        np.testing.assert_array_equal(res.ranks, gold_ranks(q, gold, c, ids, ties=ties))


def test_top_lists_with_fewer_candidates_than_top_and_absent_gold():
    e = np.eye(3, dtype=np.float32)
    res = retrieval.rank_queries(e[:2], ["a", "zz"], e, ["a", "b", "c"], top=5, missing="last")
    assert res.top_ids() == [["a", "b", "c"], ["b", "a", "c"]]  # ties (0 = 0) by candidate index
    assert res.top_index.shape == (2, 5) and (res.top_index[:, 3:] == -1).all() and np.isnan(res.top_scores[:, 3:]).all()
    assert res.ranks.tolist() == [1, 4] and res.gold_scores[1] == -np.inf


# ---- chunking, validation, missing gold ------------------------------------------------------------------


def test_chunking_is_exact_and_candidate_blocks_bounded(monkeypatch):
    rng = np.random.default_rng(11)
    q, c = _unit(rng, 64, 16), _unit(rng, 1000, 16)
    ids = [f"i{j}" for j in range(1000)]
    gold = [ids[int(j)] for j in rng.integers(0, 1000, 64)]
    ref = gold_ranks(q, gold, c, ids)
    # tiny block budget: many query blocks x many candidate blocks
    monkeypatch.setattr(retrieval, "BLOCK_ELEMENTS", 300)
    np.testing.assert_array_equal(gold_ranks(q, gold, c, ids, candidate_chunk_size=128), ref)
    np.testing.assert_array_equal(gold_ranks(q, gold, c, ids, candidate_chunk_size=999), ref)
    for k in (1, 5, 10):
        assert int((ref <= k).sum()) == original_hits(q, gold, c, ids, k)


def test_working_memory_is_bounded_by_the_block_budget(monkeypatch):
    import tracemalloc

    rng = np.random.default_rng(6)
    q, c = _unit(rng, 2000, 8), _unit(rng, 20_000, 8)
    ids = np.arange(20_000)
    gold = rng.integers(0, 20_000, 2000)
    monkeypatch.setattr(retrieval, "BLOCK_ELEMENTS", 1 << 18)  # 13-query blocks
    tracemalloc.start()
    try:
        ranks = gold_ranks(q, gold, c, ids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    full_matrix = 2000 * 20_000 * 4  # 160 MB: what the original holds
    assert peak < 8_000_000 and peak * 20 < full_matrix, peak
    for k in (1, 10):
        assert int((ranks[:300] <= k).sum()) == original_hits(
            q[:300], gold[:300].tolist(), c, ids.tolist(), k
        )


def test_missing_gold_raise_or_last():
    rng = np.random.default_rng(2)
    q, c = _unit(rng, 3, 4), _unit(rng, 5, 4)
    ids = list("abcde")
    with pytest.raises(ValueError, match="no gold id"):
        gold_ranks(q, ["a", "zz", "b"], c, ids)
    ranks = gold_ranks(q, ["a", "zz", ["zz", "b"]], c, ids, missing="last")
    assert ranks[1] == 6
    np.testing.assert_array_equal(ranks[[0, 2]], gold_ranks(q[[0, 2]], ["a", "b"], c, ids))
    assert gold_ranks(q[:1], ["zz"], c, ["a", "a", "b", "c", "d"], rank_by="id", missing="last").tolist() == [
        5
    ]


def test_input_validation():
    rng = np.random.default_rng(2)
    q, c = _unit(rng, 3, 4), _unit(rng, 5, 4)
    ids = list("abcde")
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gold_ranks(bad, ["a", "b", "c"], c, ids)
    with pytest.raises(ValueError, match="dimension"):
        gold_ranks(q[:, :3], ["a", "b", "c"], c, ids)
    with pytest.raises(ValueError, match="candidate ids"):
        gold_ranks(q, ["a", "b", "c"], c, ids[:4])
    with pytest.raises(ValueError, match="gold entries"):
        gold_ranks(q, ["a", "b"], c, ids)
    with pytest.raises(ValueError, match="rank_by"):
        gold_ranks(q, ["a", "b", "c"], c, ids, rank_by="clip")
    assert gold_ranks(q[:0], [], c, ids).shape == (0,)


def test_normalize_and_float64_inputs():
    rng = np.random.default_rng(5)
    q, c = _unit(rng, 20, 8), _unit(rng, 30, 8)
    ids = [str(i) for i in range(30)]
    gold = [str(int(i)) for i in rng.integers(0, 30, 20)]
    ref = gold_ranks(q, gold, c, ids)
    scale = rng.uniform(0.5, 3.0, (30, 1))
    np.testing.assert_array_equal(gold_ranks(q * 2.0, gold, c * scale, ids, normalize=True), ref)
    np.testing.assert_array_equal(gold_ranks(q.astype(np.float64), gold, c.tolist(), np.array(ids)), ref)


def test_integer_ids_and_numpy_gold():
    rng = np.random.default_rng(8)
    q, c = _unit(rng, 10, 8), _unit(rng, 12, 8)
    gold = rng.integers(0, 12, 10)
    ranks = gold_ranks(q, gold, c, np.arange(12))
    for k in (1, 3):
        assert int((ranks <= k).sum()) == original_hits(q, gold.tolist(), c, list(range(12)), k)


# ---- aggregates -----------------------------------------------------------------------------------------


def test_pass_at_k_and_metrics():
    ranks = np.array([1, 2, 2, 7, 30])
    assert pass_at_k(ranks, [1, 2, 10]) == {"pass@1": 0.2, "pass@2": 0.6, "pass@10": 0.8}
    assert list(pass_at_k(ranks, None)) == [f"pass@{k}" for k in KS]
    rng = np.random.default_rng(4)
    q, c = _unit(rng, 40, 8), _unit(rng, 50, 8)
    ids = [f"x{i}" for i in range(50)]
    gold = [f"x{int(i)}" for i in rng.integers(0, 50, 40)]
    out = retrieval_metrics(q, gold, c, ids, ks="1,5,10")
    r = gold_ranks(q, gold, c, ids)
    assert list(out) == ["pass@1", "pass@5", "pass@10", "median_rank", "mean_rank"]
    assert out["median_rank"] == float(np.median(r)) and out["mean_rank"] == float(np.mean(r))
    for k in (1, 5, 10):
        assert out[f"pass@{k}"] == original_hits(q, gold, c, ids, k) / 40
    with pytest.raises(ValueError):
        pass_at_k([], [1])


def test_parse_ks():
    assert parse_ks("10, 1,5") == (1, 5, 10)
    assert parse_ks(3) == (3,)
    assert parse_ks(None) == KS
    with pytest.raises(ValueError):
        parse_ks("0,1")


# ---- protocol: query selection and directions ------------------------------------------------------------


def test_select_clip_queries_deterministic():
    ids = [f"vid{v}-Scene-{s:03d}" for v in range(30) for s in range(1, 51)]
    a = select_clip_queries(ids, 100, seed=0)
    assert len(a) == 100 == len(set(a)) and a == sorted(a) and set(a) <= set(ids)
    assert select_clip_queries(list(reversed(ids)) + ids[:10], 100, seed=0) == a  # order / duplicates
    assert select_clip_queries(ids, 100, seed=1) != a
    assert select_clip_queries(ids, "all") == sorted(ids)
    assert select_clip_queries(ids[:5], 1000) == sorted(ids[:5])
    grown = select_clip_queries(ids + [f"new{i}" for i in range(50)], 100, seed=0)
    assert len(set(grown) & set(a)) >= 90  # adding clips only displaces a few
    # pinned literals: the recorded query set must not change across platforms / numpy versions
    assert select_clip_queries(ids, 3, seed=0) == ["vid12-Scene-020", "vid29-Scene-008", "vid4-Scene-015"]
    assert select_clip_queries([f"c{i}" for i in range(10)], 3, seed=42) == ["c2", "c3", "c6"]


def original_calc_pass(text_feat, text_src, clip_num, clip_feat, clip_src, full_feat, full_src, theme, ks):
    """LoVR calc_pass (VideoCLIP-XL_test.py), line for line apart from I/O: {direction: {k: pass}}."""
    clip_1000_id = [i for i in range(len(clip_src)) if clip_src[i] in text_src]
    clip_1000_feat = np.stack([clip_feat[i] for i in clip_1000_id])
    clip_sim = text_feat[:clip_num] @ clip_feat.T
    full_sim = text_feat[clip_num:] @ full_feat.T
    v2t_clip_sim = clip_1000_feat @ text_feat[:clip_num].T
    v2t_full_sim = full_feat @ text_feat[clip_num:].T
    clip_1000_src = [clip_src[i] for i in clip_1000_id]
    theme_feat, theme_src = theme
    clip_theme_id = [i for i in range(len(clip_src)) if clip_src[i] in theme_src]
    clip_theme_feat = np.stack([clip_feat[i] for i in clip_theme_id])
    clip_theme_src = [clip_src[i] for i in clip_theme_id]
    theme_sim = theme_feat @ clip_feat.T
    v2t_theme_sim = clip_theme_feat @ theme_feat.T
    out: dict[str, dict[int, float]] = {d: {} for d in DIRECTIONS}

    def count(sim, queries_src, cand_src, k):
        _, top = torch.topk(torch.from_numpy(sim), k, dim=1)
        return sum(1 for i, s in enumerate(queries_src) if s in [cand_src[j] for j in top[i]])

    n_full = len(text_src) - clip_num
    for k in ks:
        out["text_to_clip"][k] = count(clip_sim, text_src[:clip_num], clip_src, k) / clip_num
        out["text_to_video"][k] = count(full_sim, text_src[clip_num:], full_src, k) / n_full
        out["clip_to_text"][k] = count(v2t_clip_sim, clip_1000_src, text_src[:clip_num], k) / clip_num
        out["video_to_text"][k] = count(v2t_full_sim, full_src, text_src[clip_num:], k) / n_full
        out["theme_to_clip"][k] = count(theme_sim, theme_src, clip_src, k) / len(theme_src)
        out["clip_to_theme"][k] = count(v2t_theme_sim, clip_theme_src, theme_src, k) / len(theme_src)
    return out


@pytest.mark.parametrize("drop_one_clip", [False, True])
def test_evaluate_directions_equals_original_calc_pass(drop_one_clip):
    rng = np.random.default_rng(2024)
    d, n_videos, per_video = 32, 12, 10
    videos = [f"vid{v:02d}" for v in range(n_videos)]
    clips = [f"{v}-Scene-{s:03d}" for v in videos for s in range(1, per_video + 1)]
    clip_vis = _unit(rng, len(clips), d)
    clip_txt = _unit(rng, len(clips), d) * 2.5 + clip_vis  # weakly correlated: ranks spread out
    clip_txt /= np.linalg.norm(clip_txt, axis=1, keepdims=True)
    video_vis, video_txt = _unit(rng, n_videos, d), _unit(rng, n_videos, d)
    theme_ids = clips[::3]
    theme_txt = _unit(rng, len(theme_ids), d)
    ks = tuple(range(1, 13))

    selected = select_clip_queries(clips, 40, seed=5)
    sel_idx = [clips.index(i) for i in selected]
    vis_keep = list(range(len(clips)))
    if drop_one_clip:  # a query clip without features: the original keeps it in the denominator as a miss
        vis_keep.remove(sel_idx[3])
    emb = {
        "clip_caption": (clips, clip_txt),
        "clip": ([clips[i] for i in vis_keep], clip_vis[vis_keep]),
        "video_caption": (videos, video_txt),
        "video": (videos, video_vis),
        "theme_caption": EmbeddingSet(theme_ids, theme_txt),
    }
    rows = evaluate_directions(emb, clip_queries=40, seed=5, ks=ks)
    got: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["metric"] == "pass@k":
            got.setdefault(r["direction"], {})[r["k"]] = r["value"]
    assert set(got) == set(DIRECTIONS)

    text_feat = np.concatenate([clip_txt[sel_idx], video_txt])
    text_src = selected + videos
    orig = original_calc_pass(
        text_feat, text_src, 40, clip_vis[vis_keep], [clips[i] for i in vis_keep], video_vis, videos,
        (theme_txt, theme_ids), ks,
    )  # fmt: skip
    for direction in DIRECTIONS:
        assert got[direction] == pytest.approx(orig[direction], abs=0), direction
    assert 0 < got["text_to_clip"][1] < got["text_to_clip"][12] <= 1  # non-trivial numbers
    by = {(r["direction"], r["metric"]): r for r in rows}
    assert by[("text_to_clip", "pass@k")]["num_candidates"] == len(vis_keep)
    assert by[("clip_to_text", "median_rank")]["num_queries"] == 40
    assert by[("clip_to_text", "mean_rank")]["k"] == 0


def test_evaluate_directions_subset_and_missing_kinds():
    rng = np.random.default_rng(1)
    ids = [f"v{i}" for i in range(6)]
    emb = {"video_caption": (ids, _unit(rng, 6, 8)), "video": (ids, _unit(rng, 6, 8))}
    rows = evaluate_directions(emb, ks=[1, 3], directions=["text_to_video"])
    assert {r["direction"] for r in rows} == {"text_to_video"}
    assert [(r["metric"], r["k"]) for r in rows] == [
        ("pass@k", 1),
        ("pass@k", 3),
        ("median_rank", 0),
        ("mean_rank", 0),
    ]
    with pytest.raises(ValueError, match="unknown directions"):
        evaluate_directions(emb, directions=["text_to_audio"])
    # explicit query ids; no clip kinds given -> clip directions skipped
    assert evaluate_directions(emb, clip_queries=["x"], ks=[1], directions=["text_to_clip"]) == []
