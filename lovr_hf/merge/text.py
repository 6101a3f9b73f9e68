"""Caption merging, the pure algorithm: clip captions -> cluster captions -> one full-video caption.

Everything here is synchronous and deterministic given a deterministic :class:`ChatLLM`; concurrency
(many clusters at once) belongs to the backend or the caller, which keeps these functions easy to test
and to resume (one cluster = one unit of work).

Paragraphs, faithful to the original ``caption_merger.py``: a caption is split on ``"\\n"`` into
stripped, non-empty paragraphs and a merged caption joins its paragraphs with a single ``"\\n"``
(:data:`PARAGRAPH_SEP`). Every paragraph of a result is a single line, so
``len(split_paragraphs(result.caption)) == result.merged_paragraphs`` always holds.

One deliberate difference from the original: when a reply has a single paragraph the original kept an
empty string in its paragraph list (a blank line in the output, counted in ``merged_paragraphs``, and
the *next* join silently skipped because the "last paragraph" was empty). Here the emptied paragraph
is dropped, so the next join goes to the LLM with the paragraph that now ends the text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lovr_hf.backends.base import ChatLLM, GenerationParams, approx_tokens
from lovr_hf.backends.llms.reply_checks import (
    REJECTED,
    clean_reply,
    join_verdict,
    rewrite_problem,
    theme_verdict,
)
from lovr_hf.failures import message as failure_message
from lovr_hf.prompts import (
    INTEGRATE_PROMPT,
    MERGE_SYSTEM,
    THEME_PROMPT,
    TRANSITION_PROMPT,
    render_prompt,
)
from lovr_hf.schema import FAILED, OK

logger = logging.getLogger(__name__)

PARAGRAPH_SEP = "\n"


def rejected_count(errors: Iterable[str | None]) -> int:
    """How many of ``errors`` (fallback reasons) are replies rejected by a guard rather than failed calls."""
    return sum((e or "").count(REJECTED) for e in errors)


def merger_params(**overrides: Any) -> GenerationParams:
    """The original merger's sampling (gpt-4o, temperature 0.5, nothing else set), as a fresh object."""
    base = GenerationParams(temperature=0.5, top_p=1.0, repetition_penalty=1.0, max_new_tokens=1024)
    return replace(base, **overrides)


# ---- paragraphs and replies ------------------------------------------------------------------------------


def split_paragraphs(text: str | None) -> list[str]:
    """Non-empty, stripped lines: the original's ``[p.strip() for p in cap.split('\\n') if p.strip()]``."""
    if not text:
        return []
    return [p.strip() for p in text.split("\n") if p.strip()]


def join_paragraphs(paragraphs: Iterable[str]) -> str:
    return PARAGRAPH_SEP.join(p for p in paragraphs if p)


# ---- transition smoothing inside a cluster ------------------------------------------------------------


class _CallOutcome:
    """``status``/``error`` of a result made by several LLM calls (``failed_calls``, ``errors``)."""

    failed_calls: int
    errors: list[str]

    @property
    def status(self) -> str:
        """``failed`` when any call fell back to the original text (``--retry-failed`` redoes it)."""
        return OK if self.failed_calls == 0 else FAILED

    @property
    def error(self) -> str:
        return "; ".join(self.errors)


@dataclass
class ClusterResult(_CallOutcome):
    """A cluster caption and how it was made (``errors`` say which joins kept their original text)."""

    caption: str
    merged_paragraphs: int
    llm_calls: int = 0
    failed_calls: int = 0
    errors: list[str] = field(default_factory=list)


