"""A small media corpus that looks like real downloaded long videos (tests/test_media_corpus.py).

Why: the clip cutters must hold on the containers people actually feed them (mp4, mkv with a 1/1000
time base, avi, webm, mov), with the timing quirks of real files (NTSC rates, VFR, B-frames and open
GOPs, a non-zero first timestamp, edit lists, rotation) and every common audio codec and layout, audio
that starts late or ends early, or no audio at all. Each file is generated with the ffmpeg binary that
imageio-ffmpeg ships, from frames synthesised here, so the truth is known:

* every frame carries its index (30 bits: 20 of index, 10 of checksum, as 8x8 blocks in a strip at the
  top), so a test can tell WHICH source frame a clip or a reader returned;
* the picture changes hue completely at known hard cuts (``CUT_S`` seconds in), at least 5 s apart so the
  default segmentation (ContentDetector 34, min 5 s) finds them: three clips per file;
* the audio (when there is one) is low-passed pink noise, which matches itself at one lag only.

Files are about 12 s at 160x96: a whole corpus is generated in a few seconds, once per test session.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

W, H, BLOCK = 160, 96, 8
CUT_S = (5.6, 11.0)  # hard content cuts (seconds); the last scene (about 1 s) stays its own clip
DURATION_S = 12.0
SCENE_RGB = ((230, 30, 30), (10, 20, 100), (60, 240, 60), (110, 10, 110))


@dataclass(frozen=True)
class Media:
    """One corpus file: how it is made and what it is supposed to be."""

    name: str  # file name (extension = container)
    fps: str  # ffmpeg rate expression (30000/1001, 25, ...)
    vcodec: list[str]  # ffmpeg video encoder arguments
    audio: str | None = None  # None: no audio; else an ffmpeg audio encoder
    channels: str = "stereo"  # mono | stereo | 5.1
    rate: int = 48000
    acodec_args: list[str] = field(default_factory=list)
    audio_start_s: float = 0.0  # > 0: the audio starts this late on the container clock
    audio_end_s: float | None = None  # the audio ends here (None: with the video)
    vfr: bool = False  # alternating 60/40 ms frame durations (average 20 fps), 1/1000 time base
    extra: list[str] = field(default_factory=list)  # output options (time offsets, rotation, muxer flags)
    rotation: int = 0

    @property
    def fps_float(self) -> float:
        n, _, d = self.fps.partition("/")
        return float(n) / float(d or 1)


X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
X264_BF = [*X264, "-bf", "3", "-g", "48"]  # B-frames, a key frame every 48 frames (closed GOPs)

CORPUS: tuple[Media, ...] = (
    Media("mp4_aac_stereo_2997.mp4", "30000/1001", X264_BF, "aac", "stereo", 48000),
    # downloaded long videos: matroska (time base 1/1000), 5.1 AC-3 starting 0.7 s after the picture
    Media("mkv_ac3_51_25.mkv", "25", X264_BF, "ac3", "5.1", 48000, audio_start_s=0.7),
    Media("avi_mp3_mono_25.avi", "25", ["-c:v", "mpeg4", "-q:v", "3", "-bf", "0", "-g", "50"], "libmp3lame",
          "mono", 44100),
    Media("webm_opus_stereo_60.webm", "60", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                                             "-b:v", "300k", "-g", "60", "-pix_fmt", "yuv420p"], "libopus", "stereo", 48000,
          audio_end_s=9.5),
    Media("mov_pcm_stereo_23976.mov", "24000/1001", X264_BF, "pcm_s16le", "stereo", 48000),
    # VFR with open GOPs in matroska, mono AAC at 44.1 kHz ending 2 s before the picture
    Media("mkv_vfr_opengop_aac_mono.mkv", "20", [*X264, "-bf", "2", "-g", "40", "-x264-params", "open-gop=1"],
          "aac", "mono", 44100, audio_end_s=10.0, vfr=True),
    # a first timestamp of 1.5 s (mp4: an edit list), MP3 audio
    Media("mp4_offset_mp3_25.mp4", "25", X264_BF, "libmp3lame", "stereo", 44100, extra=["-output_ts_offset", "1.5"]),
    Media("mp4_rot90_aac_30.mp4", "30", X264_BF, "aac", "stereo", 48000, rotation=90),
    Media("mp4_noaudio_24.mp4", "24", X264_BF),
)


def scene_of(t: float) -> int:
    return sum(t >= c for c in CUT_S)


def frame_times(m: Media) -> list[float]:
    """Presentation times (seconds from the first frame) of every frame of ``m``."""
    if m.vfr:
        out, t = [], 0
        while t < DURATION_S * 1000 - 1e-9:
            out.append(t / 1000)
            t += 60 if len(out) % 2 else 40
        return out
    return [i / m.fps_float for i in range(int(round(DURATION_S * m.fps_float)))]


def truth_cuts(m: Media) -> list[int]:
    """Frame indices of the hard cuts (the first frame of each new scene)."""
    ts = frame_times(m)
    return [next(i for i, t in enumerate(ts) if t >= c - 1e-9) for c in CUT_S]


_BACKGROUNDS: dict[int, np.ndarray] = {}


def _background(scene: int) -> np.ndarray:
    if scene not in _BACKGROUNDS:
        a = np.empty((H, W, 3), np.uint8)
        a[:] = SCENE_RGB[scene]
        y = np.arange(H)[:, None]
        a[..., 1] = np.clip(a[..., 1].astype(int) + (y // 12) * 3, 0, 255).astype(np.uint8)  # a soft gradient
        _BACKGROUNDS[scene] = a
    return _BACKGROUNDS[scene]


def _bits(i: int) -> np.ndarray:
    """The 30 code bits of ``i`` as the (2, 15) grid of blocks they are drawn in."""
    return np.array([(i >> b) & 1 for b in range(20)] + [((~i) >> b) & 1 for b in range(10)]).reshape(2, 15)


def picture(i: int, t: float) -> np.ndarray:
    """RGB frame ``i`` at ``t`` seconds: its scene's colour, a moving square, the index code strip."""
    a = _background(scene_of(t)).copy()
    x0 = (i * 3) % (W - 24)
    a[60:84, x0 : x0 + 24] = 250  # motion inside the scene
    code = np.where(_bits(i), 235, 16).astype(np.uint8)
    a[: 2 * BLOCK, : 15 * BLOCK] = np.repeat(np.repeat(code, BLOCK, axis=0), BLOCK, axis=1)[..., None]
    return a


