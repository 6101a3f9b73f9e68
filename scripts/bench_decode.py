"""Decoding never starves the model: the caption and eval decode paths against the sequential-decode limit.

Zero-cost plug-in models (``NullEmbedder``, ``NullCaptioner`` below, loaded as ``bench_decode:Class``) make
decoding the only work, on generated videos cut into virtual clips at their known scene cuts. Every figure is
a ratio to a limit measured IN THE SAME RUN, the runs interleaved and the fastest of ``--repeat`` kept:

* limit = ONE sequential PyAV decode of the file (FFmpeg frame threads on) that converts exactly the frames
  asked for -- no lovr_hf code involved;
* caption path: the frames of every clip by the original rule (min(64, max(8, seconds)), frames.py) through
  :class:`lovr_hf.video.decode_plan.ClipDecoder` (the API the caption stage uses), in batches of 8 clips; and, for
  comparison, ``lovr caption``'s stage as it is in this checkout (``caption()`` in-process);
* eval path: ``lovr eval --encode_video --interval 10`` in-process (``embed(..., text=False)``), against
  two limits: converting every 10th frame (the issue's) and converting exactly the frames the plan needs
  (clip strides restart at every clip, the video stride runs on: about twice as many frames);
* peak RSS of the ``lovr eval --encode_video`` command against video length (a fresh process each), and the
  command's start-up (a 2 s video), ``lovr --help`` and ``lovr info``;
* decode workers as threads vs processes on four sources (frames handed to the consumer either way).

    python scripts/bench_decode.py            # 10 min 360p, 2 min 1080p, RSS at 1/5/20 min (~15 min on 2 cores)
    python scripts/bench_decode.py --quick    # 2 min 360p, 30 s 1080p, RSS at 1/2/5 min
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np

from lovr_hf.backends.base import Captioner, Embedder, GenerationParams

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# ---- zero-cost models ----------------------------------------------------------------------------------------


class NullEmbedder(Embedder):
    """Constant unit vectors: the model costs nothing, so the stage runs at the speed of its decoding."""

    name = "null"

    def __init__(self, **_: Any) -> None:
        pass

    def _ones(self, n: int) -> np.ndarray:
        v = np.zeros((n, 8), np.float32)
        v[:, 0] = 1.0
        return v

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self._ones(len(texts))

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        return self._ones(len(frames))


class NullCaptioner(Captioner):
    name = "null"

    def __init__(self, **_: Any) -> None:
        self.last_stats: dict[str, Any] = {}

    def caption(self, batch: Sequence[np.ndarray], prompt: dict[str, str], params: GenerationParams) -> list[str]:
        return ["a clip"] * len(batch)


# ---- inputs --------------------------------------------------------------------------------------------------


def loop_video(src: Path, dst: Path, times: int) -> None:
    """``times`` copies of ``src`` back to back by remuxing its packets (no re-encode): a long video for the
    cost of a short one, decoding exactly as expensive per frame."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        pk = [(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe) for p in inp.demux(ist) if p.size]
        span = max(p[1] + (p[3] or 0) for p in pk) - min(p[1] for p in pk)
        for k in range(times):
            for data, pts, dts, dur, key in pk:
                q = av.Packet(data)
                q.pts, q.dts, q.duration, q.time_base, q.is_keyframe = pts + k * span, dts + k * span, dur, \
                    ist.time_base, key
                q.stream = ost
                out.mux(q)


def make_source(folder: Path, minutes: float, width: int, height: int, base_s: float = 60.0) -> tuple[Path, list]:
    """A ``minutes``-long video (a generated ``base_s`` piece looped) and its scene ranges (the clips)."""
    from lovr_hf.demo.samples import make_sample_video

    base_s = min(base_s, minutes * 60)
    base = folder / f"base-{width}x{height}-{base_s:g}.mp4"
    gt_file = base.with_suffix(".json")
    if not base.exists():
        gt = make_sample_video(base, base_s, width=width, height=height, fps=24, seed=3, min_scene_s=min(6.0, base_s / 2))
        gt_file.write_text(json.dumps(gt.scene_ranges()))
    ranges = json.loads(gt_file.read_text())
    times = max(1, round(minutes * 60 / base_s))
    path = folder / f"v-{width}x{height}-{minutes:g}min.mp4"
    if not path.exists():
        if times == 1:
            shutil.copy(base, path)
        else:
            loop_video(base, path, times)
    n = ranges[-1][1]
    return path, [(a + k * n, b + k * n) for k in range(times) for a, b in ranges]


