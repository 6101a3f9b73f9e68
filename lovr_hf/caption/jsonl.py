"""The original ``caption_generator.py`` mode: ``--video-folder V --jsonl-file IN --result-file OUT``.

Input: one JSON object per line with at least ``vid``, ``slice_num`` and ``path`` (the clip file, relative
to the video folder). Output: each input line with ``cap`` added (all its fields kept, as the original
wrote them) plus ``status``, in input order. As in the original, ``--num-chunks/--chunk-idx`` take a
contiguous chunk of the input lines (ceil-sized), a line whose ``vid``-``slice_num`` is already in the
result file is done (``--rerun`` starts the file afresh), and a rerun re-does what is missing.

Differences, each for the "fail loudly" rule: a clip that failed (unreadable file, failed call, empty
output) gets no line, so the next run tries it again, and is listed in the log and the summary
(the original wrote whatever caption sat at its position in the batch, see ../shared/README.md); a clip
under 5 frames gets ``cap: ""`` with ``status: "skipped"``. The work runs on the caption stage in a
repo next to the result file (``OUT.lovr/``: ``clips`` and ``clip_captions`` tables, resumable per batch),
so ``lovr caption`` judges its rows by the same exit rule as a repo run.

:func:`export_jsonl` writes a repo's captions the other way: the original caption file format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from lovr_hf import schema
from lovr_hf.caption.backends import check_backend_flags
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.engine.control import RunControl
from lovr_hf.repo import BenchmarkRepo, atomic_write_text

logger = logging.getLogger(__name__)

REQUIRED = ("vid", "slice_num", "path")
WRITTEN = (schema.OK, schema.NEEDS_REVIEW, schema.SKIPPED)  # statuses that get a line (others are retried)


@dataclasses.dataclass
class JsonlSummary:
    """What one run of the JSONL mode did."""

    lines: int = 0  # input lines of this chunk (duplicates dropped)
    already_done: int = 0  # in the result file before the run
    written: int = 0  # lines in the result file after the run
    failed: int = 0  # clips without a line (unreadable, failed, error): retried next run
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> reason, for the failed ones
    repo: str | None = None  # the work repo this run captioned in (None: every line was already done)


def original_key(info: dict[str, Any]) -> str:
    """The original resume key ``<vid>-<slice_num>``."""
    return f"{info['vid']}-{info['slice_num']}"


def read_jsonl(path: str | Path, *, tolerate_partial_tail: bool = False) -> list[dict[str, Any]]:
    """Objects of a JSONL file; a bad line is an error naming it (a torn last line may be dropped)."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            if tolerate_partial_tail and i == len(lines):
                logger.warning("%s: dropping an incomplete last line", p)
                break
            raise ValueError(f"{p}:{i}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{p}:{i}: expected a JSON object")
        out.append(obj)
    return out


def original_chunk(items: list[Any], num_chunks: int | None, chunk_idx: int | None) -> list[Any]:
    """The original ``get_chunk``: ``num_chunks`` contiguous chunks of ``ceil(len / num_chunks)`` items."""
    if not num_chunks or num_chunks <= 1:
        return items
    if chunk_idx is None or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, {num_chunks}), got {chunk_idx}")
    size = math.ceil(len(items) / num_chunks) if items else 1
    return items[chunk_idx * size : (chunk_idx + 1) * size]


def clip_row(info: dict[str, Any], video_folder: Path) -> dict[str, Any]:
    """A ``clips`` row for one input line (status ``error`` with the reason when it cannot be used)."""
    from lovr_hf.video.frame_index import VideoError
    from lovr_hf.video.reader import probe

    vid, raw_slice = str(info["vid"]), info["slice_num"]
    try:
        slice_num = int(raw_slice)
        clip_id = schema.clip_id_for(vid, slice_num)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{original_key(info)}: slice_num must be a positive integer ({exc})") from None
    row: dict[str, Any] = {
        schema.VIDEO_ID: vid, schema.CLIP_ID: clip_id, schema.SLICE_NUM: slice_num, "start_time": 0.0,
        "end_time": 0.0, "start_frame": 0, "end_frame": 0, "num_frames": 0, "fps": 0.0, "path": "",
        "frame_offset": 0, "clip_mode": "exact", schema.STATUS: schema.OK, schema.ERROR_COL: None,
    }
    path = (video_folder / str(info["path"])).resolve()
    row["path"] = str(path)
    if video_folder not in path.parents:
        return {**row, schema.STATUS: schema.ERROR, schema.ERROR_COL: f"path {info['path']!r} is outside the video folder"}
    try:
        meta = probe(path)
    except (OSError, VideoError) as exc:
        return {**row, schema.STATUS: schema.ERROR, schema.ERROR_COL: f"cannot open clip: {exc}"}
    duration = meta.num_frames / meta.fps if meta.fps else 0.0
    return {**row, "end_time": duration, "end_frame": meta.num_frames, "num_frames": meta.num_frames,
            "fps": float(meta.fps)}


