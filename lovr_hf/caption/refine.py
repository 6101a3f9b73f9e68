"""The re-captioning ladder of the quality loop (LoVR Fig. 2): which settings each further attempt uses.

A weak caption (judge score under θ) is captioned again with settings that can change the outcome;
an attempt that would repeat an earlier one is never run:

1. ``default``: the configured settings (the original captioner's).
2. ``more_frames``: the frame cap doubled (at most 128), same prompt and sampling. Only for clips where
   the frame rule then really gives more frames (clips longer than the configured cap in seconds);
   for the others this rung is skipped, since the same frames with the same near-greedy sampling
   (top_p 0.001) would reproduce attempt 1 at full cost.
3. ``refine_prompt``: the refinement prompt (asks for concrete, non-repetitive detail) with looser
   sampling (temperature 0.7, top_p 0.9) and an explicit seed, on the most frames the rule allows.
4. ``resample``: the refinement prompt again with another seed (a different sample), once per further
   attempt, so that every attempt differs from all earlier ones.

Seeds of rungs 3+ derive from the configured seed (0 when unset) and the rung, so a rerun repeats them.
Each clip walks its own ladder (clips of one batch may be on different rungs); the stage's
:class:`QualityLoop` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lovr_hf import schema

#: appended to the user prompt by the refinement rungs
REFINE_SUFFIX = (
    "\n\nBe concrete and exhaustive: name visible objects, colours, people and actions in the order they "
    "happen, and do not repeat yourself."
)
MORE_FRAMES_CAP = 128
REFINE_TEMPERATURE = 0.7
REFINE_TOP_P = 0.9


@dataclass
class ClipFrames:
    """The frames a clip is captioned from and their indices in the clip."""

    cid: str
    frames: Any  # uint8 [n, H, W, 3]
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Variant:
    """The settings of one attempt (frames cap, prompt variant and sampling)."""

    name: str  # default | more_frames | refine_prompt | resample
    max_frames: int
    prompt_variant: str  # default | refine
    temperature: float
    top_p: float
    do_sample: bool
    seed: int | None

    def as_dict(self) -> dict[str, object]:
        return {("variant" if k == "name" else k): v for k, v in asdict(self).items()}


def default_variant(max_frames: int, temperature: float, top_p: float, do_sample: bool, seed: int | None) -> Variant:
    return Variant("default", max_frames, "default", temperature, top_p, do_sample, seed)


def more_frames_cap(max_frames: int) -> int:
    return max(max_frames, min(2 * max_frames, MORE_FRAMES_CAP))


def next_variant(tried: Sequence[Variant], frames_for: Callable[[int], int]) -> Variant:
    """The first rung after ``tried`` (attempts so far, ``tried[0]`` the default) that differs in effect.

    ``frames_for(cap)`` is the frame count the rule gives this clip under a frame cap.
    """
    base = tried[0]
    names = [v.name for v in tried]
    big = more_frames_cap(base.max_frames)
    more_helps = frames_for(big) > frames_for(base.max_frames)
    if "more_frames" not in names and "refine_prompt" not in names and more_helps:
        return Variant("more_frames", big, base.prompt_variant, base.temperature, base.top_p, base.do_sample,
                       base.seed)
    cap = big if more_helps else base.max_frames
    seed0 = base.seed or 0
    if "refine_prompt" not in names:
        return Variant("refine_prompt", cap, "refine", REFINE_TEMPERATURE, REFINE_TOP_P, True, seed0 + 1)
    k = names.count("resample") + 2
    return Variant("resample", cap, "refine", REFINE_TEMPERATURE, REFINE_TOP_P, True, seed0 + k)


class QualityLoop:
    """The quality loop of :class:`~lovr_hf.caption.stage.CaptionStage`, mixed into it: it drives the stage's
    ``_decode``/``_plan`` (frames), ``_caption_many``/``_finish`` (attempts and their rows) and ``_scorer``.

    Every attempt's real inputs and outcome go to ``settings["attempts_log"]`` of the clip's row; the row
    keeps the best-scored attempt. A judge that cannot score makes the row ``failed`` with its error.
    """

    def _refine(self, out: dict[str, dict[str, Any]], items: dict[str, ClipFrames]) -> None:
        """Score, re-caption those under θ with the next rung that changes something, keep the best."""
        assert self._scorer is not None
        theta = float(self.config.min_quality or 0.0)
        live = [cid for cid, r in out.items() if r[schema.STATUS] == schema.OK]
        log: dict[str, list[dict[str, Any]]] = {cid: [dict(out[cid]["settings"])] for cid in live}
        tried: dict[str, list[Variant]] = {cid: [self._base_variant()] for cid in live}
        self._judge(out, live, items, log, 1)
        for attempt in range(2, self.config.max_attempts + 1):
            weak = [cid for cid in live if out[cid][schema.STATUS] == schema.OK and
                    out[cid]["quality_score"] < theta]
            if not weak:
                break
            groups: dict[Variant, list[str]] = {}
            for cid in weak:
                plan_len = self._frames_for(cid)
                variant = next_variant(tried[cid], plan_len)
                tried[cid].append(variant)
                groups.setdefault(variant, []).append(cid)
            for variant, cids in groups.items():
                batch = []
                for cid in cids:
                    item = self._item_for(items[cid], variant)
                    if isinstance(item, str):  # the bigger frame set could not be decoded
                        log[cid].append({"attempt": attempt, **variant.as_dict(), "status": schema.ERROR,
                                         "error": item})
                        out[cid]["attempts"] = attempt
                    else:
                        batch.append(item)
                cands = {o.cid: self._finish(o, variant, attempt) for o in self._caption_many(batch, variant)}
                ok = [cid for cid, c in cands.items() if c[schema.STATUS] == schema.OK]
                for cid, cand in cands.items():
                    log[cid].append({**cand["settings"], "status": cand[schema.STATUS], "error": cand[schema.ERROR_COL]})
                    out[cid]["attempts"] = attempt
                self._judge(cands, ok, items, log, attempt)
                for cid in ok:
                    cand = cands[cid]
                    if cand[schema.STATUS] != schema.OK:  # the judge failed on this attempt
                        out[cid][schema.STATUS], out[cid][schema.ERROR_COL] = cand[schema.STATUS], cand[schema.ERROR_COL]
                    elif cand["quality_score"] > out[cid]["quality_score"]:
                        cand["attempts"] = attempt
                        out[cid] = cand
        for cid in live:
            row = out[cid]
            row["settings"] = {**row["settings"], "attempts_log": log[cid]}
            if row[schema.STATUS] == schema.OK and row["quality_score"] < theta:
                row[schema.STATUS] = schema.NEEDS_REVIEW
                row[schema.ERROR_COL] = f"quality {row['quality_score']:.2f} < {theta} after {row['attempts']} attempt(s)"

    def _frames_for(self, cid: str) -> Callable[[int], int]:
        row = self.rows[cid]
        return lambda cap: len(self._plan(row, cap).indices)

    def _item_for(self, base: ClipFrames, variant: Variant) -> ClipFrames | str:
        """The frames of a rung: attempt 1's when the cap gives the same plan, else decoded anew."""
        plan = self._plan(self.rows[base.cid], variant.max_frames)
        if tuple(plan.indices) == base.indices:
            return base
        d = self._decode(base.cid, variant.max_frames)
        self._stats["decode_s"] += d.seconds
        return ClipFrames(base.cid, d.frames, d.indices) if d.frames is not None else str(d.reason)

    def _judge(self, rows: dict[str, dict[str, Any]], ids: list[str], items: dict[str, ClipFrames],
               log: dict[str, list[dict[str, Any]]], attempt: int) -> None:
        """Score ``rows[ids]``; a judge failure makes the row ``failed`` with the judge's error."""
        assert self._scorer is not None
        if not ids:
            return
        results = self._scorer.judge([rows[c][schema.CAPTION] for c in ids], [items[c].frames for c in ids])
        for cid, j in zip(ids, results):
            log[cid][-1]["score"] = j.score
            if j.error is not None:
                log[cid][-1].update(status=schema.FAILED, error=j.error)
                rows[cid][schema.STATUS] = schema.FAILED
                rows[cid][schema.ERROR_COL] = f"attempt {attempt}: {j.error}"
            else:
                rows[cid]["quality_score"] = float(j.score)


