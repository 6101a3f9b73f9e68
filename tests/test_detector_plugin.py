"""A scene detector is used through what `SceneDetector` declares, never probed (issue #23: capabilities on the ABCs).

A user's detector (``--detector my_module:MyDetector``) that implements only ``detect`` is segmented like a
built-in one, adaptive search included; a built-in that declares itself ``rescorable`` is decoded once per
video under ``--adaptive``. Real generated videos, real decoding, real clip rows.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.backends.base import DETECTORS, SceneDetector
from lovr_hf.backends.detectors.fast import FastAdaptiveDetector, FastContentDetector
from lovr_hf.backends.detectors.pyscenedetect import PySceneDetectContent
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, segment

FPS = 12

PLUGIN = textwrap.dedent('''
    """Two user detectors that implement only what SceneDetector requires."""
    from lovr_hf.backends.base import SceneDetector
    from lovr_hf.video.reader import probe

    CREATED = []


    class FixedCuts(SceneDetector):
        """Cuts at frames 84 and 180 whatever the video; no threshold, no analyze, no scores."""

        name = "fixed-cuts"

        def __init__(self, threshold=None, min_scene_len_s=5.0, downscale="auto"):
            CREATED.append(("fixed", threshold))

        def detect(self, path):
            return [84, 180]


    class Periodic(SceneDetector):
        """A cut every ``threshold`` frames (a higher threshold: fewer clips), found by detect() alone."""

        name = "periodic"

        def __init__(self, threshold=None, min_scene_len_s=5.0, downscale="auto"):
            self.threshold = 34.0 if threshold is None else float(threshold)
            CREATED.append(("periodic", self.threshold))

        def detect(self, path):
            n, step = probe(path).num_frames, int(self.threshold)
            return list(range(step, n, step))
''')


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("detector_plugin_videos")
    make_video(d / "long.mp4", [SceneSpec(84), SceneSpec(96), SceneSpec(96)], 128, 72, FPS, seed=5)
    return d


@pytest.fixture()
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "my_detectors.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_detectors", raising=False)
    import my_detectors

    my_detectors.CREATED.clear()
    return my_detectors


def _ranges(repo: BenchmarkRepo) -> list[tuple[int, int]]:
    return sorted((r["start_frame"], r["end_frame"]) for r in repo.read(schema.CLIPS))


def test_a_detect_only_plugin_segments_through_the_cli(long_video: Path, plugin, tmp_path: Path) -> None:
    # before: the stage read det.threshold, which the ABC did not declare: every video became a bug row
    # ("AttributeError: 'FixedCuts' object has no attribute 'threshold'") and the command exited 1
    rc = cli_main(["segment", "--input_folder", str(long_video), "--repo", str(tmp_path / "r"),
                   "--detector", "my_detectors:FixedCuts", "--clip_mode", "virtual"])
    assert rc == 0
    repo = BenchmarkRepo(tmp_path / "r")
    (video,) = repo.read(schema.VIDEOS).to_list()
    assert video[schema.STATUS] == schema.OK, video[schema.ERROR_COL]
    assert video["threshold"] is None and video["downscale"] is None  # it has neither
    assert _ranges(repo) == [(0, 84), (84, 180), (180, 276)]


def test_adaptive_search_recreates_a_detector_that_cannot_rescore(long_video: Path, plugin, tmp_path: Path) -> None:
    repo = BenchmarkRepo(tmp_path / "r")
    res = segment(long_video, repo, SegmentConfig(detector="my_detectors:Periodic", clip_mode="virtual",
                                                  adaptive=True, min_clips=1, max_clips=3, min_clip_duration=0.0,
                                                  max_adaptive_iter=40))
    assert res.processed == 1
    (video,) = repo.read(schema.VIDEOS).to_list()
    assert video[schema.STATUS] == schema.OK, video[schema.ERROR_COL]
    settled = video["threshold"]
    tried = [t for kind, t in plugin.CREATED if kind == "periodic"]
    # the search started at 34 and raised the threshold x1.1 per try, one new detector per threshold tried
    assert tried[0] == 34.0 and settled in tried and len(tried) > 2
    assert round(settled / 34.0, 6) in {round(1.1**n, 6) for n in range(1, 41)}
    ranges = _ranges(repo)
    step = int(settled)
    assert 1 <= len(ranges) <= 3
    assert [s for s, _ in ranges] == list(range(0, 276, step))  # the cuts Periodic gives at the settled value


def test_rescorable_detectors_decode_once_under_adaptive(long_video: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert FastContentDetector.rescorable
    assert not FastAdaptiveDetector.rescorable and not PySceneDetectContent.rescorable
    calls: list[str] = []
    real = FastContentDetector.scores

    def counted(self, path):
        calls.append(path)
        return real(self, path)

    monkeypatch.setattr(FastContentDetector, "scores", counted)
    repo = BenchmarkRepo(tmp_path / "r")
    # 3 scenes of 7-8 s; at most 1 clip wanted: the search raises the threshold until no cut is left
    segment(long_video, repo, SegmentConfig(clip_mode="virtual", adaptive=True, min_clips=1, max_clips=1,
                                            max_adaptive_iter=60))
    (video,) = repo.read(schema.VIDEOS).to_list()
    assert video[schema.STATUS] == schema.OK and video["threshold"] > 34.0 * 1.1
    assert len(calls) == 1  # several thresholds tried, one decode


def test_a_detector_that_is_not_rescorable_says_so(long_video: Path) -> None:
    det = DETECTORS.create("adaptive-fast")
    res = det.analyze(str(long_video / "long.mp4"))  # a built-in reports more than detect(): threshold, downscale
    assert res.cuts == det.detect(str(long_video / "long.mp4")) and res.threshold == det.threshold == 3.0
    assert res.extra["downscale"] is not None
    assert SceneDetector.analyze(det, "x.mp4") is None  # the ABC's default: detect() and threshold are all
    with pytest.raises(NotImplementedError, match="not rescorable"):
        det.scores("x.mp4")


def test_a_detector_that_is_not_a_scene_detector_is_refused_by_name(long_video: Path, plugin, tmp_path: Path,
                                                                     capsys) -> None:
    """A plug-in class that does not implement SceneDetector is one line and exit 2 before any video, as are a
    missing module or class and a mistyped name; before, each failed every video as a bug row (exit 1)."""
    (tmp_path / "not_detectors.py").write_text("class Cuts:\n    def detect(self, path):\n        return [84]\n")
    cases = {"not_detectors:Cuts": "is not a lovr_hf.backends.base.SceneDetector subclass",
             "my_detectors:NoSuchClass": "module 'my_detectors' has no 'NoSuchClass'",
             "no_such_module_zz:Det": "no module 'no_such_module_zz' to import",
             "contnt": "unknown detectors 'contnt'"}
    for spec, says in cases.items():
        rc = cli_main(["-q", "segment", "--input_folder", str(long_video), "--repo", str(tmp_path / spec[:5]),
                       "--detector", spec, "--clip_mode", "virtual"])
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("lovr ")]
        assert rc == 2 and "Traceback" not in err, err
        assert len(lines) == 1 and says in lines[0] and spec in lines[0], err
