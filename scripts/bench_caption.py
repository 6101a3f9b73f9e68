"""Captioning throughput on this machine: decode/preprocess vs generation time, and the gain of the
prefetching decode pool (on vs off), measured in the same run.

CPU (default): a tiny random Qwen2.5-VL built locally (lovr_hf.tiny), so generation is cheap and the
decode share is large -- the worst case for overlap. With ``--model-path`` on a GPU machine the same
script measures a real model (``--batch-sizes 1,8,16``).

    python scripts/bench_caption.py            # CPU, tiny model
    python scripts/bench_caption.py --model-path Qwen/Qwen2.5-VL-3B-Instruct --batch-sizes 1,8,16 --device cuda
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from lovr_hf import schema
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.demo.samples import make_sample_video
from lovr_hf.repo import BenchmarkRepo


def make_clips(root: Path, n_clips: int, width: int, height: int) -> BenchmarkRepo:
    src = root / "src.mp4"
    fps = 24
    if not src.exists():
        make_sample_video(src, n_clips * 10.0, scene_len_s=10.0, width=width, height=height, fps=fps, seed=0)
    repo = BenchmarkRepo(root / "lovr")
    rows = []
    for k in range(1, n_clips + 1):
        s, e = (k - 1) * 10 * fps, k * 10 * fps
        rows.append({"video_id": "v", "clip_id": schema.clip_id_for("v", k), "slice_num": k, "start_time": s / fps,
                     "end_time": e / fps, "start_frame": s, "end_frame": e, "num_frames": e - s, "fps": float(fps),
                     "path": str(src), "frame_offset": s, "clip_mode": "virtual", "status": "ok", "error": None})
    repo.write(schema.CLIPS, rows)
    return repo


def run_once(root: Path, model: str, batch_size: int, workers: int, device: str, max_new_tokens: int) -> dict:
    repo = BenchmarkRepo(root / f"run-b{batch_size}-w{workers}")
    repo.write(schema.CLIPS, BenchmarkRepo(root / "lovr").read(schema.CLIPS))
    cfg = CaptionConfig(backend="transformers", model_path=model, do_sample=False, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, decode_workers=workers, device=device,
                        dtype="float32" if device == "cpu" else "auto")
    t0 = time.perf_counter()
    res = caption(repo, cfg)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **res.stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=None, help="default: a tiny random Qwen2.5-VL built locally")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--batch-sizes", default="4")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode (alternating); the fastest is kept")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    w, h = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="lovr-bench-caption-") as tmp:
        root = Path(tmp)
        model = args.model_path
        if model is None:
            from lovr_hf.tiny import build_tiny_qwen25vl

            model = build_tiny_qwen25vl(root / "tiny-qwen")
        make_clips(root, args.clips, w, h)
        print(f"{args.clips} clips of 10 s at {args.size}, model {model}, device {args.device}")
        print(f"{'batch':>5} {'prefetch':>8} {'wall s':>8} {'clips/s':>8} {'tok/s':>8} {'decode s':>9} "
              f"{'waited s':>9} {'generate s':>10}")
        for b in (int(x) for x in args.batch_sizes.split(",")):
            run_once(root, model, b, 2, args.device, args.max_new_tokens)  # warm-up (model load, caches): not timed
            for sub in root.glob(f"run-b{b}-*"):
                shutil.rmtree(sub)
            rows: dict[int, dict] = {}
            for _rep in range(args.repeat):  # alternate off/on; keep each mode's fastest run
                for workers in (0, 2):  # off: decode inline in the model loop; on: 2 threads ahead
                    for sub in root.glob(f"run-b{b}-*"):
                        shutil.rmtree(sub)
                    r = run_once(root, model, b, workers, args.device, args.max_new_tokens)
                    if workers not in rows or r["wall_s"] < rows[workers]["wall_s"]:
                        rows[workers] = r
            for workers, r in sorted(rows.items()):
                print(f"{b:>5} {'on' if workers else 'off':>8} {r['wall_s']:>8.2f} {r['clips'] / r['wall_s']:>8.2f} "
                      f"{r.get('tokens_per_s', 0):>8.1f} {r['decode_s']:>9.2f} {r['decode_wait_s']:>9.2f} "
                      f"{r['generate_s']:>10.2f}")
            print(f"      prefetch gain (off/on wall time): {rows[0]['wall_s'] / rows[2]['wall_s']:.2f}x")


if __name__ == "__main__":
    main()
