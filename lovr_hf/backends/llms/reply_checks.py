"""What the merge stage accepts of an LLM's reply: the reply cleaned into paragraphs, then judged.

:func:`clean_reply` strips what models wrap around the text (labels, fences, headings, quotes, preambles) and
refuses garbage and refusals; :func:`rewrite_problem` says why a rewrite of given paragraphs is rejected
(implausible length, a paragraph's content dropped, text added: :mod:`lovr_hf.backends.llms.reply_guard`);
:func:`join_verdict` and :func:`theme_verdict` are the whole verdict on a join and a theme reply. They are
pure text functions at the backend level so that a backend (the demo's guarded merger) can ask the very
question the merge stage asks, without importing the stage.
"""

from __future__ import annotations

import json
import re

from lovr_hf.backends.llms.reply_guard import (
    META_WORDS,
    added_text_problem,
    cut_off,
    prompt_echo,
    repeated_phrase,
    repeated_sentence,
)

#: prefix of every reason a reply was rejected by a guard (counted as "rejected replies" in summaries)
REJECTED = "rejected reply: "

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


def plausible_length(out_chars: int, in_chars: int, min_ratio: float, max_ratio: float) -> bool:
    """A rewrite keeps roughly the input's size; far shorter = dropped facts, far longer = rambling."""
    return min_ratio * in_chars <= out_chars <= max_ratio * in_chars + 200


_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)


def covers(reply: str, source: str, min_coverage: float) -> bool:
    """Does the reply keep the facts of ``source``? Share of its distinct content words (4+ letters) that
    the reply still contains. Catches small models that echo one paragraph twice and drop the other."""
    words = {w.lower() for w in _CONTENT_WORD.findall(source)}
    if not words or min_coverage <= 0:
        return True
    kept = {w.lower() for w in _CONTENT_WORD.findall(reply)}
    return len(words & kept) / len(words) >= min_coverage


def rewrite_problem(parts: list[str], sources: list[str], *, min_ratio: float, max_ratio: float,
                    min_coverage: float, what: str) -> str | None:
    """Why a rewrite ``parts`` of ``sources`` is rejected (None: kept): a length far from the input's, the
    content words of one source (a ``what``: "paragraph", "text") mostly gone, or text the sources lack."""
    out_chars, in_chars = sum(len(p) for p in parts), sum(len(t) for t in sources)
    if not plausible_length(out_chars, in_chars, min_ratio, max_ratio):
        return f"{REJECTED}implausible length {out_chars} for {in_chars} input chars"
    if not all(covers(" ".join(parts), t, min_coverage) for t in sources):
        return f"{REJECTED}dropped the content of one {what}"
    added = added_text_problem(parts, sources)
    return f"{REJECTED}{added}" if added is not None else None


def join_verdict(prev: str, nxt: str, reply: str | None, *, min_ratio: float = 0.2, max_ratio: float = 4.0,
                 min_coverage: float = 0.5) -> tuple[list[str] | None, str | None]:
    """A join reply for the paragraphs ``prev`` and ``nxt``: ``(paragraphs, None)`` when kept (see
    :func:`parse_transition_reply`), ``(None, reason)`` when the original paragraphs must stay."""
    parsed = parse_transition_reply(reply)
    if parsed is None:
        return None, "empty or unparsable reply" if reply and reply.strip() else "empty reply"
    problem = rewrite_problem(parsed, [prev, nxt], min_ratio=min_ratio, max_ratio=max_ratio,
                              min_coverage=min_coverage, what="paragraph")
    return (None, problem) if problem is not None else (parsed, None)


def theme_verdict(caption: str, reply: str | None) -> tuple[str | None, str | None]:
    """A theme reply for a video ``caption``: ``(text, None)`` when kept, ``(None, reason)`` when rejected
    (nothing usable, instruction echo, meta-commentary, a loop, or a reply cut off)."""
    cleaned = clean_reply(reply)
    if cleaned is None:
        return None, "empty or unparsable reply"
    text = " ".join(cleaned)
    problem = prompt_echo(text, [caption]) or repeated_sentence(text, [caption]) or repeated_phrase(text, [caption])
    if problem is None and cut_off(text, [caption]):
        problem = f"cut off: {text[-40:]}"
    if problem is None:
        problem = next((w for w in sorted({w.lower() for w in re.findall(r"[^\W\d_]+", text)} & META_WORDS)
                        if w not in caption.lower()), None)
    if problem is not None:
        return None, f"{REJECTED}instruction echo, meta-commentary or a loop ({problem!r})"
    return text, None