def clip_rows(path: Path, ranges: list, fps: float = 24.0, vid: str = "v") -> list[dict]:
    from lovr_hf import schema

    return [{"video_id": vid, "clip_id": schema.clip_id_for(vid, k), "slice_num": k, "start_time": a / fps,
             "end_time": b / fps, "start_frame": a, "end_frame": b, "num_frames": b - a, "fps": fps,
             "path": str(path), "frame_offset": a, "clip_mode": "virtual", "status": "ok", "error": None}
            for k, (a, b) in enumerate(ranges, start=1)]


def caption_indices(rows: list[dict]) -> dict[str, list[int]]:
    from lovr_hf.video.frames import caption_frame_plan

    return {r["clip_id"]: list(caption_frame_plan(r["num_frames"], r["num_frames"] / r["fps"]).indices) for r in rows}


def eval_frames(rows: list[dict], interval: int) -> list[int]:
    """File frames the eval plan converts: clip strides restart per clip, the video stride runs on."""
    from lovr_hf.evaluation.visual_plan import sample_video

    sel_c, sel_v = sample_video([r["num_frames"] for r in rows], interval=interval)
    return sorted({r["frame_offset"] + i for r, a, b in zip(rows, sel_c, sel_v) for i in set(a) | set(b)})


# ---- measurements ----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall s, CPU s of this process, all threads) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def limit_decode(path: Path, wanted: Sequence[int]) -> int:
    """THE LIMIT: one sequential decode, converting exactly ``wanted`` (file frame indices) to RGB."""
    want = set(int(i) for i in wanted)
    last = max(want)
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            if i in want:
                f.to_ndarray(format="rgb24")
                n += 1
            if i >= last:
                break
    return n


def caption_api(rows: list[dict], idx: dict[str, list[int]], workers: int | None) -> int:
    from lovr_hf.video.decode_plan import ClipDecoder

    cf = ClipDecoder(rows, idx, workers=workers)
    keys = [r["clip_id"] for r in rows]
    n = 0
    for i in range(0, len(keys), 8):
        for frames, err, _ in cf.get(keys[i : i + 8]):
            assert err is None, err
            n += len(frames)
    cf.close()
    return n


def caption_stage(root: Path, rows: list[dict]) -> None:
    from lovr_hf import schema
    from lovr_hf.caption.config import CaptionConfig
    from lovr_hf.caption.stage import caption
    from lovr_hf.repo import BenchmarkRepo

    shutil.rmtree(root, ignore_errors=True)
    repo = BenchmarkRepo(root)
    repo.write(schema.CLIPS, rows)
    res = caption(repo, CaptionConfig(backend="bench_decode:NullCaptioner", batch_size=8))
    assert res.stats.get("ok", 0) == len(rows), res.stats


def eval_stage(root: Path, rows: list[dict], workers: int | None = None) -> None:
    from lovr_hf import schema
    from lovr_hf.evaluation.embed import embed
    from lovr_hf.evaluation.models import EmbedConfig
    from lovr_hf.repo import BenchmarkRepo

    shutil.rmtree(root, ignore_errors=True)
    repo = BenchmarkRepo(root)
    repo.write(schema.CLIPS, rows)
    cfg = EmbedConfig(model="bench_decode:NullEmbedder", interval=10, decode_workers=workers)  # type: ignore[arg-type]
    embed(repo, cfg, text=False)
    assert set(repo.read_table(schema.embeddings_config("bench_decode__NullEmbedder"))["status"].to_pylist()) == {"ok"}


