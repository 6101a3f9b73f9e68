"""The audio of clip files: every audio stream of the source, cut to the clip's time range, as AAC.

Why: the original LoVR clips come from PySceneDetect's ``split_video_ffmpeg``, i.e. one ffmpeg run per
scene, ``-ss START -i SRC -t DURATION -map 0:v:0 -map 0:a? -map 0:s? -c:v libx264 -preset veryfast -crf 22
-c:a aac -sn`` (the same default arguments in PySceneDetect 0.6.x and 0.7): each clip keeps every audio
stream of the source, re-encoded to AAC (the encoder's default bit rate), trimmed to the scene's time
range by ffmpeg's accurate seek. Benchmarks that read frames never hear it, but a clip file made by a
LoVR-style build should be the file the original gives (and audio-aware models exist).

How: :class:`AudioSource` decodes one audio stream of the source sequentially in a container of its
own (so it advances independently of the video decoder) and hands out the samples of any window
``[a, b)`` on the source's sample clock, windows in increasing order; samples are cut at exact sample
positions, so consecutive clips share no sample and lose none. :class:`ClipAudio` owns the AAC
encoders of one clip file and is pumped as the clip's video packets are muxed, so audio and video stay
interleaved in the file. A corrupt audio packet is skipped (as ffmpeg does); a source whose audio
cannot be decoded at all fails the clip loudly rather than writing a silent file.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

logger = logging.getLogger(__name__)

AUDIO_CODEC = "aac"  # split_video_ffmpeg's "-c:a aac" (ffmpeg's native encoder)
HINT = "segment with --no-audio for video-only clips"


class AudioError(ValueError):
    """The source's audio cannot be read or cut (the clip is not written; ``--no-audio`` avoids it)."""
MAX_CONSECUTIVE_DECODE_FAILURES = 8
PUMP_LEAD_S = 0.25  # audio is written this far ahead of the video packet being muxed, once the clip end is known


def audio_stream_count(path: str) -> int:
    """Audio streams in ``path`` (0 when it cannot be opened: the video reader reports that error)."""
    try:
        with av.open(path) as c:
            return len(c.streams.audio)
    except av.error.FFmpegError:
        return 0


