"""The offline frame describer (demo captioner) and its embedder: captions follow the pixels, retrieval works."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lovr_hf import schema
from lovr_hf.backends.base import CAPTIONERS, EMBEDDERS, GenerationParams
from lovr_hf.backends.standins.describer import COLOURS, DESCRIBER_ID, describe
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig, segment
from lovr_hf.video.reader import read_frames


def solid(rgb: tuple[int, int, int], n: int = 6, h: int = 36, w: int = 64) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (n, h, w, 3)).copy()


def moving_stripes(n: int = 8, dx: int = 3, h: int = 48, w: int = 96) -> np.ndarray:
    """Irregular yellow/blue vertical stripes sliding ``dx`` pixels per frame (not periodic: one true shift)."""
    rng = np.random.default_rng(0)
    stripe = np.repeat(rng.random(w // 4) < 0.5, 4)
    frames = []
    for t in range(n):
        s = np.roll(stripe, dx * t)
        img = np.where(s[None, :, None], np.array([230, 215, 50]), np.array([40, 70, 210]))
        frames.append(np.broadcast_to(img, (h, w, 3)))
    return np.stack(frames).astype(np.uint8)


def test_describe_names_the_colours_light_and_motion_it_measures() -> None:
    red = describe(solid(COLOURS["red"]))
    assert "red covers most of the frame" in red and "stays still" in red
    assert "dark" in describe(solid((10, 10, 12)))
    right = describe(moving_stripes(dx=3))
    left = describe(moving_stripes(dx=-3))
    assert "towards the right" in right and "towards the left" in left
    assert "yellow" in right and "blue" in right
    flash = solid(COLOURS["navy"], n=9)
    flash[4] = 250
    assert "flash" in describe(flash) and "flash" not in describe(solid(COLOURS["navy"], n=9))
    changing = np.concatenate([solid(COLOURS["green"], 4), solid(COLOURS["orange"], 4), solid(COLOURS["purple"], 4)])
    assert "opens on green" in describe(changing) and "ends on purple" in describe(changing)
    assert describe(moving_stripes()) == describe(moving_stripes())  # a pure function of the pixels


def test_describer_embedder_matches_captions_to_their_frames() -> None:
    emb = EMBEDDERS.create("describer")
    clips = [solid(COLOURS[c]) for c in ("red", "blue", "green", "yellow", "magenta")]
    captions = [describe(f) for f in clips]
    t = emb.embed_text(captions)
    v = np.stack([emb.embed_frames(f).mean(0) for f in clips])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert (np.argmax(t @ v.T, axis=1) == np.arange(len(clips))).all()


def test_describer_captions_a_real_video_through_the_caption_stage(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "v.mp4", [SceneSpec(72), SceneSpec(72, kind="static"), SceneSpec(72, kind="pan")],
               96, 64, 12, seed=5)
    repo = BenchmarkRepo(tmp_path / "lovr")
    segment(videos, repo, SegmentConfig(clip_mode="virtual"))
    caption(repo, CaptionConfig(backend="describer", model_path="describer"))
    rows = repo.read(schema.CLIP_CAPTIONS).to_list()
    assert len(rows) == 3 and all(r["status"] == schema.OK and r["model"] == DESCRIBER_ID for r in rows)
    assert "stays still" in rows[1]["caption"] and "moves quickly towards the" in rows[2]["caption"]
    assert len({r["caption"] for r in rows}) == 3
    # the captioner describes exactly the frames it is given
    frames = read_frames(videos / "v.mp4", list(range(72, 144, 9)))
    cap = CAPTIONERS.create("describer").caption([frames], {"system": "", "user": ""}, GenerationParams())[0]
    assert cap == describe(frames)
