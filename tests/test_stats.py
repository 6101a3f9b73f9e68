"""lovr_hf.stats.bootstrap on seeded simulations with a known truth: interval coverage, the paired test's power on a
planted difference and its rejection rate for equal models, and the exact recipe of the module doc."""

from __future__ import annotations

import math
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import pytest

from lovr_hf.stats import bootstrap as stats
from lovr_hf.stats.bootstrap import Bootstrap, mcnemar_exact, paired_comparison, rank_intervals


def test_bootstrap_is_the_documented_recipe():
    """Resample b is row b of rng.integers(0, Q, (B, Q), int32) of the row's stream; blocks change nothing."""
    ranks = np.random.default_rng(0).geometric(0.05, 501)
    ks = [1, 5, 10]
    got = stats.resampled_metrics(ranks, ks, 64, stats.stream(3, "text_to_clip", "all"))
    idx = stats.stream(3, "text_to_clip", "all").integers(0, 501, size=(64, 501), dtype=np.int32)
    r = ranks[idx]
    for k in ks:
        np.testing.assert_array_equal(got[f"pass@{k}"], (r <= k).mean(axis=1))
    np.testing.assert_array_equal(got["median_rank"], np.median(r, axis=1))
    np.testing.assert_allclose(got["mean_rank"], r.mean(axis=1), rtol=1e-12)
    old = stats.BLOCK_INDICES
    try:
        stats.BLOCK_INDICES = 1000  # one resample per block
        again = stats.resampled_metrics(ranks, ks, 64, stats.stream(3, "text_to_clip", "all"))
    finally:
        stats.BLOCK_INDICES = old
    assert all(np.array_equal(got[m], again[m]) for m in got)
    lo, hi = rank_intervals(ranks, ks, Bootstrap(64, 3), "text_to_clip", "all")["pass@5"]
    assert (lo, hi) == tuple(np.quantile(got["pass@5"], [0.025, 0.975]))
    # every row has its own stream: another slice or seed draws other resamples
    other = stats.resampled_metrics(ranks, ks, 64, stats.stream(3, "text_to_clip", "video:a"))
    assert not np.array_equal(other["pass@5"], got["pass@5"])
    assert rank_intervals(ranks, ks, Bootstrap(0)) == {}
    one = rank_intervals(np.array([4]), ks, Bootstrap(50))  # one query: no spread
    assert one["pass@5"] == (1.0, 1.0) and one["median_rank"] == (4.0, 4.0)


def test_intervals_cover_the_true_hit_rate():
    """400 seeded repeats of 500 queries with geometric ranks (true pass@5 = 1 - 0.871^5 = 0.50):
    the 95% interval covers the true value in 93-97% of them."""
    p0, q, repeats = 0.129, 500, 400
    ks = [1, 5, 10]
    truth = {k: 1 - (1 - p0) ** k for k in ks}
    rng = np.random.default_rng(0)
    covered = {k: 0 for k in ks}
    for rep in range(repeats):
        ranks = rng.geometric(p0, q)
        ci = rank_intervals(ranks, ks, Bootstrap(500, seed=rep), "sim")
        for k in ks:
            lo, hi = ci[f"pass@{k}"]
            covered[k] += lo <= truth[k] <= hi
    rate = {k: covered[k] / repeats for k in ks}
    assert 0.93 <= rate[5] <= 0.97, rate
    assert all(0.90 <= r <= 0.98 for r in rate.values()), rate  # pass@1 = 0.13, pass@10 = 0.75: looser


def test_mcnemar_exact_equals_the_binomial_sum():
    def reference(b: int, c: int) -> float:
        n, x = b + c, min(b, c)
        if n == 0:
            return 1.0
        tail = sum(Fraction(math.comb(n, i), 2**n) for i in range(x + 1))
        return float(min(Fraction(1), 2 * tail))

    for b, c in [(0, 0), (0, 1), (3, 3), (10, 20), (20, 10), (0, 12), (45, 80), (400, 460)]:
        assert mcnemar_exact(b, c) == pytest.approx(reference(b, c), rel=1e-9), (b, c)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(30, 60) < 0.01 < mcnemar_exact(30, 45)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def _model_ranks(ability: np.ndarray, rng: np.random.Generator, hit_rate: float, noise: float = 0.6) -> np.ndarray:
    """Ranks of a simulated model: pass@1 = hit_rate exactly in expectation; rank grows as the query gets harder.
    Score s = ability + noise * e; rank = ceil(exp(t - s)) with t set from the normal quantile."""
    sd = math.sqrt(1 + noise**2)
    t = -sd * NormalDist().inv_cdf(hit_rate)
    s = ability + noise * rng.standard_normal(ability.size)
    return np.maximum(1, np.ceil(np.exp(t - s))).astype(np.int64)


def test_paired_test_finds_a_planted_difference_and_rejects_at_the_stated_rate_for_equal_models():
    rng = np.random.default_rng(7)
    q, repeats, ks = 1000, 400, [1, 5, 10]
    boot0 = Bootstrap(0)
    null_reject = 0
    planted_found = 0
    for _ in range(repeats):
        ability = rng.standard_normal(q)  # shared query difficulty: the two models are correlated
        a = _model_ranks(ability, rng, 0.30)
        same = _model_ranks(ability, rng, 0.30)  # another run of an equally good model
        better = _model_ranks(ability, rng, 0.35)  # planted +5 points of pass@1
        null_reject += paired_comparison(same, a, ks, boot0)[0]["significant"]
        planted_found += paired_comparison(better, a, ks, boot0)[0]["significant"]
    assert 0.015 <= null_reject / repeats <= 0.07, null_reject  # exact McNemar at alpha = 0.05: at most alpha
    assert planted_found / repeats >= 0.85, planted_found  # 0.91 at this seed: power of 1,000 queries
    # with intervals: the planted difference's interval excludes 0 and is centred near +5 points
    ability = rng.standard_normal(q)
    a = _model_ranks(ability, rng, 0.30)
    b = _model_ranks(ability, rng, 0.35)
    rows = {(r["metric"], r["k"]): r for r in paired_comparison(b, a, ks, Bootstrap(1000, 1), "text_to_clip", "all")}
    r1 = rows[("pass@k", 1)]
    assert r1["ci_low"] > 0 and r1["significant"] and r1["diff"] == pytest.approx(0.05, abs=0.03)
    assert r1["ci_low"] < r1["diff"] < r1["ci_high"]
    assert r1["a_only"] - r1["b_only"] == round(r1["diff"] * q)
    assert rows[("mean_rank", 0)]["diff"] < 0  # the better model ranks its gold higher


def test_paired_copy_of_the_same_model_is_exactly_zero():
    ranks = np.random.default_rng(1).geometric(0.2, 300)
    for r in paired_comparison(ranks, ranks.copy(), [1, 5], Bootstrap(200), "d", "all"):
        assert r["diff"] == 0 and (r["ci_low"], r["ci_high"]) == (0.0, 0.0) and not r["significant"]
        if r["metric"] == "pass@k":
            assert (r["a_only"], r["b_only"], r["p_value"]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="same queries"):
        paired_comparison(ranks, ranks[:-1], [1], Bootstrap(0))
