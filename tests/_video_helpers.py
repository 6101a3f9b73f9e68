"""Test videos whose frames carry their own index (tests/test_video.py, tests/test_decode_plan.py).

Every test video is written here with PyAV; each frame shows its index in binary as 16x16 black/white
blocks (plus a 10-bit complement as a checksum), which survives H.264 compression, so a test can tell
exactly WHICH frame a reader returned.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

W, H, BLOCK = 160, 96, 16


def pattern(i: int) -> np.ndarray:
    """RGB frame whose top three block rows encode ``i`` (20 bits) and ``~i`` (10 bits)."""
    y = np.arange(H)[:, None]
    x = np.arange(W)[None, :]
    a = np.zeros((H, W, 3), np.uint8)
    a[..., 0] = (x * 3 + i * 7) % 256  # moving background, so the encoder has real work
    a[..., 1] = (y * 5 + i * 3) % 256
    a[..., 2] = 128
    bits = [(i >> b) & 1 for b in range(20)] + [((~i) >> b) & 1 for b in range(10)]
    for k, bit in enumerate(bits):
        r, c = divmod(k, 10)
        a[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = 235 if bit else 16
    return a


def frame_number(a: np.ndarray, rotation: int = 0) -> int:
    """Read the index back from a decoded (display-oriented) frame; asserts the checksum."""
    if rotation:
        a = np.rot90(a, -rotation // 90)
    assert a.shape[:2] == (H, W), a.shape
    g = a.astype(np.float32).mean(axis=2)
    bits = []
    for k in range(30):
        r, c = divmod(k, 10)
        blk = g[r * BLOCK + 4 : (r + 1) * BLOCK - 4, c * BLOCK + 4 : (c + 1) * BLOCK - 4]
        bits.append(int(blk.mean() > 128))
    i = sum(b << k for k, b in enumerate(bits[:20]))
    chk = sum(b << k for k, b in enumerate(bits[20:]))
    assert chk == (~i) & 0x3FF, f"unreadable frame pattern ({i}, {chk})"
    return i


def frame_numbers(frames: np.ndarray, rotation: int = 0) -> list[int]:
    return [frame_number(a, rotation) for a in frames]


def make_video(
    path: Path,
    n: int = 240,
    *,
    fps: int = 24,
    rotation: int = 0,
    vfr: bool = False,
    fmt: str | None = None,
    x264: str | None = None,
    gop: int = 24,
) -> Path:
    """H.264 video of ``n`` numbered frames (B-frames on, a key frame every ``gop`` frames)."""
    opts = {"preset": "veryfast", "crf": "18", "g": str(gop)}
    if x264:
        opts["x264-params"] = x264
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=fps, options=opts)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        if vfr:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            s.set_display_rotation(rotation)
        rng = np.random.default_rng(0)
        t = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            if vfr:  # irregular frame durations, 25-69 ms
                f.pts, f.time_base = t, Fraction(1, 1000)
                t += int(rng.integers(25, 70))
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def make_editlist_copy(src: Path, dst: Path, start: int, stop: int) -> Path:
    """Stream copy of frames ``[start, stop)`` the way ``ffmpeg -ss -c copy`` makes it: the file starts at
    the key frame before ``start`` and an MP4 edit list hides that pre-roll (the case decord miscounts)."""
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        vs = c.streams.video[0]
        ost = out.add_stream_from_template(vs)
        step = int(1 / (vs.average_rate * vs.time_base))
        kf = (start // 24) * 24 * step
        shift = start * step
        started = False
        for p in c.demux(vs):
            if p.size == 0 and p.pts is None:
                continue
            started = started or (p.is_keyframe and p.pts == kf)
            if not started:
                continue
            if p.pts >= stop * step and p.dts >= stop * step:
                break
            pts, dts = p.pts, p.dts
            p.stream, p.pts, p.dts = ost, pts - shift, dts - shift
            out.mux(p)
    return dst


def decode_all(path: Path) -> list[np.ndarray]:
    """Ground truth: plain PyAV decode of every frame, no lovr_hf code involved."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def numbered_videos(d: Path) -> dict[str, Path]:
    """The test videos of every kind the readers must handle, frames numbered."""
    v = {
        "cfr": make_video(d / "cfr.mp4", 240),
        "vfr": make_video(d / "vfr.mp4", 120, vfr=True),
        "rot90": make_video(d / "rot90.mp4", 60, rotation=90),
        "opengop": make_video(d / "opengop.mp4", 120, x264="open-gop=1"),
        "mkv": make_video(d / "cfr.mkv", 96, fmt="matroska"),
        # H.264 B-frames in AVI: the demuxer invents timestamps in decode order, so only counting works
        "avi": make_video(d / "bframes.avi", 96),
    }
    v["editlist"] = make_editlist_copy(v["cfr"], d / "editlist.mp4", 40, 120)
    return v
