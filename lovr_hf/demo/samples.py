"""Deterministic synthetic long videos with exact scene-cut ground truth (tests, demo, benchmarks).

Why synthetic: the project never commits third-party footage, yet every stage needs real, decodable
H.264 files whose true cuts are known to the frame. Each scene gets its own hue, brightness and
texture, and keeps moving (a drifting textured background, bouncing blocks, a scrolling text-like
ticker, sensor-like noise), so detectors see motion inside scenes and a strong change at each cut.

Frames are synthesised straight into YUV 4:2:0 planes with numpy (no RGB round trip, ~0.7 ms per
640x360 frame) and encoded with libx264 (``preset="veryfast"``) through PyAV, which dominates: on an
otherwise idle 2-core machine a 10-minute 640x360 24 fps video takes about a minute (``preset=
"ultrafast"`` halves that, but yields files that decode unrealistically fast for benchmarks).

Ground truth conventions (all frame indices are 0-based positions in presentation order):

* ``cut_frames``: the first frame of every new scene (hard cuts and fades alike), ``cut_times`` the same
  in seconds (``frame / fps``).
* ``hard_cut_frames``: only the instantaneous cuts.
* A fade is a cross-dissolve of ``fade_frames`` frames ``[fade_start, fade_end)`` centred on the scene
  start: its nominal cut is the scene start, recorded in ``cut_frames`` but not in ``hard_cut_frames``.
* Flash frames (1-3 near-white frames inside a scene) are NOT cuts; pans and static shots contain none.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lovr_hf.demo.scenes import FLASH_C, FLASH_Y, KINDS, SceneRenderer, SceneSpec, ToneTrack, scene_tone

logger = logging.getLogger(__name__)

HARD_CASES = ("pan", "static", "flash", "fade")


@dataclass
class GroundTruth:
    """Exact description of what was written (see module docstring for the conventions)."""

    path: str
    width: int
    height: int
    fps: float
    fps_fraction: str  # exact rate as "num/den"
    num_frames: int
    scene_starts: list[int]
    cut_frames: list[int]
    cut_times: list[float]
    hard_cut_frames: list[int]
    fade_ranges: list[tuple[int, int]] = field(default_factory=list)
    flash_frames: list[int] = field(default_factory=list)
    pan_ranges: list[tuple[int, int]] = field(default_factory=list)
    static_ranges: list[tuple[int, int]] = field(default_factory=list)
    scene_kinds: list[str] = field(default_factory=list)
    audio_rate: int = 0  # sample rate of the audio track, 0 = no audio
    audio_freqs: list[float] = field(default_factory=list)  # per scene: the tone it plays (audio only)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def scene_ranges(self) -> list[tuple[int, int]]:
        """Half-open ``[start, end)`` frame range of every scene."""
        ends = [*self.scene_starts[1:], self.num_frames]
        return list(zip(self.scene_starts, ends, strict=True))

    def to_dict(self) -> dict:
        return asdict(self)

    def save_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> GroundTruth:
        data = json.loads(Path(path).read_text())
        for key in ("fade_ranges", "pan_ranges", "static_ranges"):
            data[key] = [tuple(r) for r in data.get(key, [])]
        return cls(**data)


def _as_rate(fps: float | Fraction | str) -> Fraction:
    rate = Fraction(fps) if not isinstance(fps, float) else Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def make_video(
    path: str | os.PathLike,
    scenes: Sequence[SceneSpec],
    width: int = 320,
    height: int = 180,
    fps: float | Fraction = 24,
    seed: int = 0,
    *,
    preset: str = "veryfast",
    crf: int = 23,
    gop: int | None = None,
    faststart: bool = False,
    audio: bool = False,
    audio_rate: int = 16000,
    audio_layout: str = "mono",
) -> GroundTruth:
    """Write ``scenes`` back to back as an H.264/yuv420p file and return its exact ground truth.

    The container is chosen from the extension (``.mp4``, ``.mkv``, ``.mov``, ...). ``gop`` sets the
    maximum key-frame interval (x264 default 250); x264's own scene-cut key frames stay on. ``audio``
    adds an AAC track (``audio_rate`` Hz, ``audio_layout``) on which scene ``k`` plays a pure tone of
    ``audio_freqs[k]`` Hz (all distinct), so that the audio of a cut clip tells which source time range
    it came from. Without ``audio`` the file is exactly what it was before the option existed.
    """
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"width and height must be even and >= 16, got {width}x{height}")
    if not scenes:
        raise ValueError("at least one scene is needed")
    rate = _as_rate(fps)
    for k, s in enumerate(scenes):
        if s.kind not in KINDS:
            raise ValueError(f"scene {k}: unknown kind {s.kind!r}; expected one of {KINDS}")
        if s.num_frames < 1:
            raise ValueError(f"scene {k}: num_frames must be >= 1")
        if s.transition not in ("cut", "fade"):
            raise ValueError(f"scene {k}: unknown transition {s.transition!r}")
        if s.transition == "fade" and k > 0:
            half = s.fade_frames // 2
            if half > scenes[k - 1].num_frames or s.fade_frames - half > s.num_frames:
                raise ValueError(f"scene {k}: fade of {s.fade_frames} frames does not fit its neighbours")
        for f0 in s.flashes:
            if f0 < 0 or f0 + s.flash_len > s.num_frames:
                raise ValueError(f"scene {k}: flash at {f0} does not fit in {s.num_frames} frames")

    starts = np.concatenate([[0], np.cumsum([s.num_frames for s in scenes])]).astype(int)
    total = int(starts[-1])
    renderers = [SceneRenderer(s, k, width, height, seed) for k, s in enumerate(scenes)]
    # per frame: which scene, and an optional dissolve partner
    scene_of = np.repeat(np.arange(len(scenes)), [s.num_frames for s in scenes])
    fade_ranges: list[tuple[int, int]] = []
    fade_of: dict[int, tuple[int, float]] = {}  # frame -> (incoming scene, alpha of the incoming scene)
    for k, s in enumerate(scenes):
        if k == 0 or s.transition != "fade" or s.fade_frames < 1:
            continue
        a, n = int(starts[k]) - s.fade_frames // 2, s.fade_frames
        fade_ranges.append((a, a + n))
        for j in range(n):
            fade_of[a + j] = (k, (j + 1) / (n + 1))
    flash_frames = sorted(
        int(starts[k]) + f0 + j for k, s in enumerate(scenes) for f0 in s.flashes for j in range(s.flash_len)
    )
    flash_set = set(flash_frames)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ysz, csz = height * width, (height // 2) * (width // 2)
    buf = np.empty(ysz + 2 * csz, np.uint8)
    planes = (buf[:ysz].reshape(height, width), buf[ysz : ysz + csz].reshape(height // 2, width // 2),
              buf[ysz + csz :].reshape(height // 2, width // 2))
    other = np.empty_like(buf)
    oplanes = (other[:ysz].reshape(height, width), other[ysz : ysz + csz].reshape(height // 2, width // 2),
               other[ysz + csz :].reshape(height // 2, width // 2))
    frame_view = buf.reshape(height * 3 // 2, width)

    options = {"preset": preset, "crf": str(crf)}
    if gop is not None:
        options["g"] = str(gop)
    container_opts = {"movflags": "+faststart"} if faststart else {}
    freqs = [scene_tone(k) for k in range(len(scenes))] if audio else []
    with av.open(str(path), "w", options=container_opts) as container:
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        tone = ToneTrack(container, audio_rate, audio_layout, rate, scene_of, freqs) if audio else None
        for f in range(total):
            k = int(scene_of[f])
            if f in fade_of:
                kin, alpha = fade_of[f]
                kout = kin - 1
                renderers[kout].render(f - int(starts[kout]), *planes)
                renderers[kin].render(f - int(starts[kin]), *oplanes)
                wgt = int(round(alpha * 256))
                mixed = (buf.astype(np.uint16) * (256 - wgt) + other.astype(np.uint16) * wgt + 128) >> 8
                buf[:] = mixed.astype(np.uint8)
            else:
                renderers[k].render(f - int(starts[k]), *planes)
            if f in flash_set:
                np.take(FLASH_Y, planes[0], out=planes[0])
                np.take(FLASH_C, planes[1], out=planes[1])
                np.take(FLASH_C, planes[2], out=planes[2])
            frame = av.VideoFrame.from_ndarray(frame_view, format="yuv420p")
            frame.pts = f
            for packet in stream.encode(frame):
                container.mux(packet)
            if tone is not None:
                tone.write_frame(f)
        for packet in stream.encode(None):
            container.mux(packet)
        if tone is not None:
            tone.close()

    scene_starts = [int(x) for x in starts[:-1]]
    fade_starts = {int(starts[k]) for k, s in enumerate(scenes) if k > 0 and s.transition == "fade"}
    cuts = scene_starts[1:]
    ranges = list(zip(scene_starts, [int(x) for x in starts[1:]], strict=True))
    return GroundTruth(
        path=str(path),
        width=width,
        height=height,
        fps=float(rate),
        fps_fraction=f"{rate.numerator}/{rate.denominator}",
        num_frames=total,
        scene_starts=scene_starts,
        cut_frames=cuts,
        cut_times=[float(Fraction(c) / rate) for c in cuts],
        hard_cut_frames=[c for c in cuts if c not in fade_starts],
        fade_ranges=fade_ranges,
        flash_frames=flash_frames,
        pan_ranges=[r for r, s in zip(ranges, scenes, strict=True) if s.kind == "pan"],
        static_ranges=[r for r, s in zip(ranges, scenes, strict=True) if s.kind == "static"],
        scene_kinds=[s.kind for s in scenes],
        audio_rate=audio_rate if audio else 0,
        audio_freqs=freqs,
    )


def plan_scenes(
    total_frames: int,
    num_scenes: int,
    fps: float,
    *,
    min_scene_s: float = 6.0,
    hard_cases: Sequence[str] = HARD_CASES,
    fade_frames: int | None = None,
    seed: int = 0,
) -> list[SceneSpec]:
    """Split ``total_frames`` into ``num_scenes`` random scene lengths (each >= ``min_scene_s``) and
    place one of each requested hard case (``pan``, ``static``, ``flash``, ``fade``) on distinct scenes.

    ``min_scene_s`` defaults above LoVR's 5 s minimum so that every true cut is detectable by a
    detector that enforces it.
    """
    unknown = set(hard_cases) - set(HARD_CASES)
    if unknown:
        raise ValueError(f"unknown hard cases {sorted(unknown)}; expected some of {HARD_CASES}")
    rng = np.random.default_rng([seed, 104729])
    min_len = int(math.ceil(min_scene_s * fps))
    if num_scenes < 1:
        raise ValueError("num_scenes must be >= 1")
    if num_scenes * min_len > total_frames:
        raise ValueError(
            f"{num_scenes} scenes of >= {min_scene_s}s do not fit in {total_frames / fps:.1f}s; "
            "use fewer cuts or a smaller min_scene_s"
        )
    spare = total_frames - num_scenes * min_len
    weights = rng.dirichlet(np.full(num_scenes, 4.0))
    extra = np.floor(weights * spare).astype(int)
    extra[: spare - int(extra.sum())] += 1
    lengths = [min_len + int(e) for e in extra]
    kinds = ["moving"] * num_scenes
    transitions = ["cut"] * num_scenes
    flashes: list[tuple[int, ...]] = [()] * num_scenes
    order = [int(i) for i in rng.permutation(num_scenes)]
    fade_len = fade_frames if fade_frames is not None else max(4, int(round(fps)))
    used: set[int] = set()
    # the flash goes in the longest scene, at its middle: far from both cuts when scenes are long
    by_length = sorted(range(num_scenes), key=lambda i: (-lengths[i], i))
    for case in sorted(hard_cases, key=lambda c: c != "flash"):
        candidates = by_length if case == "flash" else order
        pick = next((i for i in candidates if i not in used and (case != "fade" or i > 0)), None)
        if pick is None:
            logger.debug("not enough scenes to place hard case %s", case)
            continue
        used.add(pick)
        if case in ("pan", "static"):
            kinds[pick] = case
        elif case == "flash":
            flashes[pick] = (lengths[pick] // 2,)
        elif case == "fade":
            transitions[pick] = "fade"
    return [
        SceneSpec(num_frames=n, kind=kd, transition=tr, fade_frames=fade_len, flashes=fl)
        for n, kd, tr, fl in zip(lengths, kinds, transitions, flashes, strict=True)
    ]


def make_sample_video(
    path: str | os.PathLike,
    duration_s: float = 60.0,
    *,
    num_cuts: int | None = None,
    scene_len_s: float | None = None,
    width: int = 320,
    height: int = 180,
    fps: float | Fraction = 24,
    seed: int = 0,
    min_scene_s: float = 6.0,
    hard_cases: Sequence[str] = HARD_CASES,
    **encode_kwargs,
) -> GroundTruth:
    """A ``duration_s`` video with ``num_cuts`` cuts (or one every ``scene_len_s`` s on average, default
    10 s), random scene lengths >= ``min_scene_s`` and the requested hard cases."""
    rate = _as_rate(fps)
    total = int(round(duration_s * float(rate)))
    if num_cuts is None:
        num_cuts = max(0, int(round(duration_s / (scene_len_s or 10.0))) - 1)
    specs = plan_scenes(total, num_cuts + 1, float(rate), min_scene_s=min_scene_s, hard_cases=hard_cases,
                        seed=seed)
    return make_video(path, specs, width, height, rate, seed, **encode_kwargs)


def make_sample_folder(
    directory: str | os.PathLike,
    *,
    durations_s: Sequence[float] = (70.0, 60.0, 50.0),
    width: int = 320,
    height: int = 180,
    fps: float = 24,
    seed: int = 0,
    write_truth: bool = False,
) -> dict[str, GroundTruth]:
    """A demo input folder: a few minutes of video over a few files (``.mp4`` and one ``.mkv``).

    Returns file name -> ground truth; with ``write_truth`` also writes ``<name>.truth.json`` beside
    each video (ignored by the video scanners, which only pick video extensions).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[str, GroundTruth] = {}
    for i, dur in enumerate(durations_s):
        name = f"sample_{i + 1:02d}.mkv" if i == len(durations_s) - 1 and i > 0 else f"sample_{i + 1:02d}.mp4"
        gt = make_sample_video(directory / name, dur, scene_len_s=10.0, width=width, height=height, fps=fps,
                               seed=seed + i)
        if write_truth:
            gt.save_json(directory / f"{name}.truth.json")
        out[name] = gt
    return out


