"""LoVR retrieval metric: pass@k, median and mean rank of the gold candidate by cosine similarity.

A thin ``evaluate`` wrapper around :mod:`lovr_hf.stats.retrieval` (the vectorised, chunked implementation).
Keep one import per line: evaluate's dependency scanner misreads ``import a, b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from lovr_hf.stats import bootstrap as stats
from lovr_hf.stats import retrieval

_CITATION = """\
@article{lovr2025,
  title={LoVR: A Benchmark for Long Video Retrieval in Multimodal Contexts},
  journal={arXiv preprint arXiv:2505.13928},
  year={2025}
}
"""

_DESCRIPTION = """\
Text-to-video / video-to-text retrieval metric of the LoVR benchmark. For every query embedding the gold
candidate's rank among the candidate embeddings (dot product of L2-normalised vectors = cosine similarity)
is computed once; pass@k (Recall@k with one gold item) is the fraction of queries whose gold is in the top k.
Candidate ids may repeat (several rows of one clip): the rank is that of the best-scoring gold row among
the rows of other ids, exactly the original LoVR top-k membership test. A query may list several gold ids
(multi-positive): it is a hit when any of them is in the top k. Ties count in favour of the gold
(`ties="optimistic"`; `"pessimistic"` counts them against it). With `bootstrap=B` every metric also gets a
seeded percentile interval over the queries (the recipe of `lovr eval`, lovr_hf.stats.bootstrap).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: [Q, d] query embeddings, L2-normalised (list of lists or a 2-D array).
    references: one gold candidate id per query (str or int), or a list of gold ids per query.
    candidate_embeddings: [C, d] candidate embeddings, L2-normalised.
    candidate_ids: C candidate ids (may repeat across rows).
    k: int, list of ints or "1,5,10" (default [1, 5, 10]; the original LoVR default is 1..20).
    rank_by: "row" (default, original semantics) or "id" (distinct ids, each scored by its best row).
    ties: "optimistic" (default: only strictly higher scores outrank the gold) or "pessimistic".
    missing: "raise" (default) when a query's gold id is not among candidate_ids, or "last" (a miss).
    normalize: L2-normalise predictions and candidates first (default False).
    chunk_size: queries per block (default: chosen for ~160 MiB of working memory).
    bootstrap: resamples of the queries for percentile intervals (default 0 = none); adds
        "<metric>_ci_low" / "<metric>_ci_high" for every metric (lovr_hf.stats.bootstrap: the recipe lovr eval uses).
    bootstrap_seed: seed of the resampling (default 0); confidence_level: default 0.95.
Returns:
    {"pass@1": float, "pass@5": float, "pass@10": float, "median_rank": float, "mean_rank": float}
Examples:
    >>> import numpy as np
    >>> metric = evaluate.load("./metrics/lovr_retrieval")
    >>> cands = np.eye(3, dtype=np.float32)
    >>> metric.compute(predictions=cands, references=["a", "b", "c"], candidate_embeddings=cands,
    ...                candidate_ids=["a", "b", "c"], k=[1])
    {'pass@1': 1.0, 'median_rank': 1.0, 'mean_rank': 1.0}
"""

_VECTOR = datasets.Sequence(datasets.Value("float32"))
_FEATURES = [
    datasets.Features({"predictions": _VECTOR, "references": datasets.Value("string")}),
    datasets.Features({"predictions": _VECTOR, "references": datasets.Sequence(datasets.Value("string"))}),
    datasets.Features({"predictions": _VECTOR, "references": datasets.Value("int64")}),
    datasets.Features({"predictions": _VECTOR, "references": datasets.Sequence(datasets.Value("int64"))}),
]


def _is_multi(ref: Any) -> bool:
    return not isinstance(ref, (str, bytes)) and isinstance(ref, (Sequence, np.ndarray))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LovrRetrieval(evaluate.Metric):
    """pass@k / median rank / mean rank for embedding retrieval (LoVR ``calc_pass`` semantics)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            reference_urls=["https://arxiv.org/abs/2505.13928"],
        )

    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict | None:
        """Direct path for the common one-shot call; otherwise evaluate's Arrow-cached path.

        evaluate stores inputs in an Arrow cache and hands them back as Python lists (its ``numpy`` format
        refuses Sequence features): ~1 s for 10,000 x 512 predictions even with ``add_batch``'s list
        conversion (~3 s without), as long as the whole matmul against 10,000 candidates. A single-process
        call with nothing added before has nothing to gather, so it goes straight to ``_compute`` with the
        caller's arrays.
        ``add_batch`` / distributed use (``num_process > 1``) keep the standard path.
        """
        direct = (
            predictions is not None
            and references is not None
            and self.num_process == 1
            and getattr(self, "writer", None) is None
        )
        if not direct:
            return super().compute(predictions=predictions, references=references, **kwargs)
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        return self._compute(predictions=predictions, references=references, **kwargs)

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Arrays go in as lists (much faster for evaluate to encode than rows of an array), and every
        reference becomes a list of ids, so batches mixing single ids and id lists share one format."""
        if isinstance(predictions, np.ndarray) or hasattr(predictions, "numpy"):
            predictions = np.asarray(predictions, dtype=np.float32).tolist()
        if references is not None:
            references = [
                [x.item() if isinstance(x, np.generic) else x for x in r]
                if _is_multi(r)
                else [r.item() if isinstance(r, np.generic) else r]
                for r in references
            ]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(
        self,
        predictions: Any,
        references: Sequence[Any],
        candidate_embeddings: Any = None,
        candidate_ids: Sequence[Any] | None = None,
        k: Any = (1, 5, 10),
        rank_by: str = "row",
        ties: str = "optimistic",
        missing: str = "raise",
        normalize: bool = False,
        chunk_size: int | None = None,
        bootstrap: int = 0,
        bootstrap_seed: int = 0,
        confidence_level: float = stats.DEFAULT_LEVEL,
    ) -> dict[str, float]:
        if candidate_embeddings is None or candidate_ids is None:
            raise ValueError("candidate_embeddings and candidate_ids are required")
        ks = retrieval.parse_ks(k)
        ranks = retrieval.gold_ranks(
            predictions,
            references,
            candidate_embeddings,
            candidate_ids,
            rank_by=rank_by,
            ties=ties,
            missing=missing,
            normalize=normalize,
            chunk_size=chunk_size,
        )
        out = retrieval.rank_metrics(ranks, ks)
        boot = stats.Bootstrap(int(bootstrap), int(bootstrap_seed), float(confidence_level))
        for name, (lo, hi) in stats.rank_intervals(ranks, ks, boot, "metric").items():
            out[f"{name}_ci_low"] = lo
            out[f"{name}_ci_high"] = hi
        return out