def caption_jsonl(video_folder: str, jsonl_file: str, result_file: str, config: CaptionConfig | None = None,
                  control: RunControl | None = None) -> JsonlSummary:
    """Caption the clips of ``jsonl_file`` into ``result_file`` (the original script's contract)."""
    from tqdm.auto import tqdm

    config = config or CaptionConfig()
    check_backend_flags(config)
    control = control or RunControl()
    folder = Path(video_folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"--video-folder {video_folder} is not a folder")
    infos = read_jsonl(jsonl_file)
    for i, info in enumerate(infos, start=1):
        missing = [k for k in REQUIRED if k not in info]
        if missing:
            raise ValueError(f"{jsonl_file}:{i}: missing {', '.join(missing)}")
    infos = original_chunk(infos, control.num_chunks, control.chunk_idx)
    unique: dict[str, dict[str, Any]] = {}
    for info in infos:
        if original_key(info) in unique:
            logger.warning("%s: duplicate clip %s, keeping the first line", jsonl_file, original_key(info))
        unique.setdefault(original_key(info), info)
    summary = JsonlSummary(lines=len(unique))

    done_lines: list[dict[str, Any]] = []
    if not control.rerun:
        seen: set[str] = set()
        for line in read_jsonl(result_file, tolerate_partial_tail=True):
            key = original_key(line) if all(k in line for k in ("vid", "slice_num")) else None
            if key in unique and key not in seen:  # the original keeps the first line of each requested key
                seen.add(key)
                done_lines.append(line)
    done = {original_key(line) for line in done_lines}
    summary.already_done = len(done)
    todo = [info for key, info in unique.items() if key not in done]
    logger.info("caption (jsonl): %d clips, %d already in %s, %d to caption", len(unique), len(done), result_file,
                len(todo))

    out_path = Path(result_file)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    repo = BenchmarkRepo(out_path.with_name(out_path.name + ".lovr"))
    rows = [clip_row(info, folder) for info in tqdm(todo, desc="probe clips", disable=not todo)]
    by_clip = {r[schema.CLIP_ID]: (info, r) for info, r in zip(todo, rows)}
    if rows:
        repo.write(schema.CLIPS, rows)
        run = dataclasses.replace(control, num_chunks=None, chunk_idx=None, retry_failed=True)
        caption(repo, config, run)
        summary.repo = str(repo.root)
    # the caption config the stage gathered: exactly the clips of this file, for the current settings
    captions = ({r[schema.CLIP_ID]: r for r in repo.read_table(schema.CLIP_CAPTIONS).to_pylist()}
                if rows and repo.has(schema.CLIP_CAPTIONS) else {})
    new_lines: dict[str, dict[str, Any]] = {}
    for cid, (info, clip) in by_clip.items():
        cap = captions.get(cid)
        if clip[schema.STATUS] != schema.OK:
            summary.errors[original_key(info)] = str(clip[schema.ERROR_COL])
        elif cap is None:
            summary.errors[original_key(info)] = "not captioned (run interrupted?)"
        elif cap[schema.STATUS] in WRITTEN:
            new_lines[original_key(info)] = {**info, "cap": cap[schema.CAPTION], "status": cap[schema.STATUS]}
        else:
            summary.errors[original_key(info)] = f"{cap[schema.STATUS]}: {cap[schema.ERROR_COL]}"
    kept = {original_key(line): line for line in done_lines}
    ordered = [kept.get(k) or new_lines.get(k) for k in unique]
    lines = [line for line in ordered if line is not None]
    atomic_write_text(out_path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    summary.written, summary.failed = len(lines), len(summary.errors)
    for key, reason in list(summary.errors.items())[:20]:
        logger.warning("caption (jsonl): %s has no caption: %s", key, reason)
    logger.info("caption (jsonl): %d lines in %s (%d new), %d clips without a caption (retried next run)",
                len(lines), result_file, len(new_lines), summary.failed)
    return summary


def export_jsonl(repo: BenchmarkRepo, path: str) -> None:
    """The original caption file format (``vid``, ``slice_num``, ``cap``, and the clip file's ``path`` that the
    original ``encode_text`` reads), for the original merger and evaluation scripts."""
    paths = {}
    if repo.has(schema.CLIPS):
        clips = repo.read_table(schema.CLIPS)
        paths = {c: (str(repo.resolve(p)) if p else None) for c, p in
                 zip(clips.column(schema.CLIP_ID).to_pylist(), clips.column("path").to_pylist())}
    lines = [
        json.dumps({"vid": r[schema.VIDEO_ID], "slice_num": r[schema.SLICE_NUM], "clip_id": r[schema.CLIP_ID],
                    "path": paths.get(r[schema.CLIP_ID]), "cap": r[schema.CAPTION], "status": r[schema.STATUS]},
                   ensure_ascii=False)
        for r in repo.read(schema.CLIP_CAPTIONS)
    ]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
