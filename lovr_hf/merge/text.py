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

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lovr_hf.backends.base import ChatLLM, GenerationParams
from lovr_hf.backends.llms.reply_guard import (
    META_WORDS,
    added_text_problem,
    cut_off,
    prompt_echo,
    repeated_phrase,
    repeated_sentence,
)
from lovr_hf.failures import message as failure_message
from lovr_hf.prompts import (
    INTEGRATE_PROMPT,
    MERGE_SYSTEM,
    THEME_PROMPT,
    TRANSITION_PROMPT,
    render_prompt,
)
from lovr_hf.schema import FAILED, NEEDS_REVIEW, OK, clip_id_for, cluster_id_for

logger = logging.getLogger(__name__)

PARAGRAPH_SEP = "\n"
DEFAULT_CLUSTER_SIZE = 10
#: clip caption statuses whose text is merged (``needs_review`` captions are real text: kept, flagged)
MERGEABLE = (OK, NEEDS_REVIEW)
#: prefix of every reason a reply was rejected by a guard (counted as "rejected replies" in summaries)
REJECTED = "rejected reply: "


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


_KEYWORD = r"(?:paragraph|previous|prev\b|next|optimi[sz]ed|beginning|caption|part\b|output|first|second|last|end\b)"
_KEYWORD_RE = re.compile(_KEYWORD, re.IGNORECASE)
_SEP = r"[:：\-–—]"
# "[Optimized end of previous paragraph]", "**[Paragraph 1]:**", "> [Part 2] -"
_BRACKET_LABEL = re.compile(rf"^[\s*_>#]*\[([^\]\n]{{1,80}})\]\s*(?:{_SEP})?[\s*_]*")
# "**Paragraph 1:**", "__Next paragraph__:"
_BOLD_LABEL = re.compile(rf"^\s*(\*\*|__)([^*_\n]{{1,80}}?)\1\s*(?:{_SEP})?\s*")
# "Paragraph 1:", "Optimized end of previous paragraph:", "Next paragraph -", "Previous:", "Output:"
_PLAIN_LABEL = re.compile(
    rf"^[\s>#]*((?:[\w-]+\s+){{0,6}}?(?:paragraph|part|caption)(?:\s*\d+)?"
    rf"|previous|prev|next|first|second|output|answer|result)\s*{_SEP}\s*",
    re.IGNORECASE,
)
# list markers of a numbered or bulleted answer: "1. ", "2) ", "- ", "* "
_LIST_MARKER = re.compile(r"^(?:[12][.)]|[-*•])\s+")
_REFUSAL = re.compile(r"^(?:i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|as an ai)\b", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```")


def _strip_label(line: str) -> str:
    """Remove leading paragraph labels (repeatedly: labels come nested, e.g. ``**[Paragraph 1]:**``)."""
    for _ in range(4):
        before = line
        m = _BRACKET_LABEL.match(line)
        if m and _KEYWORD_RE.search(m.group(1)):
            line = line[m.end():]
        m = _BOLD_LABEL.match(line)
        if m and _KEYWORD_RE.search(m.group(2)):
            line = line[m.end():]
        m = _PLAIN_LABEL.match(line)
        if m:
            line = line[m.end():]
        m = _LIST_MARKER.match(line)
        if m:
            line = line[m.end():]
        line = line.strip()
        if line == before:
            break
    return line


def _unquote(line: str) -> str:
    line = line.strip()
    if line.startswith("**") and line.endswith("**") and len(line) > 4 and "**" not in line[2:-2]:
        line = line[2:-2].strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    if len(line) >= 2 and line[0] == "“" and line[-1] == "”":
        line = line[1:-1].strip()
    return line


def _looks_like_garbage(text: str) -> bool:
    """Structured or markup payloads (an HTML error page, a JSON error object) instead of prose."""
    t = text.strip()
    if not any(ch.isalpha() for ch in t):
        return True
    low = t[:200].lower()
    if low.startswith("<") and ("<html" in low or "<!doctype" in low or "</" in t):
        return True
    if t[0] in "{[":
        try:
            json.loads(t)
            return True
        except ValueError:
            return False
    return False


def clean_reply(reply: str | None) -> list[str] | None:
    """A model reply as clean paragraphs: labels, code fences, headings and preambles removed.

    Returns None for no usable text (None, empty, markup/JSON garbage, a refusal).
    """
    if not isinstance(reply, str) or not reply.strip():
        return None
    if _looks_like_garbage(reply):
        return None
    # a literal backslash-n (models copying the prompt's "\n") separates paragraphs too
    text = reply.replace("\r\n", "\n").replace("\\n", "\n")
    paragraphs: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _FENCE.match(line):
            continue
        if line.startswith("#") and not paragraphs and len(line) < 100:
            continue  # a markdown heading before the content
        stripped = _unquote(_strip_label(line))
        if not stripped:
            continue  # the line was only a label
        if stripped.endswith(":") and len(stripped) < 100 and not paragraphs:
            continue  # "Here are the optimized paragraphs:"
        paragraphs.append(stripped)
    if not paragraphs or _REFUSAL.match(paragraphs[0]):
        return None
    return paragraphs


def parse_transition_reply(reply: str | None) -> list[str] | None:
    """Parse a transition reply into ``[new_prev, *new_next]``.

    Element 0 replaces the last paragraph merged so far; the remaining elements replace the first
    paragraph of the next caption (the original's ``split('\\n', 1)``: everything after the first line
    is the next part). A single paragraph gives ``[p, ""]``: previous replaced, next emptied, as the
    original. Bracket/bold/plain labels ("[Paragraph 1]", "Paragraph 1:", "**Previous:**") are stripped.
    None when nothing usable came back (None, empty, garbage, refusal).
    """
    paragraphs = clean_reply(reply)
    if paragraphs is None:
        return None
    if len(paragraphs) == 1:
        return [paragraphs[0], ""]
    return paragraphs


def _plausible_length(out_chars: int, in_chars: int, min_ratio: float, max_ratio: float) -> bool:
    """A rewrite keeps roughly the input's size; far shorter = dropped facts, far longer = rambling."""
    return min_ratio * in_chars <= out_chars <= max_ratio * in_chars + 200


_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)


def _covers(reply: str, source: str, min_coverage: float) -> bool:
    """Does the reply keep the facts of ``source``? Share of its distinct content words (4+ letters) that
    the reply still contains. Catches small models that echo one paragraph twice and drop the other."""
    words = {w.lower() for w in _CONTENT_WORD.findall(source)}
    if not words or min_coverage <= 0:
        return True
    kept = {w.lower() for w in _CONTENT_WORD.findall(reply)}
    return len(words & kept) / len(words) >= min_coverage


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
            parsed = parse_transition_reply(reply)
            if parsed is None:
                reason = "empty or unparsable reply" if reply and reply.strip() else "empty reply"
            else:
                out_chars = sum(len(p) for p in parsed)
                if not _plausible_length(out_chars, len(prev) + len(nxt), min_ratio, max_ratio):
                    reason = f"{REJECTED}implausible length {out_chars} for {len(prev) + len(nxt)} input chars"
                elif not (_covers(" ".join(parsed), prev, min_coverage) and _covers(" ".join(parsed), nxt, min_coverage)):
                    reason = f"{REJECTED}dropped the content of one paragraph"
                elif (added := added_text_problem(parsed, [prev, nxt])) is not None:
                    reason = f"{REJECTED}{added}"
                if reason is not None:
                    parsed = None
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


# ---- grouping ---------------------------------------------------------------------------------------------

_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def slice_number(value: Any) -> int:
    """Numeric slice order of ``3``, ``"3"``, ``"Scene-009"`` or ``"vid-Scene-010"`` (never string order)."""
    if isinstance(value, bool):
        raise ValueError(f"not a slice number: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = _LAST_INT.search(value)
        if m:
            return int(m.group(1))
    raise ValueError(f"not a slice number: {value!r}")


def _first(row: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    return default


@dataclass
class Cluster:
    """Consecutive clips of one video (by numeric slice order) merged into one caption."""

    video_id: str
    index: int
    rows: list[Mapping[str, Any]]

    @property
    def cluster_id(self) -> str:
        return cluster_id_for(self.video_id, self.index)

    @functools.cached_property
    def slice_nums(self) -> list[int]:
        return [slice_number(_first(r, "slice_num", "clip_id")) for r in self.rows]

    @property
    def start_slice_num(self) -> int:
        return self.slice_nums[0]

    @property
    def end_slice_num(self) -> int:
        return self.slice_nums[-1]

    @property
    def clip_count(self) -> int:
        return len(self.rows)

    @property
    def captions(self) -> list[str]:
        return [_first(r, "caption", "cap", default="") or "" for r in self.rows]

    @property
    def usable_captions(self) -> list[str]:
        """Captions with the text of rows whose ``status`` (when they have one) is not mergeable blanked:
        such a clip keeps its place in the run, as in the original, but contributes no text."""
        return [c if _usable(r) else "" for r, c in zip(self.rows, self.captions)]

    @property
    def left_out(self) -> list[str]:
        """Clip ids of the run whose text is not merged (no usable caption: unusable status or empty)."""
        return [cid for r, c, cid in zip(self.rows, self.captions, self.clip_ids) if not (_usable(r) and c.strip())]

    @functools.cached_property
    def clip_ids(self) -> list[str]:
        out = []
        for r, n in zip(self.rows, self.slice_nums):
            cid = _first(r, "clip_id")
            out.append(str(cid) if cid else (clip_id_for(self.video_id, n) if n >= 1 else f"{self.video_id}-{n}"))
        return out


def _usable(row: Mapping[str, Any]) -> bool:
    st = row.get("status")
    return st is None or st in MERGEABLE


def group_clips(rows: Iterable[Mapping[str, Any]], cluster_size: int = DEFAULT_CLUSTER_SIZE) -> list[Cluster]:
    """Per video (sorted ids), clips sorted numerically by ``slice_num``, in consecutive groups.

    Every row counts, whatever its caption or status (the original groups every row of the caption
    file): a skipped or failed clip keeps its place, so the clusters after it do not shift.

    Accepts both the dataset columns (``video_id``, ``slice_num``, ``caption``) and the original JSONL
    fields (``vid``, ``slice_num``, ``cap``). A repeated (video, slice) keeps its first row and logs a
    warning, so a caption file with a duplicated line never yields a duplicated clip.
    """
    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
    per_video: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        vid = _first(row, "video_id", "vid")
        if vid is None:
            raise ValueError(f"row without video_id/vid: {dict(row)!r}"[:300])
        num = slice_number(_first(row, "slice_num", "clip_id"))
        clips = per_video.setdefault(str(vid), {})
        if num in clips:
            logger.warning("duplicate clip %s slice %d: keeping the first row", vid, num)
            continue
        clips[num] = row
    clusters: list[Cluster] = []
    for vid in sorted(per_video):
        ordered = [per_video[vid][n] for n in sorted(per_video[vid])]
        for k, start in enumerate(range(0, len(ordered), cluster_size)):
            clusters.append(Cluster(vid, k, ordered[start:start + cluster_size]))
    return clusters


def clusters_per_video(num_clips: int, cluster_size: int = DEFAULT_CLUSTER_SIZE) -> int:
    """ceil(clips / size): how many clusters a complete video has (the original's resume check)."""
    return math.ceil(num_clips / cluster_size) if num_clips > 0 else 0


# ---- full-video integration ----------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    """Rough token count (~4 characters per token for English) when no tokenizer is at hand."""
    return math.ceil(len(text) / 4)


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
            in_chars = len(first) + len(second)
            out_chars = sum(len(p) for p in paragraphs or [])
            if paragraphs is None:
                reason = "empty or unparsable reply"
            elif not _plausible_length(out_chars, in_chars, self.min_ratio, self.max_ratio):
                reason = f"{REJECTED}implausible length {out_chars} for {in_chars} input chars"
            elif not all(_covers(" ".join(paragraphs), t, self.min_coverage) for t in (first, second)):
                reason = f"{REJECTED}dropped the content of one text"
            elif (added := added_text_problem(paragraphs, [first, second])) is not None:
                reason = f"{REJECTED}{added}"
            else:
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
    cleaned = clean_reply(reply)
    if cleaned is None:
        return ThemeResult("", 1, "empty or unparsable reply", truncated)
    text = " ".join(cleaned)
    problem = prompt_echo(text, [caption]) or repeated_sentence(text, [caption]) or repeated_phrase(text, [caption])
    if problem is None and cut_off(text, [caption]):
        problem = f"cut off: {text[-40:]}"
    if problem is None:
        problem = next((w for w in sorted({w.lower() for w in re.findall(r"[^\W\d_]+", text)} & META_WORDS)
                        if w not in caption.lower()), None)
    if problem is not None:
        return ThemeResult("", 1, f"{REJECTED}instruction echo, meta-commentary or a loop ({problem!r})", truncated)
    return ThemeResult(text, 1, None, truncated)