# ----------------------------------------------------------------------------------------------------
# segmentation fidelity sources
# ----------------------------------------------------------------------------------------------------

#: Sources on which lovr_hf's default segmentation must equal the original's (PySceneDetect as
#: ``clip_segmentation.py`` runs it). Low frame rates keep them short: LoVR's 5 s minimum is 30 frames
#: at 6 fps. name -> (width, height, fps, scene lengths in frames, audio layout or None, x264 preset)
FIDELITY_SOURCES: dict[str, tuple[int, int, int, tuple[int, ...], str | None, str]] = {
    # a 9-frame (1.5 s) last scene, shorter than the minimum: PySceneDetect keeps it as its own scene;
    # a stereo AAC track on which every scene plays its own tone
    "short_tail_audio.mp4": (320, 180, 6, (36, 42, 33, 9), "stereo", "veryfast"),
    # one 8 s scene: PySceneDetect finds no cut (the original then wrote no clip at all)
    "no_cut.mp4": (320, 180, 6, (48,), None, "veryfast"),
    # 1920x1080: the automatic downscale factor is 7.5 (frames scored at 256x144); short last scene too
    "hd1080.mp4": (1920, 1080, 4, (22, 23, 6), None, "ultrafast"),
}


def make_fidelity_sources(directory: str | os.PathLike, names: Sequence[str] | None = None, *,
                          seed: int = 5) -> dict[str, GroundTruth]:
    """Write the :data:`FIDELITY_SOURCES` (all, or ``names``) into ``directory``; name -> ground truth."""
    directory = Path(directory)
    out: dict[str, GroundTruth] = {}
    for k, name in enumerate(names or list(FIDELITY_SOURCES)):
        w, h, fps, lengths, layout, preset = FIDELITY_SOURCES[name]
        out[name] = make_video(directory / name, [SceneSpec(n) for n in lengths], w, h, fps,
                               seed=seed + k, preset=preset, audio=layout is not None,
                               audio_layout=layout or "mono")
    return out


