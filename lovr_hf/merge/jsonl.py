"""The original ``caption_merger.py`` mode (``lovr merge --cap-file IN --result-file OUT``): clip captions of a
JSONL file merged into one line per cluster, resumable by cluster id, without a benchmark repo."""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lovr_hf.merge.clusters import group_clips
from lovr_hf.merge.config import MergeConfig, llm_identity, make_llm
from lovr_hf.merge.text import smooth_group
from lovr_hf.repo import atomic_write_text

logger = logging.getLogger(__name__)


def _read_jsonl(path: str | os.PathLike[str], *, tolerate_partial_tail: bool = False) -> list[dict[str, Any]]:
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    lines = p.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if tolerate_partial_tail and i >= len(lines) - 2:
                logger.warning("%s: dropping an incomplete last line (interrupted write)", p)
                break
            raise
    return rows


def merge_jsonl(cap_file: str, result_file: str, config: MergeConfig | None = None) -> int:
    """The original ``caption_merger.py`` contract: ``vid``/``slice_num``/``cap`` in; ``vid``,
    ``start_slice_num``, ``end_slice_num``, ``cap``, ``clip_count``, ``cluster_id``,
    ``merged_paragraphs`` out, one line per cluster; resumes by the cluster ids already in
    ``result_file``. Every row of the caption file takes its place in its run of ``cluster_size`` (the
    original's membership); a row whose ``status`` (lovr_hf's exported files have one) is not usable has
    its text left out, listed in the cluster's ``left_out``. Each line is written whole and fsync'ed; an
    interrupted last line is dropped on resume. Returns the number of clusters written this run."""
    config = config or MergeConfig()
    done_rows = _read_jsonl(result_file, tolerate_partial_tail=True)
    done = {r["cluster_id"] for r in done_rows}
    # rewrite the complete lines (drops a torn tail) by atomic rename: a kill during this rewrite must not
    # truncate the clusters already finished
    atomic_write_text(result_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done_rows))
    todo = [c for c in group_clips(_read_jsonl(cap_file), config.cluster_size) if c.cluster_id not in done]
    logger.info("merge (jsonl): %d clusters to do, %d already in %s", len(todo), len(done), result_file)
    from lovr_hf.failures import start_backend

    if not todo:
        return 0
    llm = start_backend(lambda: make_llm(config), config.model_path or llm_identity(config), "LLM")
    params = config.params()
    from tqdm.auto import tqdm

    written = fell_back = 0
    with open(result_file, "a", encoding="utf-8") as f, ThreadPoolExecutor(max(1, config.num_workers)) as pool, \
            tqdm(total=len(todo), desc="merge clusters") as bar:
        for c, res in zip(todo, pool.map(lambda c: smooth_group(c.usable_captions, llm, params), todo)):
            row = {"vid": c.video_id, "start_slice_num": c.start_slice_num, "end_slice_num": c.end_slice_num,
                   "cap": res.caption, "clip_count": c.clip_count, "cluster_id": c.cluster_id,
                   "merged_paragraphs": res.merged_paragraphs, "llm_calls": res.llm_calls,
                   "failed_calls": res.failed_calls, "left_out": c.left_out}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            written += 1
            fell_back += res.failed_calls > 0
            bar.update(1)
    logger.info("merge (jsonl): %d clusters written, %d with joins that fell back to the original text "
                "(failed calls or rejected replies: their errors are in the log)", written, fell_back)
    if written and fell_back == written and any(c.clip_count > 1 for c in todo):
        raise NothingMergedError(f"no cluster of {cap_file} was merged by the LLM: every join fell back to the "
                                 f"original text ({written} clusters written to {result_file} as such)")
    return written


class NothingMergedError(RuntimeError):
    """JSONL mode: clusters were written but not one join succeeded (the command exits 1, the lines stay)."""