@dataclass
class _Chunk:
    start: int  # first sample, on the source's sample clock
    data: np.ndarray  # to_ndarray() layout: planar [channels, n] or packed [1, n * channels]
    fmt: str
    layout: str
    planar: bool
    channels: int

    @property
    def samples(self) -> int:
        return self.data.shape[1] if self.planar else self.data.shape[1] // self.channels

    def cut(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)`` of the source clock that fall in this chunk."""
        i, j = max(a, self.start) - self.start, min(b, self.start + self.samples) - self.start
        if self.planar:
            return self.data[:, i:j]
        return self.data[:, i * self.channels : j * self.channels]


class AudioSource:
    """Decoded samples of one audio stream of a file, handed out by window in increasing order."""

    def __init__(self, path: str, index: int) -> None:
        self.path = path
        self.container = av.open(path)
        self.stream = self.container.streams.audio[index]
        self.stream.thread_type = "AUTO"
        ctx = self.stream.codec_context
        self.rate = int(ctx.sample_rate or self.stream.rate or 0)
        if self.rate <= 0:
            self.close()
            raise AudioError(f"{path}: audio stream {index} has no sample rate ({HINT})")
        self.layout = ctx.layout.name
        self._packets = self.container.demux(self.stream)
        self._buf: list[_Chunk] = []
        self._next = 0  # where the next decoded frame starts when it has no timestamp
        self._buf_started = False  # whether a frame was decoded (``_next`` is meaningful)
        self._eof = False
        self._failures = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()

    def sample_at(self, seconds: float) -> int:
        """Sample position of a time on the container clock (nearest sample, as ffmpeg's trim)."""
        return int(round(seconds * self.rate))

    def _jitter(self, fr: Any) -> int:
        """Samples a frame start may be off by from rounding to its time base (at least one sample)."""
        tb = fr.time_base
        return max(1, math.ceil(float(tb) * self.rate)) if tb else 1

    def _pull(self) -> bool:
        """Decode the next packet into the buffer; False at the end of the stream."""
        while not self._eof:
            try:
                pkt = next(self._packets)
            except StopIteration:
                self._eof = True
                pkt = None
            try:
                frames = self.stream.decode(pkt) if pkt is not None else self.stream.decode(None)
            except av.error.FFmpegError as exc:
                self._failures += 1
                if self._failures > MAX_CONSECUTIVE_DECODE_FAILURES:
                    raise AudioError(f"{self.path}: its audio does not decode ({exc}; {HINT})") from exc
                logger.debug("%s: skipping a corrupt audio packet (%s)", self.path, exc)
                continue
            self._failures = 0
            for fr in frames:
                start = self.sample_at(float(fr.pts * fr.time_base)) if fr.pts is not None else self._next
                if self._buf_started and abs(start - self._next) <= self._jitter(fr):
                    start = self._next  # a coarse time base (matroska's 1 ms) rounds frame starts: stay contiguous
                data = fr.to_ndarray()
                ch = fr.layout.nb_channels
                chunk = _Chunk(start, data, fr.format.name, fr.layout.name, fr.format.is_planar, ch)
                self._next = start + chunk.samples
                self._buf_started = True
                self._buf.append(chunk)
            if frames:
                return True
        return False

    def take(self, a: int, b: int) -> list[_Chunk]:
        """The samples ``[a, b)`` as chunks (each a slice of one decoded frame), dropping everything before
        ``a`` for good. Fewer samples come back only at the end of the stream."""
        while (not self._buf or self._buf[-1].start + self._buf[-1].samples < b) and self._pull():
            pass
        out: list[_Chunk] = []
        for c in self._buf:
            lo, hi = max(a, c.start), min(b, c.start + c.samples)
            if hi > lo:
                out.append(_Chunk(lo, c.cut(lo, hi), c.fmt, c.layout, c.planar, c.channels))
        self._buf = [c for c in self._buf if c.start + c.samples > b]
        return out


class ClipAudio:
    """AAC streams of one clip file, fed with the source's samples of the clip's time window.

    ``window_s`` is ``(start, end)`` on the container clock; ``end`` may be None while the clip's end is
    not known yet (single-pass detect-and-cut), and is then given to :meth:`finish`."""

    def __init__(self, out: Any, sources: list[AudioSource], window_s: tuple[float, float | None]) -> None:
        self.out = out
        self.sources = sources
        self.streams = []
        self.windows: list[tuple[int, int | None]] = []
        self.pos: list[int] = []
        for src in sources:
            st = out.add_stream(AUDIO_CODEC, rate=src.rate, layout=src.layout)
            st.time_base = Fraction(1, src.rate)
            self.streams.append(st)
            a = src.sample_at(window_s[0])
            b = None if window_s[1] is None else max(a, src.sample_at(window_s[1]))
            self.windows.append((a, b))
            self.pos.append(a)
        self.written = [0] * len(sources)

    def pump(self, clip_time_s: float) -> None:
        """Write every stream's samples up to ``clip_time_s`` of the clip (plus a small lead when the clip's
        end is known). While the end is not known (single pass), nothing past ``clip_time_s`` is written:
        the clip may end right after it, and samples taken from the source belong to this clip for good."""
        for k, src in enumerate(self.sources):
            a, b = self.windows[k]
            lead = PUMP_LEAD_S if b is not None else 0.0
            upto = a + max(0, math.floor((clip_time_s + lead) * src.rate))
            self._write(k, upto if b is None else min(b, upto))

    def finish(self, end_s: float | None = None) -> None:
        """Write the rest of each window (up to ``end_s`` when the window was open) and flush."""
        for k, src in enumerate(self.sources):
            a, b = self.windows[k]
            if b is None:
                if end_s is None:
                    raise ValueError("the clip's end time is needed to finish an open audio window")
                b = max(a, src.sample_at(end_s))
            self._write(k, b)
            for pkt in self.streams[k].encode(None):
                self.out.mux(pkt)

    def _write(self, k: int, upto: int) -> None:
        if upto <= self.pos[k]:
            return
        a = self.windows[k][0]
        st = self.streams[k]
        for c in self.sources[k].take(self.pos[k], upto):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(c.data), format=c.fmt, layout=c.layout)
            frame.sample_rate = self.sources[k].rate
            frame.pts = c.start - a
            frame.time_base = st.time_base
            for pkt in st.encode(frame):
                self.out.mux(pkt)
            self.written[k] += c.samples
        self.pos[k] = upto


class AudioPlan:
    """The audio side of one ``cut_clips`` call: the source's audio streams and each clip's window."""

    def __init__(self, path: str, windows_s: list[tuple[float, float]] | None = None) -> None:
        self.path = path
        self.windows_s = windows_s or []
        self.sources: list[AudioSource] = []
        try:
            for i in range(audio_stream_count(path)):
                self.sources.append(AudioSource(path, i))
        except av.error.FFmpegError as exc:
            self.close()
            raise AudioError(f"{path}: cannot open its audio ({exc}; {HINT})") from exc
        except AudioError:
            self.close()
            raise

    def __bool__(self) -> bool:
        return bool(self.sources)

    def for_clip(self, out: Any, j: int) -> ClipAudio | None:
        return ClipAudio(out, self.sources, self.windows_s[j]) if self.sources else None

    def open_clip(self, out: Any, start_s: float) -> ClipAudio | None:
        """A clip whose end is not known yet (pass it to :meth:`ClipAudio.finish`)."""
        return ClipAudio(out, self.sources, (start_s, None)) if self.sources else None

    def close(self) -> None:
        for s in self.sources:
            s.close()


__all__ = ["AUDIO_CODEC", "AudioError", "AudioPlan", "AudioSource", "ClipAudio", "audio_stream_count"]
