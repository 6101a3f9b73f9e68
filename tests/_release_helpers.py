"""A miniature official LoVR release in the original layout, a frame-recording embedder, and a restatement
of the original ``calc_pass`` (TechNomad-ds/LoVR-benchmark, 00ca611 ``*_test.py`` / HEAD ``evaluate/``),
shared by the release and protocol tests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lovr_hf.backends.base import Embedder

FPS = 10
#: (video id, clip count, clip colours): ids as YouTube makes them (leading '-', mixed case, '_')
VIDEOS = {
    "-7wwfGJXEZg": [(210, 40, 30), (30, 60, 200), (40, 190, 60)],
    "Ab_9-xYz": [(200, 200, 40), (160, 40, 170)],
    "-_q3Q": [(20, 170, 180), (230, 120, 20)],
}
BROKEN = ("Ab_9-xYz", "Ab_9-xYz-Scene-003")  # a file on disk that does not decode
MISSING = "-_q3Q-Scene-007"  # listed in all_clip.jsonl, no file on disk
#: the released query list (file order): fewer clips than on disk, the broken and the missing clip included
QUERIES = ["-7wwfGJXEZg-Scene-002", "Ab_9-xYz-Scene-001", "-_q3Q-Scene-002", "-7wwfGJXEZg-Scene-001",
           BROKEN[1], MISSING]
WORDS = ["red", "blue", "green", "yellow", "purple", "teal", "orange"]


def encode_clip(path: Path, images: Iterable[np.ndarray], fps: int = FPS, lossless: bool = False) -> None:
    """H.264 clip of RGB ``images`` (all of one size) at ``fps``, in the release's mp4 layout: lossy as the
    released clips are, or ``lossless`` where a test needs the same pixels on every run (see below)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        # lossless (qp 0): x264 does not always make the same bytes from the same frames (seen at 96x72, even
        # with one thread; gone with asm=0 or without its lookahead in one experiment), so lossy clips decode
        # to other pixels from one run to the next; lossless clips decode to exactly the frames written,
        # whatever the encoder chose (the oracle release needs that: its near-tie margin is checked)
        st = out.add_stream("libx264", rate=fps, options={"qp": "0"} if lossless else {})
        for i, img in enumerate(images):
            if i == 0:
                st.height, st.width = img.shape[:2]
                st.pix_fmt = "yuv420p"
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def write_clip(path: Path, frames: int, rgb: tuple[int, int, int], seed: int = 0) -> None:
    """A solid-colour clip with a moving bright square (so frames differ), 64x48 at 10 fps."""
    def images() -> Iterator[np.ndarray]:
        for i in range(frames):
            img = np.empty((48, 64, 3), np.uint8)
            img[:] = rgb
            x = (4 * i + 7 * seed) % 48
            img[8:20, x : x + 12] = 255
            yield img

    encode_clip(path, images())


def clip_id(vid: str, k: int) -> str:
    return f"{vid}-Scene-{k:03d}"


def build_release(root: Path) -> Path:
    """The miniature release: 8 clip files (7 decodable), 6 query lines, 3 videos, themes and splits."""
    clip_dir = root / "video_data" / "long_video_clip"
    n = 0
    for vid, colours in VIDEOS.items():
        for k, rgb in enumerate(colours, 1):
            write_clip(clip_dir / vid / f"{clip_id(vid, k)}.mp4", 24 + 7 * k, rgb, seed=n)
            n += 1
    (clip_dir / BROKEN[0] / f"{BROKEN[1]}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 40)
    (clip_dir / "-7wwfGJXEZg" / ".DS_Store").write_bytes(b"not a clip")  # ignored, as hidden files are
    caps = root / "caption_data"
    caps.mkdir(parents=True)
    lines = []
    for i, cid in enumerate(QUERIES):
        # the original's paths are absolute paths on the authors' machines: only the file name counts
        lines.append({"path": f"/mnt/public/LOVR/video_data/long_video_clip/{cid.rsplit('-Scene-', 1)[0]}/{cid}.mp4",
                      "cap": f"a {WORDS[i % len(WORDS)]} scene, clip {cid} number {i}"})
    (caps / "all_clip.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (caps / "all_video.jsonl").write_text("".join(
        json.dumps({"vid": vid, "cap": f"the whole video {vid}: " + " then ".join(WORDS[: 2 + j])}) + "\n"
        for j, vid in enumerate(VIDEOS)))
    (caps / "clip_cap_theme.jsonl").write_text(
        json.dumps({"vid": "-7wwfGJXEZg-Scene-003", "cap": "a theme"}) + "\n"
        + json.dumps({"vid": "-_q3Q-Scene-001", "cap": "another theme"}) + "\n")
    pq.write_table(pa.table({"path": ["-7wwfGJXEZg-Scene-001.mp4", "Ab_9-xYz-Scene-002.mp4"]}),
                   root / "clip_train.parquet")
    pq.write_table(pa.table({"path": ["-_q3Q-Scene-001.mp4"]}), root / "clip_test.parquet")
    return root


