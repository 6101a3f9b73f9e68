"""The evaluate module metrics/lovr_retrieval: loaded by path, equal to the core and to the original loop."""

from __future__ import annotations

import doctest
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch

from lovr_hf.stats import bootstrap as stats
from lovr_hf.stats import retrieval
from lovr_hf.stats.retrieval import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "metrics" / "lovr_retrieval" / "README.md"


@pytest.fixture(scope="module")
def metric():
    # the documented call uses a ./ path relative to the repository root
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        return evaluate.load("./metrics/lovr_retrieval")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(12)
    q = rng.standard_normal((57, 16)).astype(np.float32)
    c = rng.standard_normal((83, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    cand_ids = [f"clip{i % 70}" for i in range(83)]  # 13 ids have two rows
    refs: list = [f"clip{int(i)}" for i in rng.integers(0, 70, 57)]
    refs[::5] = [[r, "clip3"] for r in refs[::5]]
    return q, refs, c, cand_ids


def original_pass(q, refs, c, cand_ids, k) -> float:
    """LoVR calc_pass: full similarity matrix, torch.topk, membership of the gold id in the top-k ids."""
    _, top = torch.topk(torch.from_numpy(q) @ torch.from_numpy(c).T, k, dim=1)
    hits = 0
    for i, ref in enumerate(refs):
        golds = ref if isinstance(ref, list) else [ref]
        hits += any(g in [cand_ids[j] for j in top[i]] for g in golds)
    return hits / len(refs)


def test_compute_equals_original_and_core(metric, data):
    q, refs, c, cand_ids = data
    out = metric.compute(
        predictions=q, references=refs, candidate_embeddings=c, candidate_ids=cand_ids, k=[1, 5, 10]
    )
    assert list(out) == ["pass@1", "pass@5", "pass@10", "median_rank", "mean_rank"]
    for k in (1, 5, 10):
        assert out[f"pass@{k}"] == original_pass(q, refs, c, cand_ids, k)
    assert out == retrieval_metrics(q, refs, c, cand_ids, ks=[1, 5, 10])
    assert 0 < out["pass@1"] < out["pass@10"] < 1


def test_arrow_path_equals_direct_path(metric, data):
    # add_batch goes through evaluate's Arrow cache (lists); mixed str / list references are normalised
    q, refs, c, cand_ids = data
    direct = metric.compute(
        predictions=q.tolist(), references=refs, candidate_embeddings=c, candidate_ids=cand_ids
    )
    metric.add_batch(predictions=q[:20], references=refs[:20])
    metric.add_batch(predictions=torch.from_numpy(q[20:]), references=refs[20:])
    cached = metric.compute(candidate_embeddings=c, candidate_ids=cand_ids)
    assert cached == direct
    # a first batch of single ids, then one with id lists: one stored format for both
    single = [r if isinstance(r, str) else r[0] for r in refs]
    metric.add_batch(predictions=q[:5], references=np.array(single[:5]))
    metric.add_batch(predictions=q[5:], references=refs[5:])
    assert metric.compute(candidate_embeddings=c, candidate_ids=cand_ids, k=3) == retrieval_metrics(
        q, single[:5] + refs[5:], c, cand_ids, ks=3
    )


def test_integer_ids_and_options(metric, data):
    q, _, c, _ = data
    refs = list(range(57))
    ids = list(range(83))
    out = metric.compute(predictions=q, references=refs, candidate_embeddings=c, candidate_ids=ids, k="1,20")
    assert out["pass@20"] == original_pass(q, refs, c, ids, 20)
    metric.add_batch(predictions=q, references=refs)
    assert metric.compute(candidate_embeddings=c, candidate_ids=ids, k="1,20") == out
    scaled = metric.compute(
        predictions=q * 3,
        references=refs,
        candidate_embeddings=c * 2,
        candidate_ids=ids,
        k="1,20",
        normalize=True,
    )
    assert scaled == out


def test_bootstrap_intervals_are_the_lovr_eval_recipe(metric, data):
    q, refs, c, cand_ids = data
    out = metric.compute(predictions=q, references=refs, candidate_embeddings=c, candidate_ids=cand_ids,
                         k=[1, 5], bootstrap=300, bootstrap_seed=4)
    ranks = retrieval.gold_ranks(q, refs, c, cand_ids)
    want = stats.rank_intervals(ranks, [1, 5], stats.Bootstrap(300, 4), "metric")
    for name in ("pass@1", "pass@5", "median_rank", "mean_rank"):
        assert (out[f"{name}_ci_low"], out[f"{name}_ci_high"]) == want[name]
        assert out[f"{name}_ci_low"] <= out[name] <= out[f"{name}_ci_high"]
    plain = metric.compute(predictions=q, references=refs, candidate_embeddings=c, candidate_ids=cand_ids, k=[1, 5])
    assert set(plain) == {"pass@1", "pass@5", "median_rank", "mean_rank"}  # no intervals unless asked
    assert {k: out[k] for k in plain} == plain


def test_errors(metric, data):
    q, refs, c, cand_ids = data
    with pytest.raises(ValueError, match="candidate_embeddings"):
        metric.compute(predictions=q, references=refs)
    with pytest.raises(ValueError, match="no gold id"):
        metric.compute(predictions=q[:1], references=["nope"], candidate_embeddings=c, candidate_ids=cand_ids)
    with pytest.raises(ValueError, match="references"):
        metric.compute(predictions=q[:2], references=refs[:1], candidate_embeddings=c, candidate_ids=cand_ids)
    out = metric.compute(
        predictions=q[:2], references=["nope", refs[1]], candidate_embeddings=c, candidate_ids=cand_ids,
        missing="last", k=1,
    )  # fmt: skip
    assert out["mean_rank"] >= 84 / 2


def test_metric_card_doctests(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = CARD.read_text(encoding="utf-8")
    assert text.startswith("---\n") and "\ntags:\n" in text.split("---")[1]
    res = doctest.testfile(str(CARD), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.attempted >= 8 and res.failed == 0


def test_module_keeps_one_import_per_line():
    src = (ROOT / "metrics" / "lovr_retrieval" / "lovr_retrieval.py").read_text()
    imports = [line for line in src.splitlines() if line.startswith("import ")]
    assert imports and all("," not in line for line in imports)
