"""What ``--protocol original`` does when candidates score exactly the same as the gold.

The original ranks with ``torch.topk``, whose order among equal scores is an implementation detail (on a CPU
not even by index), so at a tie straddling the k-th place its hit is undefined. Both protocols use the one
documented rule (lovr_hf.stats.retrieval, docs/evaluation.md "ties at the k-th place"): optimistic, a candidate
counts against the gold only when it scores strictly higher, so a gold tied with others is a hit at every k.
This bounds the original from above. The ties are built exact: one-hot vectors for every text and frame, so
every score is exactly 1.0 whatever the kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _release_helpers import QUERIES, build_release

from lovr_hf.evaluation.run import evaluate_model
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.hub.release import import_release
from lovr_hf.repo import BenchmarkRepo


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_release(tmp_path_factory.mktemp("rel") / "LoVR")


def test_original_protocol_counts_a_gold_tied_with_every_candidate_as_a_hit(release: Path, tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    cfg = EvalConfig(model="_oracle_helpers:TiedEmbedder", protocol="original", decode_backend="pyav",
                     model_name="tied", bootstrap=0)
    rows = evaluate_model(repo, cfg)
    got = {(r["direction"], r["k"]): r for r in rows if r["metric"] == "pass@k" and r["slice"] == "all"}
    available = len(QUERIES) - 2  # the broken clip and the listed clip without a file: misses under original
    want = {"text_to_clip": available / len(QUERIES), "clip_to_text": available / len(QUERIES),
            "text_to_video": 1.0, "video_to_text": 1.0}
    for direction, value in want.items():
        ks = sorted(k for d, k in got if d == direction)
        assert ks[0] == 1 and ks == list(range(1, len(ks) + 1))  # every k up to the candidates' count
        for k in ks:
            assert got[(direction, k)]["value"] == pytest.approx(value, abs=1e-12), (direction, k)
    # (torch.topk, as the original ran it on such ties, takes an order of its own: the rule above is a bound)
