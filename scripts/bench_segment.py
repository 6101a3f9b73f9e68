"""Benchmark of the segmentation stage: scene-cut detection speed and accuracy and the three clip modes.

Generates (once, cached) synthetic videos with known cuts via ``lovr_hf.samples``:
a 10-minute 640x360 24 fps video with ~60 cuts and a 2-minute 1280x720 one (``--quick``: 2 minutes and
30 seconds). Then measures, on each file, in one run:

* raw PyAV decode (frame threads, every frame, nothing else): the speed ceiling;
* PySceneDetect 0.7 ``detect()`` with ``ContentDetector(threshold=34, min_scene_len=5 s)``: default OpenCV
  backend (auto downscale), and its PyAV backend with downscale 3 as LoVR ran it (plus OpenCV with
  downscale 3, which is the ``pyscenedetect`` backend);
* every lovr_hf detector backend (``transnetv2`` only with ``--with-transnet``: it is slow on CPU).

For each: frames/s (wall clock, best of ``--repeat``), CPU microseconds per frame (all threads; less
sensitive to other load on a shared machine), the ratio to the fastest stock PySceneDetect run and to
raw decode, and cut precision/recall/F1 against the ground truth (hard cuts, +/- 1 frame), plus the
agreement with ContentDetector's own cuts. Numbers depend on the machine and its load: the script
prints both.

    python scripts/bench_segment.py [--quick] [--repeat 2] [--cache-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from lovr_hf.backends.base import DETECTORS
from lovr_hf.samples import GroundTruth, make_sample_video
from lovr_hf.scenes import cut_prf, seconds_to_frames
from lovr_hf.video import probe


def load_or_make(cache: Path, name: str, duration_s: float, width: int, height: int, fps: int,
                 num_cuts: int, seed: int) -> GroundTruth:
    """The benchmark videos are deterministic: reuse a cached copy when its ground truth is there."""
    video = cache / f"{name}_{width}x{height}_{fps}fps_{int(duration_s)}s_{num_cuts}cuts_s{seed}.mp4"
    truth = video.with_suffix(".truth.json")
    if video.exists() and truth.exists():
        return GroundTruth.load_json(truth)
    t0 = time.perf_counter()
    gt = make_sample_video(video, duration_s, num_cuts=num_cuts, width=width, height=height, fps=fps, seed=seed)
    took = time.perf_counter() - t0
    print(f"  generated {video.name}: {gt.num_frames} frames in {took:.1f} s ({gt.num_frames / took:.0f} frames/s)")
    gt.save_json(truth)
    return gt


def raw_decode(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        for _ in container.decode(stream):
            n += 1
    return n


def stock_pyscenedetect(path: str, fps: float, backend: str, downscale: int | None) -> tuple[int, list[int]]:
    """PySceneDetect 0.7 as a user would call it: ``detect()`` (auto downscale) or a SceneManager with a
    fixed downscale factor."""
    from scenedetect import ContentDetector, SceneManager, detect, open_video

    detector = ContentDetector(threshold=34.0, min_scene_len=seconds_to_frames(5.0, fps))
    if downscale is None:
        scenes = detect(path, detector, backend=backend, start_in_scene=True)
        n = scenes[-1][1].frame_num - scenes[0][0].frame_num if scenes else 0
    else:
        video = open_video(path, backend=backend)
        manager = SceneManager()
        manager.auto_downscale = False
        manager.downscale = downscale
        manager.add_detector(detector)
        n = manager.detect_scenes(video)
        scenes = manager.get_scene_list(start_in_scene=True)
    first = scenes[0][0].frame_num if scenes else 0
    return n, [s[0].frame_num - first for s in scenes[1:]]


def timed(fn: Callable[[], tuple[int, list[int] | None]], repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        n, cuts = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best["wall_s"]:
            best = {"frames": n, "wall_s": wall, "cpu_s": cpu, "cuts": cuts}
    assert best is not None
    best["fps"] = best["frames"] / best["wall_s"]
    best["cpu_us_per_frame"] = best["cpu_s"] / best["frames"] * 1e6
    return best


def bench_clip_modes(video: Path, truth: GroundTruth, cuts: list[int], out_dir: Path) -> list[dict]:
    """Time the three clip modes (exact, copy, virtual) on the 10-minute video against one ffmpeg
    re-encode pass of the whole file (same encoder settings), and check exact clips are frame-exact."""
    from lovr_hf.clipper import bench_clip_modes as time_modes
    from lovr_hf.clipper import cut_clips
    from lovr_hf.scenes import scenes_from_cuts

    ranges = scenes_from_cuts(cuts, truth.num_frames, truth.fps, 5.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time_modes(str(video), ranges, out_dir)
    exact = cut_clips(str(video), ranges, out_dir / "check", "check", mode="exact")
    frames = sum(probe(c.path).num_frames for c in exact)
    base_w, base_c = t.get("ffmpeg_reencode"), t.get("ffmpeg_reencode_cpu")
    print(f"\n== clip modes: {Path(video).name}, {len(ranges)} clips")
    print(f"  {'mode':<22} {'wall s':>8} {'CPU s':>8} {'wall / ffmpeg':>14} {'CPU / ffmpeg':>13}")
    rows = []
    for mode in ("exact", "copy", "virtual", "ffmpeg_reencode"):
        if mode not in t:
            continue
        w, c = t[mode], t[f"{mode}_cpu"]
        rw = f"{w / base_w:.2f}x" if base_w else "-"
        rc = f"{c / base_c:.2f}x" if base_c else "-"
        print(f"  {mode:<22} {w:>8.2f} {c:>8.2f} {rw:>14} {rc:>13}")
        rows.append({"mode": mode, "wall_s": w, "cpu_s": c, "clips": len(ranges)})
    print(f"  exact clips hold {frames} of {truth.num_frames} frames ({'frame-exact' if frames == truth.num_frames else 'MISMATCH'})")
    return rows


def run_file(gt: GroundTruth, args: argparse.Namespace) -> list[dict]:
    path = gt.path
    rows: list[dict] = []
    truth = gt.hard_cut_frames
    print(f"\n== {Path(path).name}: {gt.width}x{gt.height} {gt.fps:g} fps, {gt.num_frames} frames "
          f"({gt.num_frames / gt.fps / 60:.1f} min), {len(gt.cut_frames)} cuts "
          f"({len(truth)} hard, {len(gt.fade_ranges)} dissolve), flash at {gt.flash_frames}")

    methods: list[tuple[str, str, Callable[[], tuple[int, list[int] | None]]]] = [
        ("raw PyAV decode (threads=AUTO)", "decode", lambda: (raw_decode(path), None)),
        ("PySceneDetect detect(), OpenCV, auto downscale", "stock",
         lambda: stock_pyscenedetect(path, gt.fps, "opencv", None)),
        ("PySceneDetect SceneManager, PyAV, downscale 3", "stock",
         lambda: stock_pyscenedetect(path, gt.fps, "pyav", 3)),
    ]
    backends = [("pyscenedetect", {}), ("content", {}), ("content", {"flash_guard": True}),
                ("adaptive", {}), ("adaptive-fast", {})]
    if args.with_transnet and "transnetv2" in DETECTORS.names():
        backends.append(("transnetv2", {}))
    for name, kwargs in backends:
        det = DETECTORS.create(name, **kwargs)
        label = f"lovr_hf {name}" + "".join(f" {k}={v}" for k, v in kwargs.items())

        def call(det=det) -> tuple[int, list[int]]:
            res = det.analyze(path)
            return res.num_frames, res.cuts

        methods.append((label, "lovr", call))

    results = {}
    for label, kind, fn in methods:
        results[label] = (kind, timed(fn, args.repeat))
    decode_fps = next(r["fps"] for k, r in results.values() if k == "decode")
    decode_cpu = next(r["cpu_us_per_frame"] for k, r in results.values() if k == "decode")
    stock_fps = max(r["fps"] for k, r in results.values() if k == "stock")
    ref_cuts = results["lovr_hf pyscenedetect"][1]["cuts"]

    head = f"{'method':52s} {'fps':>7s} {'cpu us/f':>8s} {'x PySD':>6s} {'x dec':>6s} {'x dec cpu':>9s}  " \
           f"{'P':>5s} {'R':>5s} {'F1':>5s}  {'F1 vs CD':>8s} cuts"
    print(head)
    print("-" * len(head))
    for label, (kind, r) in results.items():
        row = {"file": Path(path).name, "method": label, "kind": kind, **{k: v for k, v in r.items() if k != "cuts"}}
        row["x_pyscenedetect"] = r["fps"] / stock_fps
        row["x_decode"] = r["fps"] / decode_fps
        row["x_decode_cpu"] = decode_cpu / r["cpu_us_per_frame"]
        acc = ""
        if r["cuts"] is not None:
            p, rec, f1 = cut_prf(r["cuts"], truth, tolerance=1)
            parity = cut_prf(r["cuts"], ref_cuts, tolerance=1)[2]
            row.update(precision=p, recall=rec, f1=f1, f1_vs_contentdetector=parity, num_cuts=len(r["cuts"]))
            acc = f"{p:5.3f} {rec:5.3f} {f1:5.3f}  {parity:8.3f} {len(r['cuts'])}"
        print(f"{label:52s} {r['fps']:7.0f} {r['cpu_us_per_frame']:8.0f} {row['x_pyscenedetect']:6.2f} "
              f"{row['x_decode']:6.2f} {row['x_decode_cpu']:9.2f}  {acc}")
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2-minute 360p and 30-second 720p videos")
    ap.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is kept")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "lovr_bench_segment")
    ap.add_argument("--with-transnet", action="store_true", help="also time transnetv2 (slow on CPU)")
    ap.add_argument("--json", type=Path, help="write all rows to this JSON file")
    args = ap.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} (other processes share the CPU: compare ratios, "
          f"not absolute numbers); PyAV {av.__version__}")
    if args.quick:
        specs = [("bench360", 120, 640, 360, 24, 12, 0), ("bench720", 30, 1280, 720, 24, 2, 1)]
    else:
        specs = [("bench360", 600, 640, 360, 24, 60, 0), ("bench720", 120, 1280, 720, 24, 12, 1)]
    videos = [load_or_make(args.cache_dir, *spec) for spec in specs]

    rows: list[dict] = []
    for gt in videos:
        rows.extend(run_file(gt, args))
    if importlib.util.find_spec("lovr_hf.clipper") is not None:
        gt = videos[0]
        fast_cuts = DETECTORS.create("content").detect(gt.path)
        rows.extend(bench_clip_modes(Path(gt.path), gt, fast_cuts, args.cache_dir / "clips"))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
