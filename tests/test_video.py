"""lovr_hf.video.reader: exact probing and frame-exact reads, checked against frames that carry their own index
(tests/_video_helpers.py writes them)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import av
import numpy as np
import pytest
from _video_helpers import H, W, decode_all, frame_number, frame_numbers, make_video, numbered_videos

from lovr_hf.video import frame_index
from lovr_hf.video import reader as V
from lovr_hf.video.frame_index import VideoError


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return numbered_videos(tmp_path_factory.mktemp("videos"))


# ---------------------------------------------------------------------------------------------------------
# probe


def test_probe_values(vids: dict[str, Path]) -> None:
    info = V.probe(vids["cfr"])
    assert (info.num_frames, info.fps, info.width, info.height, info.rotation) == (240, 24.0, W, H, 0)
    assert info.codec == "h264"
    assert info.duration_s == pytest.approx(10.0)

    rot = V.probe(vids["rot90"])
    assert (rot.rotation, rot.width, rot.height, rot.coded_width, rot.coded_height) == (90, H, W, W, H)

    vfr = V.probe(vids["vfr"])
    t = V.frame_times(vids["vfr"])
    assert vfr.num_frames == 120 and len(t) == 120
    gaps = np.diff(t)
    assert gaps.min() >= 0.024 and gaps.max() <= 0.070 and gaps.std() > 0.005  # really variable
    assert vfr.fps == pytest.approx(120 / vfr.duration_s, rel=0.02)

    assert V.probe(vids["mkv"]).num_frames == 96
    assert frame_index.build_index(vids["cfr"]).reliable and not frame_index.build_index(vids["avi"]).reliable


@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "opengop", "mkv", "editlist", "avi"])
def test_num_frames_equals_full_decode(vids: dict[str, Path], name: str) -> None:
    frames = decode_all(vids[name])
    assert V.probe(vids[name]).num_frames == len(frames)


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=44100)
        for k in range(10):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 44100, k * 1024
            c.mux(s.encode(fr))
        c.mux(s.encode(None))


def _faststart(src: Path, dst: Path) -> Path:
    """Remux with the index (moov) first, so that a cut file still opens and must be caught by counting."""
    with av.open(str(src)) as c, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        vs = c.streams.video[0]
        ost = out.add_stream_from_template(vs)
        for p in c.demux(vs):
            if p.size == 0 and p.pts is None:
                continue
            p.stream = ost
            out.mux(p)
    return dst


@pytest.mark.parametrize(
    "kind, message",
    [
        ("zero", "empty file"),
        ("text", "not a readable video"),
        ("truncated", "not a readable video"),
        ("truncated_faststart", "truncated"),
        ("truncated_mkv", "truncated"),
        ("audio", "no video stream"),
        ("garbage", "undecodable"),
        ("missing", "no such file"),
    ],
)
def test_probe_bad_files(vids: dict[str, Path], tmp_path: Path, kind: str, message: str) -> None:
    p = tmp_path / f"{kind}.mp4"
    data = vids["cfr"].read_bytes()
    if kind == "zero":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a video\n" * 50)
    elif kind == "truncated":  # moov at the end: the cut file has no index at all
        p.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_faststart":
        full = _faststart(vids["cfr"], tmp_path / "fs.mp4").read_bytes()
        p.write_bytes(full[: len(full) * 2 // 3])
    elif kind == "truncated_mkv":
        p = tmp_path / "cut.mkv"
        full = vids["mkv"].read_bytes()
        p.write_bytes(full[: len(full) // 2])
    elif kind == "audio":
        _write_audio_only(p)
    elif kind == "garbage":  # valid container, scrambled H.264 payload
        full = bytearray(_faststart(vids["cfr"], tmp_path / "fs.mp4").read_bytes())
        start = full.find(b"mdat") + 8
        full[start:] = bytes((b * 7 + 13) & 255 for b in full[start:])
        p.write_bytes(bytes(full))
    with pytest.raises(VideoError, match=message):
        V.probe(p)
    with pytest.raises(VideoError):
        V.read_frames(p, [0])


def test_one_frame_video(tmp_path: Path) -> None:
    p = make_video(tmp_path / "one.mp4", 1)
    assert V.probe(p).num_frames == 1
    assert frame_numbers(V.read_frames(p, [0], backend="pyav")) == [0]


# ---------------------------------------------------------------------------------------------------------
# reading


@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "opengop", "mkv", "editlist", "avi"])
def test_pyav_reads_every_frame_in_order(vids: dict[str, Path], name: str) -> None:
    info = V.probe(vids[name])
    truth = frame_numbers(np.stack(decode_all(vids[name])))
    got = frame_numbers(V.read_frames(vids[name], range(info.num_frames), backend="pyav"), info.rotation)
    assert got == truth
    if name == "editlist":
        assert truth[:80] == list(range(40, 120))  # the hidden pre-roll is not a frame
    else:
        assert truth == list(range(info.num_frames))


@pytest.mark.parametrize("backend", ["pyav", "decord", "auto"])
@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "opengop", "mkv", "editlist", "avi"])
def test_random_access_with_offsets(
    vids: dict[str, Path], name: str, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = vids[name]
    info = V.probe(path)
    truth = frame_numbers(np.stack(decode_all(path)))
    if backend == "decord" and name in ("rot90", "opengop", "editlist", "avi"):
        # decord rotates/miscounts/mis-seeks these: it must refuse rather than return wrong frames
        with pytest.raises(VideoError, match="decord"):
            V.read_frames(path, [0, 5], backend="decord")
        return
    rng = random.Random(name)
    n = info.num_frames
    with caplog.at_level(logging.WARNING, logger="lovr_hf.video.reader"):
        for offset in (0, 7, n // 2):
            count = n - offset - 3
            idx = rng.sample(range(count), min(12, count)) + [0, count - 1, 2, 2]  # unsorted, repeats
            frames = V.read_frames(path, idx, backend=backend, frame_offset=offset, num_frames=count)
            assert frames.shape == (len(idx), info.height, info.width, 3) and frames.dtype == np.uint8
            assert frame_numbers(frames, info.rotation) == [truth[offset + i] for i in idx]
    # the seeking path lined up with the index: no fallback to decoding from the start
    assert not [r for r in caplog.records if "mismatch" in r.getMessage()]


def test_decord_overcounts_editlist_files(vids: dict[str, Path]) -> None:
    """The bug of the original pipeline, kept visible: decord's len() counts hidden pre-roll frames."""
    decord = pytest.importorskip("decord")
    n = V.probe(vids["editlist"]).num_frames
    assert n == len(decode_all(vids["editlist"]))
    assert len(decord.VideoReader(str(vids["editlist"]))) > n
    assert frame_index.build_index(vids["editlist"]).dec_discard.sum() > 0


