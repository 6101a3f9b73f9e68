"""lovr_hf.video.decode_plan and lovr_hf.video.prefetch: one sequential pass per source that returns exactly the frames
asked for (frames carry their own index), seeks only where that skips decoding, decodes ahead under a byte
budget without deadlock, and a running mean equal to the naive one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _video_helpers import decode_all, frame_numbers, make_video, numbered_videos

from lovr_hf.evaluation.visual_plan import RunningMean
from lovr_hf.stats.vectors import l2_normalize as l2n
from lovr_hf.video import reader as V
from lovr_hf.video.decode_plan import (
    ClipDecoder,
    FrameRequest,
    FrameSize,
    SourceRead,
    read_source,
    size_request,
)
from lovr_hf.video.prefetch import StreamPool, auto_workers, resolve_workers


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("plan_videos")
    v = numbered_videos(d)
    v["long"] = make_video(d / "long.mp4", 1200, gop=24)  # 50 s at 24 fps, a key frame every second
    return v


def rows_for(path: Path, spans: list[tuple[int, int]]) -> list[dict]:
    return [{"clip_id": f"c{k}", "path": str(path), "frame_offset": a, "num_frames": n} for k, (a, n) in enumerate(spans)]


# ---- exact frames ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cfr", "vfr", "rot90", "opengop", "mkv", "avi", "editlist"])
def test_iter_targets_returns_exactly_the_targets(vids: dict[str, Path], name: str) -> None:
    info = V.probe(vids[name])
    rng = np.random.default_rng(len(name))
    targets = sorted(rng.choice(info.num_frames, size=min(17, info.num_frames), replace=False).tolist())
    got = [f for _, f in V.iter_targets(vids[name], targets)]
    truth = frame_numbers(np.stack(decode_all(vids[name])))  # plain PyAV decode of every frame
    assert frame_numbers(np.stack(got), info.rotation) == [truth[t] for t in targets]


def test_clip_frames_are_exact_in_the_order_asked(vids: dict[str, Path]) -> None:
    rows = rows_for(vids["cfr"], [(0, 40), (40, 30), (100, 60), (230, 10)])
    idx = {"c0": [39, 0, 5, 5], "c1": [0, 29], "c2": list(range(0, 60, 7)), "c3": [9, 3]}
    cf = ClipDecoder(rows, idx, workers=2)
    for r in rows:
        frames, err, secs = cf.get([r["clip_id"]])[0]
        assert err is None and secs >= 0
        assert frame_numbers(frames) == [r["frame_offset"] + i for i in idx[r["clip_id"]]]
    cf.close()


def test_declared_size_is_converted_in_one_step(vids: dict[str, Path]) -> None:
    rows = rows_for(vids["rot90"], [(0, 30), (30, 30)])
    size = FrameSize(short_side=48)
    (a, err, _), (b, _, _) = ClipDecoder(rows, {"c0": [0, 10], "c1": [29]}, size=size, workers=0).get(["c0", "c1"])
    assert err is None
    info = V.probe(vids["rot90"])  # 96 x 160 on display (rotated)
    w, h = size.resolve(info.width, info.height)
    assert a.shape == (2, h, w, 3) and min(w, h) == 48
    ref = V.read_frames(vids["rot90"], [0, 10], backend="pyav", size=(w, h))
    assert np.array_equal(a, ref)  # the same swscale conversion as a sized read


def test_frame_size_rules() -> None:
    assert FrameSize(width=224, height=224).resolve(640, 360) == (224, 224)
    assert FrameSize(short_side=224).resolve(640, 360) == (398, 224)
    assert FrameSize(short_side=224).resolve(200, 100) is None  # never enlarged
    w, h = FrameSize(max_pixels=100_000, multiple=28).resolve(1920, 1080)
    assert w * h <= 100_000 and w % 28 == 0 and h % 28 == 0 and abs(w / h - 16 / 9) < 0.15
    assert FrameSize(max_pixels=10**7).resolve(1920, 1080) is None
    with pytest.raises(ValueError):
        FrameSize(width=10)

    class Model:
        decode_size = (64, 48)

    assert size_request(Model()) == FrameSize(width=64, height=48)
    assert size_request(object()) is None


def test_bad_clips_are_results_not_exceptions(vids: dict[str, Path], tmp_path: Path) -> None:
    rows = rows_for(vids["cfr"], [(0, 20), (230, 20), (10, 10), (50, 5)])  # c1 runs past the 240 frames
    rows.append({"clip_id": "missing", "path": str(tmp_path / "nope.mp4"), "frame_offset": 0, "num_frames": 5})
    rows.append({"clip_id": "escape", "path": "../../etc/passwd", "frame_offset": 0, "num_frames": 5})
    idx = {"c0": [0, 19], "c1": [0], "c2": [7], "c3": [5], "missing": [0], "escape": [0]}
    cf = ClipDecoder(rows, idx, root=tmp_path, workers=2)
    out = dict(zip(idx, cf.get(list(idx))))
    assert frame_numbers(out["c0"][0]) == [0, 19] and frame_numbers(out["c2"][0]) == [17]
    assert out["c1"][0] is None and "outside the file" in out["c1"][1]
    assert out["c3"][0] is None and "outside the clip" in out["c3"][1]
    assert out["missing"][0] is None and "no such file" in out["missing"][1]
    assert out["escape"][0] is None and out["escape"][1].startswith("cannot decode clip: ValueError")
    again = cf.get(["c0"])[0]  # asked twice: decoded again on its own
    assert frame_numbers(again[0]) == [0, 19]


# ---- one pass, seeks only where they save work -----------------------------------------------------------


@pytest.fixture
def count_decoded(monkeypatch):
    """Count the frames the decoder produces (the work), through a proxy around every opened container."""
    counter = {"frames": 0, "opens": 0}
    real = V._open

    class Counting:
        def __init__(self, c) -> None:
            self.c = c

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.c.close()

        def decode(self, *a, **k):
            for f in self.c.decode(*a, **k):
                counter["frames"] += 1
                yield f

        def __getattr__(self, name):
            return getattr(self.c, name)

    def opening(path):
        counter["opens"] += 1
        return Counting(real(path))

    monkeypatch.setattr(V, "_open", opening)
    return counter


def test_one_pass_for_dense_clips(vids: dict[str, Path], count_decoded) -> None:
    V.probe(vids["long"])  # index and probe are cached: count the read only
    count_decoded.update(frames=0, opens=0)
    spans = [(a, 100) for a in range(0, 1200, 100)]
    idx = {f"c{k}": list(range(0, 100, 10)) for k in range(len(spans))}
    cf = ClipDecoder(rows_for(vids["long"], spans), idx, workers=1)
    got = cf.get(list(idx))
    assert all(e is None for _, e, _ in got)
    assert count_decoded["opens"] == 1  # twelve clips, one container, one pass
    assert count_decoded["frames"] <= 1200  # no frame decoded twice


def test_sparse_clips_of_a_long_video_seek(vids: dict[str, Path], count_decoded) -> None:
    V.probe(vids["long"])
    count_decoded.update(frames=0, opens=0)
    spans = [(100, 10), (700, 10), (1150, 10)]
    cf = ClipDecoder(rows_for(vids["long"], spans), {"c0": [0, 9], "c1": [5], "c2": [0, 9]}, workers=0)
    got = cf.get(["c0", "c1", "c2"])
    assert [frame_numbers(f) for f, _, _ in got] == [[100, 109], [705], [1150, 1159]]
    assert count_decoded["opens"] == 1
    assert count_decoded["frames"] < 150  # three GOPs' worth, not the 1160 frames up to the last target


def test_read_source_chunks(vids: dict[str, Path]) -> None:
    reqs = [FrameRequest("a", str(vids["cfr"]), 0, 100, tuple(range(0, 100, 3)))]
    read = SourceRead.build(str(vids["cfr"]), reqs, [0])
    chunks = list(read_source(read, chunk_frames=8))
    assert [len(c.frames) for c in chunks] == [8, 8, 8, 8, 2]
    assert frame_numbers(np.concatenate([c.frames for c in chunks])) == list(range(0, 100, 3))


# ---- budgets and the pool ------------------------------------------------------------------------------------


def test_clip_frames_under_a_tiny_budget_never_deadlocks(vids: dict[str, Path]) -> None:
    spans = [(a, 20) for a in range(0, 240, 20)]
    rows = rows_for(vids["cfr"], spans) + rows_for(vids["mkv"], [(0, 48), (48, 48)])
    for k, r in enumerate(rows):
        r["clip_id"] = f"k{k}"
    idx = {r["clip_id"]: list(range(r["num_frames"])) for r in rows}
    one_clip = 20 * 96 * 160 * 3
    cf = ClipDecoder(rows, idx, workers=3, max_bytes=one_clip)
    for k in range(0, len(rows), 3):
        keys = [r["clip_id"] for r in rows[k : k + 3]]
        for key, (frames, err, _) in zip(keys, cf.get(keys)):
            assert err is None and len(frames) == len(idx[key])
    assert cf.pool is not None and cf.pool.peak_bytes <= 2 * 48 * 96 * 160 * 3  # budget + the item waited for


def _counting_task(n: int, size: int, log: list, key: str):
    def make():
        for i in range(n):
            log.append((key, i))
            yield (key, i), size
    return make


def test_stream_pool_order_budget_and_lookahead() -> None:
    log: list = []
    pool = StreamPool(workers=2, max_bytes=10, depth=2)
    for k in "abcd":
        pool.add(k, _counting_task(5, 4, log, k))
    assert list(pool.items("a")) == [("a", i) for i in range(5)]
    time.sleep(0.2)  # b and c run ahead (depth 2), paused by the 10-byte budget; d has not started
    assert pool.buffered_bytes <= 12 and not any(k == "d" for k, _ in log)
    assert list(pool.items("c")) == [("c", i) for i in range(5)]  # a later task first: no deadlock
    assert list(pool.items("b")) == [("b", i) for i in range(5)]
    assert list(pool.items("d")) == [("d", i) for i in range(5)]
    assert pool.peak_bytes <= 10 + 4


def test_stream_pool_errors_early_stop_and_close() -> None:
    def failing():
        yield "x", 1
        raise RuntimeError("boom")

    pool = StreamPool(workers=1, max_bytes=100)
    pool.add("f", failing)
    it = pool.items("f")
    assert next(it) == "x"
    with pytest.raises(RuntimeError, match="boom"):
        next(it)
    stop = threading.Event()

    def endless():
        i = 0
        while not stop.is_set():
            yield i, 10
            i += 1

    pool.add("e", endless)
    it = pool.items("e")
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # the consumer stops early: buffered items are dropped, the producer is told to stop
    time.sleep(0.1)
    assert pool.buffered_bytes == 0
    with pytest.raises(RuntimeError, match="already read"):
        next(pool.items("e"))
    pool.close()
    stop.set()


def test_worker_counts() -> None:
    assert auto_workers(2) == 2 and auto_workers(16) == 8 and auto_workers(64) == 8
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3 and resolve_workers(None) == auto_workers()


# ---- pooling ---------------------------------------------------------------------------------------------------


def test_running_mean_equals_the_naive_mean() -> None:
    """The visual stage pools chunk by chunk; the result is today's mean of normalised frame features."""
    rng = np.random.default_rng(0)
    for n, d in ((1, 8), (7, 512), (20_000, 64)):
        feats = l2n(rng.normal(size=(n, d)).astype(np.float32))
        naive = l2n(feats.mean(axis=0))
        m = RunningMean()
        k = 0
        while k < n:
            step = int(rng.integers(1, 97))
            m.add(feats[k : k + step])
            k += step
        np.testing.assert_allclose(m.vector(), naive, atol=2e-6)
        assert m.n == n


def test_rows_planned_late_and_inline_decoding(vids: dict[str, Path]) -> None:
    """A row handed over later (a worker process that did not plan it) is decoded like the others; with
    ``workers=0`` everything runs inline in the caller's thread."""
    rows = rows_for(vids["cfr"], [(0, 10)])
    for workers in (0, 2):
        cf = ClipDecoder(rows, {"c0": [1]}, workers=workers)
        late = {"clip_id": "late", "path": str(vids["mkv"]), "frame_offset": 10, "num_frames": 20}
        assert "late" not in cf
        cf.add(late, [0, 19])
        assert "late" in cf
        (a, _, _), (b, err, _) = cf.get(["c0", "late"])
        assert err is None and frame_numbers(a) == [1] and frame_numbers(b) == [10, 29]
        assert list(cf)[0][0] == "c0"  # iteration: every planned clip in row order (decoded again)
        cf.close()
