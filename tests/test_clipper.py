"""lovr_hf.video.clipper: exact / copy / virtual clips decode exactly the frames of their source ranges."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from datasets import Dataset

from lovr_hf import schema
from lovr_hf.video import clip_files as F
from lovr_hf.video import clipper as C
from lovr_hf.video import exact_cut, frame_index
from lovr_hf.video import reader as V
from lovr_hf.video.frame_index import VideoError

try:  # pytest puts tests/ on sys.path (rootdir-relative imports otherwise)
    from test_video import decode_all, frame_numbers, make_video
except ImportError:  # pragma: no cover
    from tests.test_video import decode_all, frame_numbers, make_video


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("src")
    return {
        "cfr": make_video(d / "cfr.mp4", 240),
        "vfr": make_video(d / "vfr.mp4", 120, vfr=True),
        "rot90": make_video(d / "rot90.mp4", 72, rotation=90),
        "opengop": make_video(d / "opengop.mp4", 120, x264="open-gop=1"),
        "avi": make_video(d / "bframes.avi", 96),  # timestamps that do not index the frames
    }


def _ranges(n: int) -> list[tuple[int, int]]:
    """Cuts on and off key frames (every 24), a 1-frame clip, and a last clip ending at the end."""
    cuts = sorted({0, 7, 24, 25, 49, 50, 71, n // 2 + 3, n} & set(range(n + 1)))
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _clip_numbers(clip: F.ClipFile, root: Path, rotation: int, backend: str = "pyav") -> list[int]:
    row = clip.to_row("vid", 24.0, root)
    return frame_numbers(V.read_clip_frames(row, range(clip.num_frames), root, backend=backend), rotation)


@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "opengop"])
def test_modes_decode_the_same_frames(sources: dict[str, Path], tmp_path: Path, name: str) -> None:
    src = sources[name]
    info = V.probe(src)
    ranges = _ranges(info.num_frames)
    truth = frame_numbers(np.stack(decode_all(src)))
    assert truth == list(range(info.num_frames))
    by_mode = {}
    for mode in C.CLIP_MODES:
        out = tmp_path / mode
        clips = C.cut_clips(src, ranges, out, "vid", mode=mode)
        assert [c.slice_num for c in clips] == list(range(1, len(ranges) + 1))
        assert [(c.start_frame, c.end_frame) for c in clips] == ranges
        assert all(c.num_frames == c.end_frame - c.start_frame for c in clips)
        got = [_clip_numbers(c, out, info.rotation) for c in clips]
        for c, frames in zip(clips, got, strict=True):
            assert frames == truth[c.start_frame : c.end_frame], (mode, c)
        by_mode[mode] = (clips, got)
    exact, copy, virtual = (by_mode[m][0] for m in C.CLIP_MODES)

    # exact: whole frames only, every source frame once, files hold exactly the clip
    assert sum(V.probe(c.path).num_frames for c in exact) == info.num_frames
    assert all(c.frame_offset == 0 and c.file_frames == c.num_frames for c in exact)
    assert all(V.probe(c.path).rotation == info.rotation for c in exact)
    if name == "cfr":
        assert all(V.probe(c.path).fps == 24.0 for c in exact)
        assert all(V.probe(c.path).duration_s == pytest.approx(c.end_time - c.start_time) for c in exact)
    # copy: key-frame aligned files with real pre-roll, and the rows say where the clip starts
    assert any(c.frame_offset > 0 for c in copy)
    assert all(c.file_frames >= c.frame_offset + c.num_frames for c in copy)
    assert all(V.probe(c.path).num_frames == c.file_frames for c in copy)
    # virtual: the source itself
    assert all(c.path == str(src.resolve()) and c.frame_offset == c.start_frame for c in virtual)
    assert by_mode["copy"][1] == by_mode["exact"][1] == by_mode["virtual"][1]

    # times: contiguous, from the source's presentation times
    t = V.frame_times(src)
    for c in exact:
        assert c.start_time == pytest.approx(t[c.start_frame])
    for a, b in zip(exact, exact[1:], strict=False):
        assert a.end_time == pytest.approx(b.start_time)
    assert exact[-1].end_time == pytest.approx(info.duration_s)
    assert [(c.start_time, c.end_time) for c in copy] == [(c.start_time, c.end_time) for c in exact]


@pytest.mark.parametrize("mode", ["exact", "copy"])
def test_decord_reads_clip_files_like_pyav(sources: dict[str, Path], tmp_path: Path, mode: str) -> None:
    """decord (directly and through ``auto``) honours frame_offset on clip files exactly like PyAV."""
    clips = C.cut_clips(sources["cfr"], _ranges(240), tmp_path, "vid", mode=mode)
    for c in clips:
        assert frame_index.build_index(c.path).dec_key[0]  # every clip file starts with a key frame
        for backend in ("auto", "decord"):
            assert _clip_numbers(c, tmp_path, 0, backend) == list(range(c.start_frame, c.end_frame))


def test_layout_rows_and_features(sources: dict[str, Path], tmp_path: Path) -> None:
    clips = C.cut_clips(sources["cfr"], [(0, 100), (100, 240)], tmp_path, "my_vid")
    names = sorted(p.name for p in (tmp_path / "my_vid").iterdir())
    assert names == ["my_vid-Scene-001.mp4", "my_vid-Scene-002.mp4"]  # no temp files left behind
    rows = F.rows_for(clips, "my_vid", 24.0, root=tmp_path)
    assert rows[0]["path"] == "my_vid/my_vid-Scene-001.mp4"
    assert rows[1]["clip_id"] == schema.clip_id_for("my_vid", 2)
    ds = Dataset.from_list(rows, features=schema.CLIPS_FEATURES)
    assert ds.num_rows == 2 and ds[1]["frame_offset"] == 0 and ds[1]["status"] == schema.OK
    assert set(rows[0]) == set(schema.CLIPS_FEATURES)


def test_gaps_between_ranges(sources: dict[str, Path], tmp_path: Path) -> None:
    clips = C.cut_clips(sources["cfr"], [(10, 20), (200, 203)], tmp_path, "g")
    assert [_clip_numbers(c, tmp_path, 0) for c in clips] == [list(range(10, 20)), [200, 201, 202]]


def test_ids_and_ranges_are_checked(sources: dict[str, Path], tmp_path: Path) -> None:
    src = sources["cfr"]
    for bad_id in ("../evil", "a/b", "", "/abs"):
        with pytest.raises(ValueError):
            C.cut_clips(src, [(0, 10)], tmp_path / "out", bad_id)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()
    for bad in ([(0, 300)], [(5, 5)], [(10, 20), (15, 30)], [(20, 30), (0, 10)], []):
        with pytest.raises(ValueError):
            C.cut_clips(src, bad, tmp_path / "out", "v")
    with pytest.raises(ValueError):
        C.cut_clips(src, [(0, 10)], tmp_path / "out", "v", mode="split")
    assert F.clip_path(tmp_path, "v", 1000).name == "v-Scene-1000.mp4"


@pytest.mark.parametrize(
    "name, cls, method",
    [("cfr", "_ClipMuxer", "mux"), ("rot90", "_ExactWriter", "write")],  # one encoder / one per clip
)
def test_failure_never_leaves_a_partial_clip(
    sources: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    cls: str,
    method: str,
) -> None:
    """A crash mid-clip leaves the finished clips, no file under the failing clip's name, no temp file;
    a rerun clears stale temp files of a killed run and produces complete clips."""
    n = V.probe(sources[name]).num_frames
    ranges = [(0, n // 4), (n // 4, n // 2), (n // 2, n)]
    target = getattr(exact_cut, cls)
    real = getattr(target, method)
    calls = {"n": 0}

    def flaky(self: object, item: object) -> None:
        calls["n"] += 1
        if calls["n"] == n // 4 + 10:  # inside clip 2
            raise RuntimeError("simulated crash")
        real(self, item)

    monkeypatch.setattr(target, method, flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        C.cut_clips(sources[name], ranges, tmp_path, "k")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["k-Scene-001.mp4"]
    assert V.probe(tmp_path / "k" / "k-Scene-001.mp4").num_frames == n // 4

    stale = tmp_path / "k" / f"{F.TMP_PREFIX}k-Scene-002.99999{F.TMP_SUFFIX}"
    stale.write_bytes(b"half a clip")  # what a kill -9 leaves behind
    clips = C.cut_clips(sources[name], ranges, tmp_path, "k")
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [f"k-Scene-00{i}.mp4" for i in (1, 2, 3)]
    assert [V.probe(c.path).num_frames for c in clips] == [e - s for s, e in ranges]


def test_untrusted_timestamps(sources: dict[str, Path], tmp_path: Path) -> None:
    """Exact and virtual clips count decoded frames; copy needs timestamps and says so."""
    ranges = [(0, 30), (30, 77), (77, 96)]
    for mode in ("exact", "virtual"):
        clips = C.cut_clips(sources["avi"], ranges, tmp_path / mode, "a", mode=mode)
        assert [_clip_numbers(c, tmp_path / mode, 0) for c in clips] == [list(range(s, e)) for s, e in ranges]
    with pytest.raises(VideoError, match="exact"):
        C.cut_clips(sources["avi"], ranges, tmp_path / "copy", "a", mode="copy")


def test_bad_source(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    p.write_text("not a video")
    with pytest.raises(VideoError):
        C.cut_clips(p, [(0, 1)], tmp_path, "x")


@pytest.fixture(scope="module")
def with_audio(tmp_path_factory: pytest.TempPathFactory):
    from lovr_hf.demo.samples import make_video as make_scene_video
    from lovr_hf.demo.scenes import SceneSpec

    path = tmp_path_factory.mktemp("audio") / "tones.mp4"
    return make_scene_video(path, [SceneSpec(30), SceneSpec(18), SceneSpec(40)], 96, 64, 12, seed=4, audio=True,
                            audio_rate=16000, audio_layout="stereo", preset="ultrafast")


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])  # one encoder for all clips / one encoder per clip
def test_exact_clips_keep_the_audio_of_their_range(with_audio, tmp_path: Path, codec: str) -> None:
    gt = with_audio
    ranges = gt.scene_ranges()
    clips = C.cut_clips(gt.path, ranges, tmp_path, "a", codec=codec)
    for k, c in enumerate(clips):
        with av.open(c.path) as f:
            a = f.streams.audio[0]
            assert (a.codec_context.name, a.rate, a.codec_context.layout.name) == ("aac", 16000, "stereo")
            pcm = np.concatenate([x.to_ndarray() for x in f.decode(a)], axis=1)
        want = round((c.end_frame - c.start_frame) / gt.fps * gt.audio_rate)
        assert want <= pcm.shape[1] < want + 2048  # sample-exact window, rounded up to whole AAC frames
        seg = pcm[0, 1024:want]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        assert abs(np.fft.rfftfreq(len(seg), 1 / gt.audio_rate)[spec.argmax()] - gt.audio_freqs[k]) < 5
        assert V.probe(c.path).num_frames == c.num_frames
    silent = C.cut_clips(gt.path, ranges, tmp_path / "silent", "a", audio=False)
    copied = C.cut_clips(gt.path, ranges, tmp_path / "copy", "a", mode="copy")
    for c in silent + copied:  # --no-audio, and copy clips (video only)
        with av.open(c.path) as f:
            assert not f.streams.audio