def test_bounds_and_bad_backend(vids: dict[str, Path]) -> None:
    with pytest.raises(IndexError):
        V.read_frames(vids["cfr"], [10], frame_offset=5, num_frames=10)
    with pytest.raises(IndexError):
        V.read_frames(vids["cfr"], [-1])
    with pytest.raises(ValueError):
        V.read_frames(vids["cfr"], [0], frame_offset=235, num_frames=10)
    with pytest.raises(ValueError):
        V.read_frames(vids["cfr"], [0], backend="opencv")
    assert V.read_frames(vids["cfr"], []).shape == (0, H, W, 3)


def test_resize_keeps_display_geometry(vids: dict[str, Path]) -> None:
    small = V.read_frames(vids["cfr"], [3, 100], size=(80, 48), backend="pyav")
    assert small.shape == (2, 48, 80, 3)
    full = V.read_frames(vids["cfr"], [3, 100], backend="pyav")
    down = full.reshape(2, 48, 2, 80, 2, 3).mean(axis=(2, 4))
    assert np.abs(small.astype(np.float32) - down).mean() < 12
    rot = V.read_frames(vids["rot90"], [7], size=(48, 80))  # display is portrait: 96 wide, 160 high
    assert rot.shape == (1, 80, 48, 3)
    assert V.read_frames(vids["cfr"], [3], size=(80, 48), backend="auto").shape == (1, 48, 80, 3)


def test_iter_frames(vids: dict[str, Path]) -> None:
    got = [
        (i, frame_number(a))
        for i, a in V.iter_frames(vids["cfr"], interval=30, frame_offset=5, num_frames=200)
    ]
    assert got == [(i, 5 + i) for i in range(0, 200, 30)]
    vfr = [(i, frame_number(a)) for i, a in V.iter_frames(vids["vfr"], interval=7, start=3)]
    assert vfr == [(i, i) for i in range(3, 120, 7)]


def test_clip_row_contract(vids: dict[str, Path], tmp_path: Path) -> None:
    root = vids["cfr"].parent
    row = {"path": vids["cfr"].name, "frame_offset": 100, "num_frames": 50}
    assert frame_numbers(V.read_clip_frames(row, [0, 49, 10], root)) == [100, 149, 110]
    ref = V.ClipRef.from_row(row, root)
    assert [i for i, _ in ref.iter(interval=20)] == [0, 20, 40]
    absolute = {**row, "path": str(vids["cfr"])}
    assert frame_numbers(V.read_clip_frames(absolute, [1])) == [101]
    with pytest.raises(ValueError, match="escapes"):
        V.read_clip_frames({**row, "path": "../../etc/passwd"}, [0], root)
    with pytest.raises(ValueError, match="relative"):
        V.read_clip_frames(row, [0], None)
    with pytest.raises(IndexError):
        V.read_clip_frames(row, [50], root)


def test_evenly_spaced() -> None:
    assert V.evenly_spaced(10, 5) == [1, 3, 5, 7, 9]
    assert V.evenly_spaced(3, 8) == [0, 1, 2]
    assert V.evenly_spaced(0, 4) == []


def test_concurrent_reads_of_one_file(vids: dict[str, Path]) -> None:
    """Captioning/embedding decode in thread pools: the cached decord reader must not be shared unguarded."""
    from concurrent.futures import ThreadPoolExecutor

    def job(k: int) -> bool:
        idx = random.Random(k).sample(range(240), 6)
        return frame_numbers(V.read_frames(vids["cfr"], idx, backend="auto")) == idx

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(job, range(40)))