# ----------------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------------

EMPTY = "empty file"
TRUNCATED = "truncated file (container index missing, cannot be opened)"
NOT_VIDEO = "not a video (text content with a video extension)"
AUDIO_ONLY = "no video stream (audio only)"
ONE_FRAME = "too short (a single frame)"
TRUNCATED_TAIL = "truncated tail (opens, but fewer frames decode than the container declares)"


def _write_audio_only(path: Path, seconds: float = 1.0) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        n = int(44100 * seconds)
        t = np.arange(n, dtype=np.float32) / 44100
        pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        pts = 0
        for a in range(0, n, 1024):
            chunk = pcm[a : a + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = pts
            pts += chunk.shape[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def make_bad_inputs(directory: str | os.PathLike, *, include_partial: bool = False) -> dict[str, str]:
    """Write a corpus of broken inputs, all with video extensions; returns file name -> expected problem.

    Every entry should become a ``videos`` row with status ``error`` and no clips. With
    ``include_partial`` the corpus also holds ``truncated_tail.mp4`` (moov at the front, tail cut off):
    it opens and decodes part of its frames, so a stage may either process what decodes or flag it;
    the caller decides, hence it is opt-in.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    (d / "empty.mp4").write_bytes(b"")
    out["empty.mp4"] = EMPTY

    full = d / "_full.tmp.mp4"
    make_video(full, [SceneSpec(48), SceneSpec(48)], 64, 48, 24, seed=1)
    data = full.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov is at the end: it is lost
    out["truncated.mp4"] = TRUNCATED
    full.unlink()

    (d / "not_a_video.mp4").write_text("This is a text file that only pretends to be a video.\n" * 20)
    out["not_a_video.mp4"] = NOT_VIDEO

    _write_audio_only(d / "audio_only.mp4")
    out["audio_only.mp4"] = AUDIO_ONLY

    make_video(d / "one_frame.mp4", [SceneSpec(1)], 64, 48, 24, seed=2)
    out["one_frame.mp4"] = ONE_FRAME

    if include_partial:
        tail = d / "_tail.tmp.mp4"
        make_video(tail, [SceneSpec(72), SceneSpec(72)], 64, 48, 24, seed=3, faststart=True, gop=24)
        data = tail.read_bytes()
        (d / "truncated_tail.mp4").write_bytes(data[: int(len(data) * 0.6)])
        tail.unlink()
        out["truncated_tail.mp4"] = TRUNCATED_TAIL
    return out
