"""Benchmark the LoVR retrieval metric against a bare matmul and the original calc_pass loop.

Random L2-normalised float32 features at LoVR scale (467 videos, 40,804 clips, 1,000 clip-caption queries):

- ``metric``: ``lovr_hf.stats.retrieval.retrieval_metrics`` with k = 1..20 (all k come from one rank pass);
- ``bare``: one ``queries @ candidates.T`` of the same size (the full similarity matrix, nothing else);
- ``blocked``: the metric's own blocks of that matmul into one reused buffer, without the ranking, so
  ``m/blk`` is the cost of the ranking itself and ``m/bare`` includes what blocking saves or costs;
- ``original``: LoVR's ``calc_pass`` for one direction: full torch similarity matrix, then for every k
  ``torch.topk`` and the Python membership loop. For large Q it runs on the first ``--original-queries``
  queries and the time and memory are EXTRAPOLATED linearly to all queries (marked ``~``).

Every measurement runs in its own child process; peak memory is the process's peak RSS above its RSS
once the inputs exist (``/proc/self/clear_refs`` resets the peak), i.e. working memory, not inputs.
A second table sweeps the number of candidates (to 1M) to show that the metric's memory stays flat, a
third measures the ``evaluate`` wrapper's overhead at 10,000 x 512 queries, and a fourth the cost of what
``lovr eval`` adds to the ranks (``--no-uncertainty`` skips it):

- ``top-20``: ``rank_queries(top=20)`` (the ``rankings-<model>`` lists) against the plain metric;
- ``bootstrap``: the 95% intervals of ``lovr_hf.stats.bootstrap`` (B = 1,000 resamples) for every metric of one
  direction, then for the direction plus all its slices (LoVR-like: 467 videos, duration and caption bins),
  against the metric of that direction. Limits at LoVR scale (full run): each within 1.5x the metric; the
  quick sizes are too small for them (the fixed cost of ~1.4 ms per slice dominates). Measured (2 shared
  cores): t2c 1000 x 40,804: top-20 1.26x, intervals 0.19x, with 419 slices 1.14x; 40,804 x 40,804: top-20
  1.46x, intervals with 465 slices 0.18x.

Timings share the CPU with whatever else runs on the machine: compare ratios from the same run.

    python scripts/bench_metric.py            # full (~6 min on 2 cores)
    python scripts/bench_metric.py --quick    # small sizes (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KS = tuple(range(1, 21))

FULL_CASES = [
    ("videos 467x467", 467, 467, 512),
    ("t2c 1000x40804", 1000, 40_804, 512),
    ("t2c 1000x40804", 1000, 40_804, 1024),
    ("all 40804x40804", 40_804, 40_804, 512),
    ("all 40804x40804", 40_804, 40_804, 1024),
]
QUICK_CASES = [
    ("videos 467x467", 467, 467, 512),
    ("t2c 1000x10000", 1000, 10_000, 512),
    ("4096x10000", 4096, 10_000, 1024),
]
FULL_SWEEP = (1000, [40_804, 200_000, 1_000_000], 512)
QUICK_SWEEP = (256, [10_000, 100_000], 256)
FULL_EVAL = (10_000, 40_804, 512)
QUICK_EVAL = (10_000, 10_000, 512)
FULL_UNCERTAINTY = [("t2c 1000x40804", 1000, 40_804, 512), ("all 40804x40804", 40_804, 40_804, 512)]
QUICK_UNCERTAINTY = [("t2c 1000x10000", 1000, 10_000, 512), ("4096x10000", 4096, 10_000, 512)]
TOP20_LIMIT, BOOTSTRAP_LIMIT = 1.5, 1.5


# ---------------------------------------------------------------------------------------------------------
# child side
# ---------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _make_data(n_q: int, n_c: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    cands = unit(n_c)
    queries = unit(n_q)
    cand_ids = [f"vid{i // 90:04d}-Scene-{i % 90 + 1:03d}" for i in range(n_c)]
    gold = [cand_ids[j] for j in rng.integers(0, n_c, n_q)]
    return queries, gold, cands, cand_ids


def _original_loop(queries, gold, cands, cand_ids, ks) -> tuple[dict[int, float], dict[int, float], float]:
    """LoVR calc_pass for one direction (text -> clip): returns pass@k, seconds per k, matmul seconds."""
    import torch

    t0 = time.perf_counter()
    sim = torch.from_numpy(queries) @ torch.from_numpy(cands).T
    t_mm = time.perf_counter() - t0
    passes, per_k = {}, {}
    for k in ks:
        t = time.perf_counter()
        hits = 0
        _, topk_ids = torch.topk(sim, k, dim=1)
        for i, t_src in enumerate(gold):
            if t_src in [cand_ids[j] for j in topk_ids[i]]:
                hits += 1
        passes[k] = hits / len(gold)
        per_k[k] = time.perf_counter() - t
    return passes, per_k, t_mm


def retrieval_ranks(queries, gold, cands, cand_ids):
    from lovr_hf.stats.retrieval import gold_ranks

    return gold_ranks(queries, gold, cands, cand_ids)


def child(spec: dict) -> dict:
    method, n_q, n_c, d = spec["method"], spec["Q"], spec["C"], spec["d"]
    sys.path.insert(0, str(ROOT))
    from lovr_hf.stats.retrieval import retrieval_metrics
    from lovr_hf.stats.score_blocks import BLOCK_ELEMENTS

    if method == "original":
        import torch  # noqa: F401  (imported before the peak reset: the library is not working memory)

        n_q = min(n_q, spec["sub"])
    queries, gold, cands, cand_ids = _make_data(n_q, n_c, d)
    if method == "evaluate":
        import evaluate

        metric = evaluate.load(str(ROOT / "metrics" / "lovr_retrieval"))
    base_kib = _status_kib("VmRSS")
    resettable = _reset_peak()
    out: dict = {"Q": n_q}
    t0 = time.perf_counter()
    if method == "metric":
        res = retrieval_metrics(queries, gold, cands, cand_ids, ks=KS)
        out["pass"] = {k: res[f"pass@{k}"] for k in KS}
    elif method == "bare":
        sim = queries @ cands.T
        out["checksum"] = float(sim[0, 0])
        del sim
    elif method == "bare_blocked":  # the metric's blocks into one reused buffer, without the ranking
        qc = min(n_q, max(1, BLOCK_ELEMENTS // n_c))
        buf = np.empty(qc * n_c, dtype=np.float32)
        for q0 in range(0, n_q, qc):
            n = min(qc, n_q - q0)
            np.matmul(queries[q0 : q0 + n], cands.T, out=buf[: n * n_c].reshape(n, n_c))
    elif method == "original":
        passes, per_k, t_mm = _original_loop(queries, gold, cands, cand_ids, KS)
        out["pass"] = passes
        out["t_matmul"] = t_mm
        out["t_k"] = per_k
        mine = retrieval_metrics(queries, gold, cands, cand_ids, ks=KS)
        out["agree"] = all(mine[f"pass@{k}"] == passes[k] for k in KS)
    elif method == "top20":
        from lovr_hf.stats.retrieval import rank_queries

        res = rank_queries(queries, gold, cands, cand_ids, top=20)
        out["t_top"] = time.perf_counter() - t0
        out["agree"] = bool(np.array_equal(res.ranks, retrieval_ranks(queries, gold, cands, cand_ids)))
    elif method == "bootstrap":
        from lovr_hf.stats import slices
        from lovr_hf.stats.bootstrap import Bootstrap, rank_intervals

        ranks = retrieval_ranks(queries, gold, cands, cand_ids)
        t = time.perf_counter()
        rank_intervals(ranks, KS, Bootstrap(1000), "text_to_clip", "all")
        out["t_direction"] = time.perf_counter() - t
        rng = np.random.default_rng(1)
        vids = [g.split("-Scene-")[0] for g in gold]
        groups = slices.slices_for("text_to_clip", vids, list(rng.gamma(2.0, 8.0, n_q)),
                                   list(rng.integers(20, 400, n_q)))
        t = time.perf_counter()
        for label, idx in groups.items():
            rank_intervals(ranks[idx], KS, Bootstrap(1000), "text_to_clip", label)
        out["t_slices"] = time.perf_counter() - t
        out["n_slices"] = len(groups)
    elif method == "evaluate":
        times = {}
        t = time.perf_counter()
        core = retrieval_metrics(queries, gold, cands, cand_ids, ks=(1, 5, 10))
        times["core"] = time.perf_counter() - t
        t = time.perf_counter()
        direct = metric.compute(
            predictions=queries, references=gold, candidate_embeddings=cands, candidate_ids=cand_ids
        )
        times["compute"] = time.perf_counter() - t
        t = time.perf_counter()
        metric.add_batch(predictions=queries, references=gold)
        cached = metric.compute(candidate_embeddings=cands, candidate_ids=cand_ids)
        times["add_batch+compute"] = time.perf_counter() - t
        t = time.perf_counter()
        sim = queries @ cands.T
        times["bare"] = time.perf_counter() - t
        del sim
        out["times"] = times
        out["agree"] = core == direct == cached
    else:
        raise ValueError(method)
    out["seconds"] = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM")
    out["peak_extra_mib"] = (peak_kib - base_kib) / 1024 if resettable else None
    out["peak_total_mib"] = peak_kib / 1024
    return out


# ---------------------------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------------------------


def run_child(spec: dict) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    ap.add_argument("--original-queries", type=int, default=2000, help="queries run by the original loop")
    ap.add_argument("--no-original", action="store_true", help="skip the original loop")
    ap.add_argument("--no-sweep", action="store_true", help="skip the candidate sweep")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the evaluate-wrapper overhead")
    ap.add_argument("--no-uncertainty", action="store_true", help="skip the top-20 and bootstrap costs")
    ap.add_argument(
        "--repeat", type=int, help="runs per measurement, best kept (default 3; 1 above 1e8 scores)"
    )
    ap.add_argument("--only", help="run only the cases whose name contains this text (e.g. 40804x40804)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.only:
        cases = [case for case in cases if args.only in case[0]]
    sub = min(args.original_queries, 500) if args.quick else args.original_queries
    print(
        f"numpy {np.__version__}, {os.cpu_count()} CPUs; k = 1..20; times in s, memory = peak RSS above inputs (MiB)"
    )
    print("'~' = original run on the first N queries and extrapolated linearly to all Q")
    header = (
        f"{'case':17s} {'d':>5s} | {'metric':>7s} {'bare mm':>7s} {'m/bare':>6s} {'blocked':>7s} {'m/blk':>6s} | "
        f"{'orig k1-20':>10s} {'orig k1,5,10':>12s} {'orig/m':>6s} {'same':>4s} | "
        f"{'mem m':>6s} {'mem bare':>8s} {'mem orig':>8s}"
    )
    print(header)
    print("-" * len(header))
    for name, n_q, n_c, d in cases:
        base = {"Q": n_q, "C": n_c, "d": d}
        repeat = args.repeat or (3 if n_q * n_c < 100_000_000 else 1)
        best: dict[str, dict] = {}
        for _ in range(repeat):  # alternate, keep the fastest of each: the CPU may be shared
            for method in ("metric", "bare", "bare_blocked"):
                r = run_child({**base, "method": method})
                if method not in best or r["seconds"] < best[method]["seconds"]:
                    best[method] = r
        m, b, bb = best["metric"], best["bare"], best["bare_blocked"]
        orig_s = orig_3 = "-"
        ratio = same = mem_o = "-"
        if not args.no_original:
            o = run_child({**base, "method": "original", "sub": sub})
            scale = n_q / o["Q"]
            t_all = o["t_matmul"] + sum(o["t_k"].values())  # similarity matrix + every k
            t_135 = o["t_matmul"] + sum(o["t_k"][str(k)] for k in (1, 5, 10))
            mark = "~" if scale > 1 else ""
            orig_s = f"{mark}{t_all * scale:.1f}"
            orig_3 = f"{mark}{t_135 * scale:.1f}"
            ratio = f"{t_all * scale / m['seconds']:.1f}x"
            same = "yes" if o["agree"] else "NO"
            mem_o = f"{mark}{_mib(o['peak_extra_mib'] * scale if o['peak_extra_mib'] is not None else None)}"
        print(
            f"{name:17s} {d:5d} | {m['seconds']:7.2f} {b['seconds']:7.2f} {m['seconds'] / b['seconds']:5.2f}x "
            f"{bb['seconds']:7.2f} {m['seconds'] / bb['seconds']:5.2f}x | "
            f"{orig_s:>10s} {orig_3:>12s} {ratio:>6s} {same:>4s} | {_mib(m['peak_extra_mib']):>6s} "
            f"{_mib(b['peak_extra_mib']):>8s} {mem_o:>8s}",
            flush=True,
        )

    if not args.no_sweep:
        n_q, sizes, d = QUICK_SWEEP if args.quick else FULL_SWEEP
        print(f"\ncandidate sweep: Q = {n_q}, d = {d}, metric only (working memory must stay flat)")
        print(f"{'C':>10s} {'seconds':>8s} {'mem MiB':>8s} {'total RSS MiB':>14s}")
        for n_c in sizes:
            m = run_child({"Q": n_q, "C": n_c, "d": d, "method": "metric"})
            print(
                f"{n_c:10,d} {m['seconds']:8.2f} {_mib(m['peak_extra_mib']):>8s} {m['peak_total_mib']:14,.0f}",
                flush=True,
            )

    if not args.no_evaluate:
        n_q, n_c, d = QUICK_EVAL if args.quick else FULL_EVAL
        e = run_child({"Q": n_q, "C": n_c, "d": d, "method": "evaluate"})
        t = e["times"]
        print(
            f"\nevaluate wrapper, {n_q:,} x {d} queries vs {n_c:,} candidates (same results: {e['agree']}):"
        )
        for key in ("bare", "core", "compute", "add_batch+compute"):
            print(
                f"  {key:18s} {t[key]:7.2f} s  ({t[key] / t['core']:.2f}x core, {t[key] / t['bare']:.2f}x bare matmul)"
            )


    if not args.no_uncertainty:
        print("\nwhat lovr eval adds to the ranks (B = 1,000 resamples; ratios against the metric, same run)")
        print(f"{'case':17s} | {'metric':>7s} {'top-20':>7s} {'ratio':>6s} | {'CI dir':>7s} {'ratio':>6s} | "
              f"{'CI +slices':>10s} {'slices':>6s} {'ratio':>6s} | verdict")
        for name, n_q, n_c, d in QUICK_UNCERTAINTY if args.quick else FULL_UNCERTAINTY:
            base = {"Q": n_q, "C": n_c, "d": d}
            runs = args.repeat or (3 if n_q * n_c < 100_000_000 else 1)
            m = t = b = None
            for _ in range(runs):  # alternate, keep the fastest of each: the CPU may be shared
                mi, ti, bi = (run_child({**base, "method": x}) for x in ("metric", "top20", "bootstrap"))
                m = mi if m is None or mi["seconds"] < m["seconds"] else m
                t = ti if t is None or ti["t_top"] < t["t_top"] else t
                b = bi if b is None or bi["t_direction"] + bi["t_slices"] < b["t_direction"] + b["t_slices"] else b
            r_top = t["t_top"] / m["seconds"]
            r_dir = b["t_direction"] / m["seconds"]
            r_all = (b["t_direction"] + b["t_slices"]) / m["seconds"]
            ok = r_top <= TOP20_LIMIT and r_all <= BOOTSTRAP_LIMIT and t["agree"]
            verdict = ("ok" if ok else "OVER LIMIT") if not args.quick else "(limits apply to the full sizes)"
            print(f"{name:17s} | {m['seconds']:7.2f} {t['t_top']:7.2f} {r_top:5.2f}x | {b['t_direction']:7.2f} "
                  f"{r_dir:5.2f}x | {b['t_direction'] + b['t_slices']:10.2f} {b['n_slices']:6d} {r_all:5.2f}x | "
                  f"{verdict} (limits {TOP20_LIMIT}x, {BOOTSTRAP_LIMIT}x; same ranks: {t['agree']})", flush=True)


if __name__ == "__main__":
    main()