def frame_number(a: np.ndarray) -> int:
    """The index a decoded RGB frame (stored orientation) carries; asserts the checksum."""
    assert a.shape[:2] == (H, W), a.shape
    g = a[: 2 * BLOCK, : 15 * BLOCK].astype(np.float32).mean(axis=2).reshape(2, BLOCK, 15, BLOCK)
    bits = (g[:, 2:-2, :, 2:-2].mean(axis=(1, 3)) > 128).astype(int).reshape(-1).tolist()
    i = sum(b << k for k, b in enumerate(bits[:20]))
    chk = sum(b << k for k, b in enumerate(bits[20:]))
    assert chk == (~i) & 0x3FF, f"unreadable frame code ({i}, {chk})"
    return i


def _audio_input(m: Media) -> list[str]:
    """Low-passed pink noise (a fixed seed): lossy codecs keep it, and unlike a tone it matches itself at one
    lag only, so a test can tell where in the source a clip's audio comes from, to the sample."""
    end = DURATION_S if m.audio_end_s is None else m.audio_end_s
    dur = end - m.audio_start_s
    pan = {"mono": "", "stereo": ",pan=stereo|c0=c0|c1=c0",
           "5.1": ",pan=5.1(side)|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0"}[m.channels]
    src = f"anoisesrc=d={dur}:c=pink:r={m.rate}:a=0.5:s=7,lowpass=f=3000{pan}"
    offset = ["-itsoffset", str(m.audio_start_s)] if m.audio_start_s else []
    return [*offset, "-f", "lavfi", "-i", src]


def make(m: Media, folder: Path, ffmpeg: str) -> Path:
    """Write corpus file ``m`` into ``folder`` (frames piped as raw RGB to ffmpeg)."""
    out = folder / m.name
    ts = frame_times(m)
    vin = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-framerate", "20" if m.vfr else m.fps]
    cmd = [ffmpeg, "-v", "error", "-y", *vin, "-i", "-"]
    if m.audio:
        cmd += _audio_input(m)
    cmd += ["-map", "0:v"] + (["-map", "1:a", "-c:a", m.audio, *m.acodec_args] if m.audio else [])
    if m.vfr:  # frame k at 50k ms + 10 ms on odd k: durations alternate 60 and 40 ms
        cmd += ["-vf", "setpts=(N*50+10*mod(N\\,2))/1000/TB", "-fps_mode", "vfr", "-enc_time_base", "1/1000"]
    encoded = out.with_name(f"unrotated-{m.name}") if m.rotation else out
    cmd += [*m.vcodec, *m.extra, str(encoded)]
    frames = b"".join(picture(i, t).tobytes() for i, t in enumerate(ts))
    subprocess.run(cmd, input=frames, check=True, capture_output=True)
    if m.rotation:  # a display matrix, as phones write it (a stream copy keeps the input's rotation)
        subprocess.run([ffmpeg, "-v", "error", "-y", "-display_rotation:v", str(m.rotation), "-i", str(encoded),
                        "-c", "copy", str(out)], check=True, capture_output=True)
        encoded.unlink()
    return out


def make_corpus(folder: Path, ffmpeg: str, only: tuple[str, ...] | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {m.name: make(m, folder, ffmpeg) for m in CORPUS if only is None or m.name in only}


def media(name: str) -> Media:
    return next(m for m in CORPUS if m.name == name)


_SESSION: dict[str, dict[str, Path]] = {}


def session_corpus(tmp_path_factory: Any) -> dict[str, Path]:
    """The whole corpus, generated once per test session (shared by every test module that asks)."""
    if "corpus" not in _SESSION:
        from lovr_hf.video.clipper import ffmpeg_exe

        exe = ffmpeg_exe()
        if exe is None:
            import pytest

            pytest.skip("no ffmpeg binary (imageio-ffmpeg is a test dependency)")
        _SESSION["corpus"] = make_corpus(tmp_path_factory.mktemp("media_corpus"), exe)
    return _SESSION["corpus"]
