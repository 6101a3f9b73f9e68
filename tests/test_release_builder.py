"""The LoVR-release builder on a miniature release written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from builders.lovr_release import LoVRRelease, parse_clip_id
from lovr_hf import schema
from lovr_hf.release import import_release


def write_clip(path: Path, frames: int, color: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=24)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), (color + 3 * i) % 255, np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    root = tmp_path / "LoVR"
    clips = []
    for vid, n in (("vidA", 11), ("vidB", 2)):
        for k in range(1, n + 1):
            cid = f"{vid}-Scene-{k:03d}"
            clips.append({"path": f"/data/long_video_clip/{vid}/{cid}.mp4", "cap": f"caption of {cid}"})
            if k <= 2:
                write_clip(root / "video_data/long_video_clip" / vid / f"{cid}.mp4", 12 + k, 40 * k)
    (root / "caption_data").mkdir(parents=True)
    (root / "caption_data/all_clip.jsonl").write_text("\n".join(json.dumps(c) for c in reversed(clips)) + "\n")
    (root / "caption_data/all_video.jsonl").write_text(
        json.dumps({"vid": "vidA", "cap": "the whole A"}) + "\n" + json.dumps({"vid": "vidB", "cap": "B"}) + "\n"
    )
    (root / "caption_data/clip_cap_theme.jsonl").write_text(
        json.dumps({"vid": "vidA", "cap": "theme A"}) + "\n" + json.dumps({"vid": "vidB-Scene-001", "cap": "t"}) + "\n"
    )
    pq.write_table(pa.table({"path": ["vidA-Scene-001.mp4", "vidA-Scene-002.mp4"]}), root / "clip_train.parquet")
    pq.write_table(pa.table({"path": ["vidB-Scene-001.mp4"]}), root / "clip_test.parquet")
    return root


def test_builder_reads_release_programmatically(release: Path, tmp_path: Path) -> None:
    b = LoVRRelease(config_name="clip_captions", data_dir=str(release), cache_dir=str(tmp_path / "cache"))
    b.download_and_prepare()
    ds = b.as_dataset(split="train")
    assert ds.num_rows == 13 and ds.features == schema.CLIP_CAPTIONS_FEATURES
    row = next(r for r in ds if r["clip_id"] == "vidA-Scene-010")
    assert row["video_id"] == "vidA" and row["slice_num"] == 10 and row["caption"] == "caption of vidA-Scene-010"


def test_import_release_writes_loadable_repo(release: Path, tmp_path: Path) -> None:
    counts = import_release(release, tmp_path / "lovr")
    assert counts == {"clip_captions": 13, "clips": 13, "video_captions": 2, "theme_captions": 2, "splits": 3}
    caps = load_dataset(str(tmp_path / "lovr"), "clip_captions", split="train")
    assert caps["clip_id"][:11] == [f"vidA-Scene-{k:03d}" for k in range(1, 12)]  # numeric order
    clips = load_dataset(str(tmp_path / "lovr"), "clips", split="train")
    ok = {r["clip_id"]: r for r in clips if r["status"] == schema.OK}
    assert set(ok) == {"vidA-Scene-001", "vidA-Scene-002", "vidB-Scene-001", "vidB-Scene-002"}
    assert ok["vidA-Scene-002"]["num_frames"] == 14  # probed from the real file
    missing = [r for r in clips if r["status"] != schema.OK]
    assert len(missing) == 9 and all("unreadable" in r["error"] for r in missing)
    vids = load_dataset(str(tmp_path / "lovr"), "video_captions", split="train")
    assert vids[0]["clip_ids"][-1] == "vidA-Scene-011"
    splits = load_dataset(str(tmp_path / "lovr"), "splits", split="train")
    assert sorted(zip(splits["split"], splits["clip_id"]))[0] == ("test", "vidB-Scene-001")


def test_clip_id_parsing_rejects_escapes() -> None:
    assert parse_clip_id("a_b-Scene-012") == ("a_b", 12)
    with pytest.raises(ValueError):
        parse_clip_id("../x-Scene-001")
    with pytest.raises(ValueError):
        parse_clip_id("noscene")
