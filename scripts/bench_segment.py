"""Benchmark of the segmentation stage: scene-cut detection, and the cost of segmenting a whole video.

Generates (once, cached) synthetic videos with known cuts and an AAC track via ``lovr_hf.demo.samples``:
a 10-minute 640x360 24 fps video with ~60 cuts and a 2-minute 1280x720 one (``--quick``: 2 minutes and
30 seconds). Then measures, on each file, in one run:

* raw PyAV decode (frame threads, every frame, nothing else): the speed ceiling of detection;
* PySceneDetect 0.7 as the original LoVR script ran it (OpenCV decoding, automatic downscale,
  ``ContentDetector(threshold=34, min_scene_len=int(5 s * fps))``), and with a fixed downscale 3 on its
  PyAV backend (what the original script *meant* with ``set_downscale_factor(3)``);
* every lovr_hf detector backend at its defaults (automatic downscale), and ``content`` with the old
  fixed downscale 3 (``transnetv2`` only with ``--with-transnet``: it is slow on CPU).

For each: frames/s (wall clock, best of ``--repeat``), CPU microseconds per frame (all threads; less
sensitive to other load on a shared machine), the ratio to the fastest stock PySceneDetect run and to
raw decode, and cut precision/recall/F1 against the ground truth (hard cuts, +/- 1 frame), plus the
agreement with ContentDetector's own cuts.

Then, on the first file, segmenting one video end to end (cuts + clip files, CRF 22 with audio):

* the limit: one ffmpeg pass re-encoding the whole file with the same settings (one decode + one encode);
* lovr_hf ``exact`` in one pass (the default: cut while detecting), and in two passes (``--two-pass``:
  detect, then decode again to cut), each as a ratio to the limit, and one pass / two passes;
* the original: PySceneDetect's detection plus ``split_video_ffmpeg`` (one ffmpeg run per scene), if an
  ffmpeg binary is available (``imageio-ffmpeg``);
* ``copy`` and ``virtual`` clips.

Numbers depend on the machine and its load: the script prints both.

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
from lovr_hf.demo.samples import GroundTruth, make_sample_video
from lovr_hf.video.reader import clear_cache, probe
from lovr_hf.video.scenes import cut_prf, scenes_from_cuts, seconds_to_frames


def load_or_make(cache: Path, name: str, duration_s: float, width: int, height: int, fps: int,
                 num_cuts: int, seed: int) -> GroundTruth:
    """The benchmark videos are deterministic: reuse a cached copy when its ground truth is there."""
    video = cache / f"{name}_{width}x{height}_{fps}fps_{int(duration_s)}s_{num_cuts}cuts_s{seed}_aac.mp4"
    truth = video.with_suffix(".truth.json")
    if video.exists() and truth.exists():
        return GroundTruth.load_json(truth)
    t0 = time.perf_counter()
    gt = make_sample_video(video, duration_s, num_cuts=num_cuts, width=width, height=height, fps=fps, seed=seed,
                           audio=True, audio_rate=44100, audio_layout="stereo")
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


def stock_pyscenedetect(path: str, backend: str, downscale: int | None) -> tuple[int, list[int]]:
    """PySceneDetect 0.7 with the original's detector: the SceneManager's automatic downscale (``None``:
    what the original really ran with) or a fixed factor."""
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(path, backend=backend)
    manager = SceneManager()
    if downscale is not None:
        manager.auto_downscale = False
        manager.downscale = downscale
    manager.add_detector(ContentDetector(threshold=34.0, min_scene_len=seconds_to_frames(5.0, video.frame_rate)))
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


def _cpu() -> float:
    from lovr_hf.video.clipper import _cpu_seconds

    return _cpu_seconds()


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    clear_cache()
    c0, t0 = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu() - c0


def bench_segment_video(video: Path, truth: GroundTruth, out_dir: Path) -> list[dict]:
    """Segment one video end to end (cuts + clip files) every way, against one whole-file re-encode."""
    import shutil
    import subprocess

    from lovr_hf.backends.detectors.fast import FastContentDetector
    from lovr_hf.segment.detect_and_cut import detect_and_cut
    from lovr_hf.video.clipper import cut_clips, ffmpeg_exe

    path = str(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    det = FastContentDetector()
    cuts = det.detect(path)
    ranges = scenes_from_cuts(cuts, truth.num_frames, truth.fps, 5.0)

    def fresh(name: str) -> Path:
        d = out_dir / name
        shutil.rmtree(d, ignore_errors=True)
        return d

    def two_pass() -> None:
        r = scenes_from_cuts(det.detect(path), truth.num_frames, truth.fps, 5.0)
        cut_clips(path, r, fresh("two"), "v")

    timings: dict[str, tuple[float, float]] = {}
    exe = ffmpeg_exe()
    if exe:
        cmd = [exe, "-v", "error", "-y", "-i", path, "-map", "0:v:0", "-map", "0:a?", "-c:v", "libx264",
               "-preset", "veryfast", "-crf", "22", "-c:a", "aac", str(out_dir / "reencode.mp4")]
        timings["limit: ffmpeg re-encode of the whole file"] = _time(lambda: subprocess.run(cmd, check=True))
    timings["lovr_hf exact, one pass (default)"] = _time(
        lambda: detect_and_cut(path, fresh("one"), "v", det, min_clip_s=5.0, preset="veryfast", crf=22))
    timings["lovr_hf exact, two passes (--two-pass)"] = _time(two_pass)
    if exe:
        from scenedetect import FrameTimecode, split_video_ffmpeg

        def original() -> None:
            _, c = stock_pyscenedetect(path, "opencv", None)
            bounds = list(zip([0, *c], [*c, truth.num_frames], strict=True))
            scenes = [(FrameTimecode(a, truth.fps), FrameTimecode(b, truth.fps)) for a, b in bounds]
            split_video_ffmpeg(path, scenes, output_dir=fresh("original"))

        timings["original: PySceneDetect + split_video_ffmpeg"] = _time(original)
    timings["lovr_hf copy"] = _time(lambda: cut_clips(path, ranges, fresh("copy"), "v", mode="copy"))
    timings["lovr_hf virtual"] = _time(lambda: cut_clips(path, ranges, fresh("virtual"), "v", mode="virtual"))
    one = sorted((out_dir / "one" / "v").glob("*.mp4"))
    frames = sum(probe(str(p)).num_frames for p in one)

    limit = timings.get("limit: ffmpeg re-encode of the whole file")
    print(f"\n== segmenting one video: {Path(video).name}, {len(ranges)} clips, CRF 22 veryfast, AAC audio")
    print(f"  {'method':<46} {'wall s':>8} {'CPU s':>8} {'wall / limit':>13} {'CPU / limit':>12}")
    rows = []
    for label, (w, c) in timings.items():
        rw = f"{w / limit[0]:.2f}x" if limit else "-"
        rc = f"{c / limit[1]:.2f}x" if limit else "-"
        print(f"  {label:<46} {w:>8.2f} {c:>8.2f} {rw:>13} {rc:>12}")
        rows.append({"file": Path(video).name, "method": label, "wall_s": w, "cpu_s": c, "clips": len(ranges)})
    w1, c1 = timings["lovr_hf exact, one pass (default)"]
    w2, c2 = timings["lovr_hf exact, two passes (--two-pass)"]
    print(f"  one pass / two passes: {w1 / w2:.2f}x wall, {c1 / c2:.2f}x CPU; one-pass clips hold {frames} of "
          f"{truth.num_frames} frames ({'frame-exact' if frames == truth.num_frames else 'MISMATCH'})")
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
        ("PySceneDetect as the original (OpenCV, auto downscale)", "stock",
         lambda: stock_pyscenedetect(path, "opencv", None)),
        ("PySceneDetect, PyAV, downscale 3", "stock",
         lambda: stock_pyscenedetect(path, "pyav", 3)),
    ]
    backends = [("pyscenedetect", {}), ("content", {}), ("content", {"downscale": 3}),
                ("content", {"flash_guard": True}), ("adaptive", {}), ("adaptive-fast", {})]
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
    if importlib.util.find_spec("lovr_hf.segment.detect_and_cut") is not None:
        gt = videos[0]
        rows.extend(bench_segment_video(Path(gt.path), gt, args.cache_dir / "clips"))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
