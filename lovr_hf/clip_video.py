"""The ``clips.video`` column: each clip file as a ``datasets.Video``, derived on every write of ``clips``.

Why derived and not built by the stages: the value is an address of the file that depends on where the
shard is read. A local shard holds the clip's ``path`` as it is (relative to the repo root, like every
stored path, so a table never depends on where the repo lies and a copied or moved repo stays valid).
``datasets.Video`` would open a relative path against the *current working directory*, so that iterating a
local repo's ``clips`` from anywhere else would fail on every row: a local shard declares the column
``Video(decode=False)`` (``load_dataset`` yields the ``{"bytes", "path"}`` cell) and :func:`clips_with_video`
gives the decoding view from any working directory. A published shard holds a
``hf://datasets/<repo_id>@<revision>/<path>`` URL declared ``Video()``, which ``load_dataset`` (also
streaming) and the Hub's viewer open through ``HfFileSystem``. So :meth:`lovr_hf.repo.BenchmarkRepo.write` calls
:func:`with_video` with its ``media_url`` (set by ``lovr push``'s staging).

A row gets a video when it is ``ok``, its ``clip_mode`` is ``exact`` or ``copy`` and it has a ``path`` (for a
publication: a file staged for upload); the others (virtual clips: a frame range of the source video;
error/failed rows; index-only publications; files not published) get null. A ``copy`` clip's file starts ``frame_offset`` frames early (the keyframe
pre-roll), so its decoder yields those frames first: the clip is frames
``[frame_offset, frame_offset + num_frames)`` of it, as for ``path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
from datasets import Dataset, Video

from lovr_hf import schema

#: clip modes whose ``path`` is a clip file of its own (virtual clips point at the source video)
FILE_MODES = ("exact", "copy")
VIDEO_TYPE = Video().pa_type
NO_MEDIA = ""  # a ``media_url`` that publishes no video at all (index-only push, or no repo id to point at)


def hub_media_url(repo_id: str, revision: str | None = None) -> str:
    """``hf://datasets/<repo_id>@<revision>``: the revision URL-quoted as ``HfFileSystem`` expects it
    (a branch ``a/b`` becomes ``a%2Fb``, so the path after it is not taken for part of the branch)."""
    return f"hf://datasets/{repo_id}@{quote(revision or 'main', safe='')}"


def with_video_column(config: str, data: Dataset | pa.Table | list[dict[str, Any]]) -> Any:
    """``data`` with a (null) ``video`` column when ``config`` is ``clips`` and it has none: rows of an
    older lovr_hf, or built by a stage, are written the same way (the value is filled by :func:`with_video`)."""
    if config != schema.CLIPS or isinstance(data, list):
        return data
    if isinstance(data, Dataset):
        data = data.with_format("arrow")[:]
    if schema.VIDEO not in data.column_names:
        data = data.append_column(pa.field(schema.VIDEO, VIDEO_TYPE), pa.nulls(data.num_rows, VIDEO_TYPE))
    return data


def video_value(root: Path, path: str | None, mode: str | None, status: str | None,
                media_url: str | None = None) -> dict[str, Any] | None:
    """The ``video`` cell of one ``clips`` row (see the module docstring for when it is null)."""
    if not path or mode not in FILE_MODES or status != schema.OK or media_url == NO_MEDIA:
        return None
    if media_url is None:
        # no existence check: segment writes the table before it moves the staged files into place, and
        # a row whose file goes missing is turned into an ``error`` row by segment's gather (clip_store)
        return {"bytes": None, "path": path if os.path.isabs(path) else Path(path).as_posix()}
    if os.path.isabs(path) or ".." in Path(path).parts or not (root / path).is_file():
        return None  # a published file lies inside the staged repo (lovr_hf.hub.publish copies it in first)
    return {"bytes": None, "path": f"{media_url}/{Path(path).as_posix()}"}


def with_video(table: pa.Table, root: Path, media_url: str | None = None) -> pa.Table:
    """``table`` (a ``clips`` table) with its ``video`` column derived from ``path``, ``clip_mode`` and
    ``status`` for a repo at ``root`` (local: the repo-relative path) or published at ``media_url``."""
    cols = (table.column(c).to_pylist() for c in ("path", "clip_mode", schema.STATUS))
    values = [video_value(root, p, m, s, media_url) for p, m, s in zip(*cols)]
    i = table.schema.get_field_index(schema.VIDEO)
    return table.set_column(i, table.schema.field(i), pa.array(values, VIDEO_TYPE))


def clips_with_video(repo: Any, split: str = "train") -> Dataset:
    """A local repo's ``clips`` as ``datasets`` loads them, with ``video`` decoding (a torchcodec
    ``VideoDecoder`` per row) from any working directory: the stored repo-relative paths are made absolute for
    this in-memory view only, never written."""
    from datasets import load_dataset

    root = Path(repo.root if hasattr(repo, "root") else repo).resolve()
    ds = load_dataset(str(root), schema.CLIPS, split=split)

    def absolute(row: dict[str, Any]) -> dict[str, Any]:
        v = row[schema.VIDEO]
        if v and v.get("path") and not os.path.isabs(v["path"]):
            v = {**v, "path": str(root / v["path"])}
        return {schema.VIDEO: v}

    return ds.map(absolute, desc="clip files").cast_column(schema.VIDEO, Video())