def clip_files(root: Path) -> dict[str, Path]:
    """clip id -> file, every clip file of the release."""
    return {p.stem: p for p in (root / "video_data" / "long_video_clip").glob("*/*.mp4")}


def frame_hash(frame: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()


class RecordingEmbedder(Embedder):
    """Records every frame it is given (hashes, and mean colours); texts and frames -> small vectors."""

    name = "recording"
    SEEN: ClassVar[list[np.ndarray]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def model_id(self) -> str:
        return "recording-embedder"

    def embed_text(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> np.ndarray:
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            h = hashlib.sha1(t.encode()).digest()
            out[i] = np.frombuffer(h[:8], np.uint8).astype(np.float32) + 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        RecordingEmbedder.SEEN.extend(np.array(f) for f in frames)
        mean = frames.reshape(len(frames), -1, 3).mean(axis=1)
        out = np.concatenate([mean, np.ones((len(frames), 5))], axis=1).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def original_calc_pass(text_src: Sequence[str], text_feat: np.ndarray, clip_num: int,
                       clip_src: Sequence[str | None], full_src: Sequence[str | None], image_feats: np.ndarray,
                       ks: Sequence[int] = tuple(range(1, 21))) -> dict[int, dict[str, float]]:
    """The original ``calc_pass`` restated in numpy (names as in the original): k -> direction -> pass@k.

    ``torch.topk`` raises for k > candidates (never at LoVR's size, k <= 20): such (k, direction) pairs are
    left out, as the original has no value for them. Raises on an exact tie at a gold score, where the
    original's top-k order (and so its hit) is undefined."""
    text_feat = np.asarray(text_feat, np.float32)
    image_feats = np.asarray(image_feats, np.float32)
    clip_rows = [i for i, s in enumerate(clip_src) if s is not None]
    full_rows = [i for i, s in enumerate(full_src) if s is not None]
    clip_feat, clip_ids = image_feats[clip_rows], [clip_src[i] for i in clip_rows]
    full_feat, full_ids = image_feats[full_rows], [full_src[i] for i in full_rows]
    clip_1000 = [i for i, s in enumerate(clip_ids) if s in text_src]
    clip_1000_feat, clip_1000_src = clip_feat[clip_1000], [clip_ids[i] for i in clip_1000]
    sims = {
        "clip": (text_feat[:clip_num] @ clip_feat.T, list(text_src[:clip_num]), clip_ids),
        "full": (text_feat[clip_num:] @ full_feat.T, list(text_src[clip_num:]), full_ids),
        "v2t_clip": (clip_1000_feat @ text_feat[:clip_num].T, clip_1000_src, list(text_src[:clip_num])),
        "v2t_full": (full_feat @ text_feat[clip_num:].T, full_ids, list(text_src[clip_num:])),
    }
    denominators = {"clip": clip_num, "full": len(text_src) - clip_num, "v2t_clip": clip_num,
                    "v2t_full": len(text_src) - clip_num}
    for name, (sim, queries, cands) in sims.items():
        for i, q in enumerate(queries):
            gold = [j for j, c in enumerate(cands) if c == q]
            others = [j for j, c in enumerate(cands) if c != q]
            if gold and others and np.isin(sim[i, gold], sim[i, others]).any():
                raise AssertionError(f"{name}: exact tie at the gold score of {q}")
    out: dict[int, dict[str, float]] = {}
    for k in ks:
        row = {}
        for name, (sim, queries, cands) in sims.items():
            if k > len(cands):
                continue
            hits = 0
            for i, q in enumerate(queries):
                top = np.argsort(-sim[i], kind="stable")[:k]
                hits += q in [cands[j] for j in top]
            row[name] = hits / denominators[name]
        out[k] = row
    return out


#: results direction -> the original's printed name
DIRECTION_OF = {"clip": "text_to_clip", "full": "text_to_video", "v2t_clip": "clip_to_text",
                "v2t_full": "video_to_text"}