def best_of(repeat: int, cases: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, float]]:
    """Run the cases interleaved ``repeat`` times; keep each one's fastest (wall, CPU)."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, fn in cases.items():
            w, c = timed(fn)
            if name not in best or w < best[name][0]:
                best[name] = (w, c)
    return best


def path_table(title: str, best: dict[str, tuple[float, float]], limits: dict[str, str]) -> None:
    print(f"\n{title}")
    print(f"  {'case':<46} {'wall s':>7} {'CPU s':>7} {'limit/case wall':>15} {'CPU':>6}")
    for name, (w, c) in best.items():
        lim = limits.get(name)
        if lim:
            ratio = f"{best[lim][0] / w:>14.2f}x {best[lim][1] / c:>5.2f}x"
        else:
            ratio = f"{'(limit)':>15} {'':>6}"
        print(f"  {name:<46} {w:>7.2f} {c:>7.2f} {ratio}")


# ---- the CLI in a fresh process: start-up and peak RSS --------------------------------------------------------------


#: runs ``lovr ARGS`` and, at exit, reports the process's own peak RSS (VmHWM of /proc/self/status: the
#: memory of THIS process image; ``wait4``'s ru_maxrss would start from the parent's RSS at fork)
_WRAP = """
import sys
from lovr_hf.cli.app import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code or 0
finally:
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            print('__VMHWM__', int(line.split()[1]), file=sys.stderr, flush=True)
sys.exit(code)
"""


def run_cli(args: list[str], first_line: bool = False) -> dict[str, float]:
    """Run ``lovr ARGS`` in a fresh process: wall time, its peak RSS (MiB) and, optionally, the time to its
    first log line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WRAP, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    first = float("nan")
    rss_kb = 0
    tail: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        if first != first and " INFO " in line:
            first = time.perf_counter() - t0
        if line.startswith("__VMHWM__"):
            rss_kb = int(line.split()[1])
        tail = (tail + [line])[-20:]
    code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"lovr {' '.join(args)} failed:\n{''.join(tail)}")
    out = {"wall_s": wall, "rss_mib": rss_kb / 1024}
    if first_line:
        out["first_log_s"] = first
    return out


def cli_eval(repo: Path, rows: list[dict]) -> dict[str, float]:
    from lovr_hf import schema
    from lovr_hf.repo import BenchmarkRepo

    shutil.rmtree(repo, ignore_errors=True)
    BenchmarkRepo(repo).write(schema.CLIPS, rows)
    return run_cli(["eval", "--repo", str(repo), "--model", "bench_decode:NullEmbedder", "--encode_video",
                    "--interval", "10"], first_line=True)


# ---- threads vs processes ----------------------------------------------------------------------------------------


def _decode_part(args: tuple[str, list[int]]) -> list[np.ndarray]:
    from lovr_hf.video.reader import iter_targets

    path, targets = args
    return [f for _, f in iter_targets(path, targets)]


def workers_table(path: Path, n_frames: int, repeat: int) -> None:
    """Four quarters of one file decoded by 2 workers, every 10th frame converted and handed back."""
    q = n_frames // 4
    parts = [(str(path), list(range(k * q, (k + 1) * q, 10))) for k in range(4)]
    ctx = __import__("multiprocessing").get_context("spawn")

    def threads() -> None:
        with ThreadPoolExecutor(2) as ex:
            for frames in ex.map(_decode_part, parts):
                assert frames

    def processes() -> None:
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            for frames in ex.map(_decode_part, parts):
                assert frames

    best = best_of(repeat, {"threads (2)": threads, "processes (2, spawn, frames pickled back)": processes})
    print("\nDecode workers: 4 quarters of the 360p video, 2 workers, every 10th frame returned to the consumer")
    for name, (w, c) in best.items():
        print(f"  {name:<44} {w:>7.2f} s wall {c:>7.2f} s CPU (this process)")
    print(f"  threads / processes wall: {best['processes (2, spawn, frames pickled back)'][0] / best['threads (2)'][0]:.2f}x")


# ---- main --------------------------------------------------------------------------------------------------------