def transition_messages(prev: str, nxt: str, *, prompt: str = TRANSITION_PROMPT,
                        system: str = MERGE_SYSTEM) -> list[dict[str, str]]:
    """The chat messages of one join (system + the original prompt filled with the two paragraphs)."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": render_prompt(prompt, prev=prev, next=nxt)},
    ]


def smooth_group(
    captions: Sequence[str],
    llm: ChatLLM,
    params: GenerationParams | None = None,
    *,
    prompt: str = TRANSITION_PROMPT,
    system: str = MERGE_SYSTEM,
    min_ratio: float = 0.2,
    max_ratio: float = 4.0,
    min_coverage: float = 0.5,
) -> ClusterResult:
    """Concatenate the captions of one cluster, letting the LLM rewrite only each join.

    For each next caption (with paragraphs), the last paragraph of the text merged so far and the
    caption's first paragraph go to the LLM; the parsed reply replaces those two paragraphs and the
    caption's other paragraphs follow verbatim. A call that raises, or a reply that is empty,
    unparsable or of implausible length (outside ``[min_ratio, max_ratio]`` x the input), keeps the two
    original paragraphs and is counted in ``failed_calls`` with a reason in ``errors``; so does a reply
    that keeps under ``min_coverage`` of the content words of either paragraph (facts must be preserved). Captions
    without text contribute nothing and cost no call (as the original).
    """
    params = params or merger_params()
    merged: list[str] = []
    calls = failed = 0
    errors: list[str] = []
    for idx, cap in enumerate(captions):
        paragraphs = split_paragraphs(cap)
        if not paragraphs:
            continue
        if not merged:
            merged.extend(paragraphs)
            continue
        prev, nxt = merged[-1], paragraphs[0]
        calls += 1
        reason: str | None = None
        parsed: list[str] | None = None
        try:
            reply = llm.chat(transition_messages(prev, nxt, prompt=prompt, system=system), params)
        except Exception as exc:  # one failed join must never lose the cluster
            reason = failure_message(exc)
        else:
            parsed, reason = join_verdict(prev, nxt, reply, min_ratio=min_ratio, max_ratio=max_ratio,
                                          min_coverage=min_coverage)
        if parsed is None:
            failed += 1
            errors.append(f"join {idx - 1}->{idx}: {reason}")
            logger.warning("merge join %d->%d kept original paragraphs: %s", idx - 1, idx, reason)
            merged.extend(paragraphs)
            continue
        merged[-1] = parsed[0]
        merged.extend(p for p in parsed[1:] if p)
        merged.extend(paragraphs[1:])
    merged = [p for p in merged if p]
    return ClusterResult(join_paragraphs(merged), len(merged), calls, failed, errors)


@dataclass
class VideoResult(_CallOutcome):
    """A full-video caption; ``strategy`` says how the text was bounded by the model's context."""

    caption: str
    llm_calls: int
    failed_calls: int
    strategy: str
    errors: list[str] = field(default_factory=list)
    theme: str | None = None
    theme_error: str | None = None


@dataclass
class _Integrator:
    llm: ChatLLM
    params: GenerationParams
    max_context_tokens: int | None
    count_tokens: Callable[[str], int]
    prompt: str
    system: str
    min_ratio: float
    max_ratio: float
    min_coverage: float = 0.5
    calls: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)

    def _note(self, strategy: str) -> None:
        if strategy not in self.used:
            self.used.append(strategy)

    def _fits(self, first: str, second: str) -> bool:
        """Room for the prompt and for a reply as long as the input (integration keeps the detail)."""
        out_budget = self.params.max_new_tokens
        expected_out = self.count_tokens(first) + self.count_tokens(second)
        if expected_out > out_budget:
            return False
        if self.max_context_tokens is None:
            return True
        prompt_tokens = self.count_tokens(self.system) + self.count_tokens(
            render_prompt(self.prompt, first=first, second=second)
        )
        return prompt_tokens + out_budget <= self.max_context_tokens

    def _ask(self, first: str, second: str, where: str) -> list[str] | None:
        self.calls += 1
        messages = [
            {"role": "system", "content": self.system},
            {"role": "user", "content": render_prompt(self.prompt, first=first, second=second)},
        ]
        try:
            reply = self.llm.chat(messages, self.params)
        except Exception as exc:  # keep the original text and record the failure
            reason = failure_message(exc)
        else:
            paragraphs = clean_reply(reply)
            if paragraphs is None:
                reason = "empty or unparsable reply"
            else:
                reason = rewrite_problem(paragraphs, [first, second], min_ratio=self.min_ratio,
                                         max_ratio=self.max_ratio, min_coverage=self.min_coverage, what="text")
                if reason is None:
                    return paragraphs
        self.failed += 1
        self.errors.append(f"{where}: {reason}")
        logger.warning("video integration %s kept the original text: %s", where, reason)
        return None

    def pair(self, first: str, second: str, where: str) -> str:
        """Integrate two texts; past the context, integrate only the boundary region."""
        if not first.strip():
            return second
        if not second.strip():
            return first
        if self._fits(first, second):
            self._note("pairwise")
            out = self._ask(first, second, where)
            return join_paragraphs(out) if out is not None else join_paragraphs([first, second])
        a, b = split_paragraphs(first), split_paragraphs(second)
        k = j = 1
        if not self._fits(a[-1], b[0]):
            self._note("concat")
            self.errors.append(f"{where}: boundary paragraphs exceed the context, concatenated")
            return join_paragraphs(a + b)
        # grow the region alternately (earlier text first) while it still fits
        while True:
            grown = False
            if k < len(a) and self._fits(join_paragraphs(a[-(k + 1):]), join_paragraphs(b[:j])):
                k += 1
                grown = True
            if j < len(b) and self._fits(join_paragraphs(a[-k:]), join_paragraphs(b[:j + 1])):
                j += 1
                grown = True
            if not grown:
                break
        self._note("boundary")
        region = self._ask(join_paragraphs(a[-k:]), join_paragraphs(b[:j]), where)
        if region is None:
            return join_paragraphs(a + b)
        return join_paragraphs(a[:-k] + region + b[j:])


