"""``datasets`` builder for the official LoVR release layout.

Release layout (as published)::

    caption_data/all_clip.jsonl          {"path": ".../<vid>-Scene-NNN.mp4", "cap": "...", ...}
    caption_data/all_video.jsonl         {"vid": "<vid>", "cap": "..."}
    caption_data/clip_cap_theme.jsonl    optional {"vid": "<vid>" or "<vid>-Scene-NNN", "cap": "..."}
    clip_train.parquet, clip_test.parquet   optional split lists (a clip id / path column)
    video_data/long_video_clip/<vid>/<vid>-Scene-NNN.mp4

Use it programmatically (no loading script): ``LoVRRelease(config_name="clip_captions",
data_dir=DIR).download_and_prepare(); ds = builder.as_dataset("train")``. ``lovr import-release``
wraps this and writes each config into a benchmark repo.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from lovr_hf import schema
from lovr_hf.ids import check_id

logger = logging.getLogger(__name__)

CLIP_JSONL = "caption_data/all_clip.jsonl"
VIDEO_JSONL = "caption_data/all_video.jsonl"
THEME_JSONL = "caption_data/clip_cap_theme.jsonl"
CLIP_DIR = "video_data/long_video_clip"
SPLIT_FILES = {"train": "clip_train.parquet", "test": "clip_test.parquet"}
RELEASE_MODEL = "lovr-release"

_SCENE = re.compile(r"^(?P<vid>.+)-Scene-(?P<num>\d+)$")


def parse_clip_id(clip_id: str) -> tuple[str, int]:
    """``<vid>-Scene-NNN`` -> (vid, NNN); ids are validated so none can escape a folder."""
    m = _SCENE.match(check_id(clip_id))
    if not m:
        raise ValueError(f"clip id {clip_id!r} is not of the form <video_id>-Scene-NNN")
    return m.group("vid"), int(m.group("num"))


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not JSON ({exc})") from exc


def _clip_id_of(record: dict[str, Any]) -> str:
    for key in ("clip_id", "path", "video", "vid"):
        if record.get(key):
            return Path(str(record[key])).stem
    raise ValueError(f"record has no clip id/path: {sorted(record)}")


class LoVRReleaseConfig(datasets.BuilderConfig):
    pass


class LoVRRelease(datasets.GeneratorBasedBuilder):
    """Official LoVR release -> the lovr_hf tables (clips, clip_captions, video_captions, theme_captions, splits)."""

    BUILDER_CONFIG_CLASS = LoVRReleaseConfig
    BUILDER_CONFIGS = [
        LoVRReleaseConfig(name=n, version=datasets.Version("1.0.0"))
        for n in (schema.CLIPS, schema.CLIP_CAPTIONS, schema.VIDEO_CAPTIONS, schema.THEME_CAPTIONS, schema.SPLITS)
    ]
    DEFAULT_CONFIG_NAME = schema.CLIP_CAPTIONS

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="LoVR: A Benchmark for Long Video Retrieval in Multimodal Contexts (arXiv 2505.13928)",
            features=schema.features_for(self.config.name),
            citation="@article{lovr2025, title={LoVR: A Benchmark for Long Video Retrieval in Multimodal Contexts}, "
            "journal={arXiv:2505.13928}, year={2025}}",
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        if not self.config.data_dir:
            raise ValueError("LoVRRelease needs data_dir=<folder of the LoVR release>")
        root = Path(self.config.data_dir).expanduser().resolve()
        if self.config.name in (schema.CLIPS, schema.CLIP_CAPTIONS) and not (root / CLIP_JSONL).exists():
            raise FileNotFoundError(f"{root / CLIP_JSONL} not found: is {root} the LoVR release folder?")
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"root": str(root)})]

    def _generate_examples(self, root: str) -> Iterator[tuple[str, dict[str, Any]]]:
        base = Path(root)
        name = self.config.name
        if name == schema.CLIP_CAPTIONS:
            yield from self._clip_captions(base)
        elif name == schema.CLIPS:
            yield from self._clips(base)
        elif name == schema.VIDEO_CAPTIONS:
            yield from self._video_captions(base)
        elif name == schema.THEME_CAPTIONS:
            yield from self._themes(base)
        elif name == schema.SPLITS:
            yield from self._splits(base)

    def _clip_captions(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for rec in _jsonl(base / CLIP_JSONL):
            cid = _clip_id_of(rec)
            vid, num = parse_clip_id(cid)
            yield cid, {
                "clip_id": cid, "video_id": vid, "slice_num": num, "caption": rec.get("cap") or "",
                "model": RELEASE_MODEL, "prompt_hash": "", "quality_score": None, "attempts": 1,
                "num_frames_used": None, "settings": "{}",
                "status": schema.OK if rec.get("cap") else schema.FAILED,
                "error": None if rec.get("cap") else "empty caption in release",
            }

    def _clips(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        from lovr_hf.video import VideoError, probe

        for rec in _jsonl(base / CLIP_JSONL):
            cid = _clip_id_of(rec)
            vid, num = parse_clip_id(cid)
            path = base / CLIP_DIR / vid / f"{cid}.mp4"
            row = {
                "video_id": vid, "clip_id": cid, "slice_num": num, "start_time": None, "end_time": None,
                "start_frame": None, "end_frame": None, "num_frames": None, "fps": None,
                "path": str(path), "frame_offset": 0, "clip_mode": "exact", "status": schema.OK, "error": None,
            }
            try:
                info = probe(str(path))
                row.update(num_frames=info.num_frames, fps=info.fps, start_time=0.0, end_time=info.duration_s)
            except (VideoError, FileNotFoundError, OSError) as exc:
                row.update(status=schema.ERROR, error=f"clip file unreadable: {exc}")
            yield cid, row

    def _video_captions(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        clips_by_video: dict[str, list[tuple[int, str]]] = {}
        if (base / CLIP_JSONL).exists():
            for rec in _jsonl(base / CLIP_JSONL):
                cid = _clip_id_of(rec)
                vid, num = parse_clip_id(cid)
                clips_by_video.setdefault(vid, []).append((num, cid))
        for rec in _jsonl(base / VIDEO_JSONL):
            vid = check_id(str(rec["vid"]))
            yield vid, {
                "video_id": vid, "caption": rec.get("cap") or "", "cluster_ids": [],
                "clip_ids": [c for _, c in sorted(clips_by_video.get(vid, []))], "strategy": "release",
                "llm_calls": 0, "failed_calls": 0, "model": RELEASE_MODEL, "prompt_hash": "",
                "status": schema.OK if rec.get("cap") else schema.FAILED, "error": None,
            }

    def _themes(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        if not (base / THEME_JSONL).exists():
            return
        for rec in _jsonl(base / THEME_JSONL):
            ident = _clip_id_of(rec)
            if _SCENE.match(ident):
                vid, _ = parse_clip_id(ident)
                clip = ident
            else:
                vid, clip = check_id(ident), ""
            yield f"{vid}/{clip}", {"video_id": vid, "clip_id": clip, "caption": rec.get("cap") or "",
                                   "model": RELEASE_MODEL, "prompt_hash": "", "status": schema.OK, "error": None}

    def _splits(self, base: Path) -> Iterator[tuple[str, dict[str, Any]]]:
        for split, fname in SPLIT_FILES.items():
            if not (base / fname).exists():
                continue
            table = pq.read_table(base / fname)
            col = next((c for c in ("clip_id", "path", "video", "vid", "id") if c in table.column_names), None)
            if col is None:
                raise ValueError(f"{fname}: no clip id column among {table.column_names}")
            for value in table.column(col).to_pylist():
                cid = Path(str(value)).stem
                vid, _ = parse_clip_id(cid)
                yield f"{split}/{cid}", {"clip_id": cid, "video_id": vid, "split": split}