def bench_resolution(tmp: Path, label: str, minutes: float, w: int, h: int, repeat: int, stage: bool) -> None:
    from lovr_hf.video.frame_index import build_index
    from lovr_hf.video.reader import clear_cache

    src, ranges = make_source(tmp, minutes, w, h)
    rows = clip_rows(src, ranges)
    build_index(src)
    idx = caption_indices(rows)
    cap_frames = sorted({r["frame_offset"] + i for r in rows for i in idx[r["clip_id"]]})
    n_total = ranges[-1][1]
    ev_exact = eval_frames(rows, 10)
    print(f"\n=== {label}: {minutes:g} min {w}x{h}, {len(rows)} virtual clips, {n_total} frames ===")
    cases: dict[str, Callable[[], Any]] = {
        "limit: sequential decode, caption frames": lambda: limit_decode(src, cap_frames),
        "ClipDecoder API (caption), auto workers": lambda: caption_api(rows, idx, None),
    }
    if stage:
        cases["lovr caption stage (this checkout)"] = lambda: caption_stage(tmp / "cap-repo", rows)
    best = best_of(repeat, cases)
    path_table(f"Caption: {len(cap_frames)} frames by the original rule", best,
               {k: "limit: sequential decode, caption frames" for k in best if not k.startswith("limit")})
    clear_cache()
    build_index(src)
    short, short_ranges = make_source(tmp, 2 / 60, w, h, base_s=2.0)
    short_rows = clip_rows(short, short_ranges)
    build_index(short)
    lim10 = "limit: sequential decode, every 10th frame"
    limx = "limit: sequential decode, the plan's frames"
    ev = "eval --encode_video --interval 10"
    cases = {
        lim10: lambda: limit_decode(src, range(0, n_total, 10)),
        limx: lambda: limit_decode(src, ev_exact),
        ev: lambda: eval_stage(tmp / "ev-repo", rows),
        "eval, 2 s video (the stage's fixed cost)": lambda: eval_stage(tmp / "ev-short", short_rows),
    }
    best = best_of(repeat, cases)
    path_table(f"Eval: {len(ev_exact)} frames (clip and video strides), {len(range(0, n_total, 10))} every 10th",
               best, {ev: lim10})
    fixed = best["eval, 2 s video (the stage's fixed cost)"]
    work = (best[ev][0] - fixed[0], best[ev][1] - fixed[1])
    print(f"  fixed cost subtracted (repo writes, card, plots): {best[lim10][0] / work[0]:.2f}x wall, "
          f"{best[lim10][1] / work[1]:.2f}x CPU of the every-10th limit; "
          f"{best[limx][0] / work[0]:.2f}x / {best[limx][1] / work[1]:.2f}x of the plan's-frames limit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter videos (a few minutes in all)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per case; the fastest is kept")
    ap.add_argument("--no-stage", action="store_true", help="skip the caption stage of this checkout")
    ap.add_argument("--only", default="360p,1080p,rss,startup,workers", help="comma-separated parts to run")
    ap.add_argument("--keep", default=None, help="folder for the generated videos (reused between runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(HERE))  # bench_decode:NullEmbedder for the in-process stages
    parts = set(args.only.split(","))
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, PyAV {av.__version__}")
    tmp_ctx = tempfile.TemporaryDirectory(prefix="lovr-bench-decode-") if args.keep is None else None
    tmp = Path(args.keep or tmp_ctx.name)  # type: ignore[union-attr]
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if "360p" in parts:
            bench_resolution(tmp, "360p", 2 if args.quick else 10, 640, 360, args.repeat, not args.no_stage)
        if "1080p" in parts:
            bench_resolution(tmp, "1080p", 0.5 if args.quick else 2, 1920, 1080, max(2, args.repeat - 1),
                             not args.no_stage)
        if "workers" in parts:
            src, ranges = make_source(tmp, 2 if args.quick else 10, 640, 360)
            workers_table(src, ranges[-1][1], args.repeat)
        if "startup" in parts or "rss" in parts:
            print("\nThe lovr eval --encode_video --interval 10 command (a fresh process each)")
            print(f"  {'video':<24} {'clips':>6} {'wall s':>8} {'first log s':>11} {'peak RSS MiB':>13}")
            short = make_source(tmp, 2 / 60, 640, 360, base_s=2.0)
            lengths = [(2 / 60, short)]
            if "rss" in parts:
                for m in ((1, 2, 5) if args.quick else (1, 5, 20)):
                    lengths.append((m, make_source(tmp, m, 640, 360)))
            for m, (src, ranges) in lengths:
                r = cli_eval(tmp / "cli-repo", clip_rows(src, ranges))
                name = "2 s (start-up)" if m < 1 else f"{m:g} min 640x360"
                print(f"  {name:<24} {len(ranges):>6} {r['wall_s']:>8.2f} {r['first_log_s']:>11.2f} {r['rss_mib']:>13.0f}")
        if "startup" in parts:
            print("\nStart-up of other commands")
            for label, cmd in (("lovr --help", ["--help"]), ("lovr eval --help", ["eval", "--help"]),
                               ("lovr info", ["info", "--repo", str(tmp / "cli-repo")])):
                best = min((run_cli(cmd) for _ in range(args.repeat)), key=lambda r: r["wall_s"])
                print(f"  {label:<24} {best['wall_s']:>6.2f} s  {best['rss_mib']:>6.0f} MiB")
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    print(f"\nload at the end {os.getloadavg()[0]:.1f}; self CPU {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.0f} s")


if __name__ == "__main__":
    main()
