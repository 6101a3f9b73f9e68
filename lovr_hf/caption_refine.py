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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

#: appended to the user prompt by the refinement rungs
REFINE_SUFFIX = (
    "\n\nBe concrete and exhaustive: name visible objects, colours, people and actions in the order they "
    "happen, and do not repeat yourself."
)
MORE_FRAMES_CAP = 128
REFINE_TEMPERATURE = 0.7
REFINE_TOP_P = 0.9


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