def integrate_video(
    cluster_captions: Sequence[str],
    llm: ChatLLM,
    params: GenerationParams | None = None,
    max_context_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    *,
    mode: str = "sequential",
    prompt: str = INTEGRATE_PROMPT,
    system: str = MERGE_SYSTEM,
    theme: bool = False,
    theme_prompt: str = THEME_PROMPT,
    min_ratio: float = 0.3,
    max_ratio: float = 3.0,
) -> VideoResult:
    """One coherent caption from a video's cluster captions (in order), following the LoVR paper.

    ``mode="sequential"``: fold left, integrating the text so far with the next cluster caption
    (the paper's repeated paragraph integration); ``mode="hierarchical"``: integrate adjacent pairs level
    by level (same number of calls, log-depth chain of dependent calls).

    Context bound, per integration step: a step is "pairwise" (both whole texts go to the LLM) when the
    prompt plus ``params.max_new_tokens`` fits in ``max_context_tokens`` and the reply, expected to be
    about as long as the input, fits in ``params.max_new_tokens``. Otherwise the step is "boundary":
    only the last paragraphs of the earlier text and the first paragraphs of the later one (as many as
    fit, at least one each) are integrated, and the rest is kept verbatim, so every call stays within
    the context however long the video. When even one paragraph each does not fit, the step is "concat"
    (no call). ``strategy`` reports ``"<mode>:<steps used>"``, e.g. ``"sequential:pairwise+boundary"``;
    ``"single"`` when there is only one non-empty cluster. A failed step keeps both texts verbatim.
    ``count_tokens`` defaults to :func:`approx_tokens`; ``params`` to :func:`merger_params` with 4096
    new tokens. ``theme=True`` adds a short theme paragraph (:func:`summarize_theme`).
    """
    if mode not in ("sequential", "hierarchical"):
        raise ValueError(f"mode must be 'sequential' or 'hierarchical', got {mode!r}")
    params = params or merger_params(max_new_tokens=4096)
    count = count_tokens or approx_tokens
    texts = [join_paragraphs(split_paragraphs(c)) for c in cluster_captions]
    texts = [t for t in texts if t]
    integ = _Integrator(llm, params, max_context_tokens, count, prompt, system, min_ratio, max_ratio)
    if not texts:
        caption, strategy = "", "empty"
    elif len(texts) == 1:
        caption, strategy = texts[0], "single"
    else:
        if mode == "sequential":
            caption = texts[0]
            for i, nxt in enumerate(texts[1:], start=1):
                caption = integ.pair(caption, nxt, f"step {i} (cluster {i})")
        else:
            level, depth = texts, 0
            while len(level) > 1:
                nxt_level = [
                    integ.pair(level[i], level[i + 1], f"level {depth} pair {i // 2}")
                    for i in range(0, len(level) - 1, 2)
                ]
                if len(level) % 2:
                    nxt_level.append(level[-1])
                level, depth = nxt_level, depth + 1
            caption = level[0]
        strategy = f"{mode}:{'+'.join(integ.used)}"
    result = VideoResult(caption, integ.calls, integ.failed, strategy, integ.errors)
    if theme and caption:
        t = summarize_theme(caption, llm, params, max_context_tokens, count, prompt=theme_prompt, system=system)
        result.theme, result.theme_error = t.caption, t.error
        result.llm_calls += t.llm_calls
    return result


@dataclass
class ThemeResult:
    caption: str
    llm_calls: int
    error: str | None
    truncated: bool

    @property
    def status(self) -> str:
        return OK if self.error is None else FAILED


def summarize_theme(
    caption: str,
    llm: ChatLLM,
    params: GenerationParams | None = None,
    max_context_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    *,
    prompt: str = THEME_PROMPT,
    system: str = MERGE_SYSTEM,
    max_new_tokens: int = 256,
) -> ThemeResult:
    """A short theme paragraph for a whole-video caption.

    Past the context, every other paragraph is dropped (repeatedly) so the model still sees the whole
    span of the video rather than only its beginning; ``truncated`` says so.
    """
    params = replace(params or merger_params(), max_new_tokens=max_new_tokens)
    count = count_tokens or approx_tokens
    paragraphs = split_paragraphs(caption)
    truncated = False

    def fits(ps: list[str]) -> bool:
        if max_context_tokens is None:
            return True
        used = count(system) + count(render_prompt(prompt, caption=join_paragraphs(ps)))
        return used + params.max_new_tokens <= max_context_tokens

    while len(paragraphs) > 1 and not fits(paragraphs):
        paragraphs = paragraphs[::2]
        truncated = True
    if not paragraphs or not fits(paragraphs):
        return ThemeResult("", 0, "caption exceeds the model context", truncated)
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": render_prompt(prompt, caption=join_paragraphs(paragraphs))},
    ]
    try:
        reply = llm.chat(messages, params)
    except Exception as exc:  # a missing theme never fails the video
        return ThemeResult("", 1, failure_message(exc), truncated)
    text, problem = theme_verdict(caption, reply)
    if text is None:
        return ThemeResult("", 1, problem, truncated)
    return ThemeResult(text, 1, None, truncated)
