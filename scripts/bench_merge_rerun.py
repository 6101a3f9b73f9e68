"""Cost of a merge RERUN at LoVR scale (467 videos, 40,804 clip captions), against a fresh run in the same run.

Three timings of ``lovr merge`` (library call, the deterministic ``PromptLLM`` of ``lovr_hf.backends.standins.chat_llms``, so the LLM costs nothing and
what is measured is the engine: inputs, digests, resume, gather):

1. fresh: every cluster and video caption computed;
2. rerun, nothing changed: every unit reused (the engine work a user pays on every ``lovr run``);
3. rerun after one clip caption of one video changed: 1 cluster and 1 video caption recomputed.

Each rerun is printed as a ratio of the fresh run, with the limit it should stay under (``--limit``,
default 0.25: a rerun with nothing to do must cost a small fraction of doing the work).

    python scripts/bench_merge_rerun.py              # LoVR scale
    python scripts/bench_merge_rerun.py --quick      # 47 videos, ~4k captions
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from lovr_hf import schema
from lovr_hf.merge.config import MergeConfig
from lovr_hf.merge.stage import merge
from lovr_hf.repo import BenchmarkRepo

WORDS = ("man woman child dog car street house table window door light red blue green walks runs opens "
         "looks holds turns sits stands camera slowly quickly bright dark room garden river tree sky").split()


def caption_text(rng: random.Random, chars: int) -> str:
    paragraphs, n = [], 0
    while n < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
        paragraphs.append(sentence)
        n += len(sentence)
    return "\n".join(" ".join(paragraphs[i:i + 3]) for i in range(0, len(paragraphs), 3))


def build(root: Path, videos: int, clips: int, chars: int, seed: int = 0) -> BenchmarkRepo:
    rng = random.Random(seed)
    repo = BenchmarkRepo(root)
    per = [clips // videos + (1 if i < clips % videos else 0) for i in range(videos)]
    clip_rows, cap_rows = [], []
    for v, n in enumerate(per):
        vid = f"video{v:04d}"
        for k in range(1, n + 1):
            cid = schema.clip_id_for(vid, k)
            clip_rows.append({"video_id": vid, "clip_id": cid, "slice_num": k, "start_time": 10.0 * (k - 1),
                              "end_time": 10.0 * k, "start_frame": 300 * (k - 1), "end_frame": 300 * k,
                              "num_frames": 300, "fps": 30.0, "path": f"/videos/{vid}.mp4", "frame_offset": 300 * (k - 1),
                              "clip_mode": "virtual", "status": "ok", "error": None})
            cap_rows.append({"clip_id": cid, "video_id": vid, "slice_num": k, "caption": caption_text(rng, chars),
                             "model": "m", "prompt_hash": "h", "quality_score": None, "attempts": 1,
                             "num_frames_used": 10, "settings": "{}", "status": "ok", "error": None})
    repo.write(schema.CLIPS, clip_rows)
    repo.write(schema.CLIP_CAPTIONS, cap_rows)
    return repo


def timed(repo: BenchmarkRepo, cfg: MergeConfig) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = merge(repo, cfg)
    return time.perf_counter() - t0, res.processed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=467)
    ap.add_argument("--clips", type=int, default=40_804)
    ap.add_argument("--caption-chars", type=int, default=600, help="characters per clip caption")
    ap.add_argument("--num-workers", type=int, default=8)
    ap.add_argument("--limit", type=float, default=0.25, help="rerun / fresh ratio to stay under")
    ap.add_argument("--quick", action="store_true", help="a tenth of the scale")
    ap.add_argument("--keep", default=None, help="build the repo here and keep it")
    args = ap.parse_args()
    if args.quick:
        args.videos, args.clips = args.videos // 10, args.clips // 10
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_merge_"))
    try:
        t0 = time.perf_counter()
        repo = build(root / "lovr", args.videos, args.clips, args.caption_chars)
        print(f"built {args.clips} clip captions of {args.videos} videos in {time.perf_counter() - t0:.1f}s")
        cfg = MergeConfig(llm="lovr_hf.backends.standins.chat_llms:PromptLLM", num_workers=args.num_workers)
        fresh, n_fresh = timed(repo, cfg)
        same, n_same = timed(repo, cfg)
        caps = repo.read_table(schema.CLIP_CAPTIONS).to_pylist()
        caps[5]["caption"] = caps[5]["caption"] + "\nA new sentence about the red door."
        repo.write(schema.CLIP_CAPTIONS, caps)
        one, n_one = timed(repo, cfg)
        print(f"{'run':<34} {'wall s':>8} {'units':>7} {'x fresh':>8}")
        print(f"{'fresh (all computed)':<34} {fresh:8.2f} {n_fresh:7d} {1.0:8.3f}")
        for label, t, n in (("rerun, nothing changed", same, n_same), ("rerun, one video changed", one, n_one)):
            ok = "ok" if t / fresh <= args.limit else "OVER"
            print(f"{label:<34} {t:8.2f} {n:7d} {t / fresh:8.3f}  (limit {args.limit}: {ok})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
