"""``video_input = "files"`` models (LanguageBind): the visual stage hands them clip FILES, not frames.

One group per clip (its file) and one per video (its clip files in order) go to ``embed_video_files``. A clip
without a file of its own -- a virtual clip, or a stream-copied one whose file starts before the clip -- is
first cut to a temporary frame-exact file (:func:`lovr_hf.video.clipper.cut_clips`, ``exact``: one re-encode of
the clips of that source), deleted once the model has read it. Segment with ``--clip-mode exact`` to skip
that cost.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import numpy as np

from lovr_hf import schema
from lovr_hf.evaluation.visual_plan import VideoPlan, left_out_note
from lovr_hf.failures import input_failure, reason_status
from lovr_hf.failures import message as failure_message
from lovr_hf.stats.vectors import l2_normalize
from lovr_hf.video.reader import probe

logger = logging.getLogger(__name__)


def clip_files(plan: VideoPlan, tmp: str) -> tuple[dict[int, str], dict[int, str]]:
    """A file holding exactly each readable clip: its own file when it has one, else a temporary cut."""
    from lovr_hf.video.clipper import cut_clips

    files: dict[int, str] = {}
    errors: dict[int, str] = {}
    need: dict[str, list[int]] = {}
    for j, c in enumerate(plan.readable):
        q = plan.requests[j]
        if q.frame_offset == 0 and q.num_frames == probe(q.path).num_frames:
            files[c] = q.path
        else:
            need.setdefault(q.path, []).append(c)
    for k, (src, cs) in enumerate(need.items()):
        qs = {c: plan.requests[plan.readable.index(c)] for c in cs}
        cs = sorted(cs, key=lambda c: qs[c].frame_offset)
        ranges = [(qs[c].frame_offset, qs[c].frame_offset + qs[c].num_frames) for c in cs]
        try:
            if any(b[0] < a[1] for a, b in zip(ranges, ranges[1:])):
                raise ValueError("overlapping clip ranges cannot be cut in one pass")
            cut = cut_clips(src, ranges, os.path.join(tmp, str(k)), plan.video_id, mode="exact")
            for c, cf in zip(cs, cut):
                files[c] = cf.path
        except Exception as exc:
            for c in cs:
                errors[c] = f"cannot cut a clip file: {input_failure(exc).message}"
    return files, errors


class FilesInput:
    """The files path of :class:`lovr_hf.evaluation.embed_video.VideoEmbedStage` (its ``_row``/``_add``/``_backend``)."""

    _backend: Any
    _rule: Any
    repo_root: str

    def _embed_files(self, vid: str, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        plan = VideoPlan.build(vid, clips, self._rule, self.repo_root)
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="lovr-clipfiles-") as tmp:
            files, cut_errors = clip_files(plan, tmp)
            self._add("decode_s", time.perf_counter() - t0)
            ok = [c for c in plan.readable if c in files]
            groups = [[files[c]] for c in ok] + [[files[c] for c in ok]]
            t1 = time.perf_counter()
            vecs = self._files_vectors(groups) if ok else []
            self._add("encode_s", time.perf_counter() - t1)
        skipped, failed = [], None
        for c, clip in enumerate(plan.clips):
            cid = clip[schema.CLIP_ID]
            err = plan.errors.get(c) or cut_errors.get(c)
            if err is not None:  # bad input, unless the reason records a bug or an environment fault
                rows.append(self._row("clip", cid, vid, None, 0, reason_status(err), err))
                skipped.append(cid)
                continue
            vec = vecs[ok.index(c)]
            if isinstance(vec, str):
                rows.append(self._row("clip", cid, vid, None, 0, schema.FAILED, vec))
                failed = failed or f"clip {cid}: {vec}"
            else:
                rows.append(self._row("clip", cid, vid, vec, int(clip["num_frames"] or 0)))
        self._add("clips", len(plan.clips))
        self._add("videos", 1)
        if not ok:
            rows.append(self._row("video", vid, vid, None, 0, schema.ERROR, f"no readable clip ({len(skipped)} left out)"))
        elif failed is not None or isinstance(vecs[-1], str):
            rows.append(self._row("video", vid, vid, None, 0, schema.FAILED, failed or str(vecs[-1])))
        else:
            note = left_out_note(skipped)
            n = sum(int(plan.clips[c]["num_frames"] or 0) for c in ok)
            rows.append(self._row("video", vid, vid, vecs[-1], n, error=note))
        return rows

    def _files_vectors(self, groups: list[list[str]]) -> list[np.ndarray | str]:
        """One vector (or an error text) per group: all groups in one call, one by one if that fails."""
        assert self._backend is not None

        def call(gs: list[list[str]]) -> np.ndarray:
            out = self._backend.embed_video_files(gs)  # type: ignore[union-attr]
            if out is None:
                raise TypeError(f"{type(self._backend).__name__}.embed_video_files returned None "
                                "(video_input = 'files' needs it)")
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(gs) or not np.isfinite(out).all():
                raise ValueError(f"embed_video_files returned shape {out.shape} (or NaN) for {len(gs)} groups")
            return l2_normalize(out)

        try:
            return list(call(groups))
        except Exception as exc:
            if len(groups) == 1:
                return [failure_message(exc)]
            logger.warning("embed_video_files failed on %d groups (%s); one by one", len(groups), exc)
        out: list[np.ndarray | str] = []
        for g in groups:
            try:
                out.append(call([g])[0])
            except Exception as one:
                out.append(failure_message(one))
        return out
