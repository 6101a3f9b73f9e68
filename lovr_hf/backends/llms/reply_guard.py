"""What a merge reply *adds*: instruction echo, meta-commentary, prompt labels, loops, invented content.

A join or integration reply may only connect and reorder the paragraphs it was given. Small models do
otherwise: SmolLM2-135M, given the original transition prompt, answers "The original content was as
follows: ...", "The final output will be a simple and concise format ...", repeats one sentence until
the token limit, or continues with events that are in neither paragraph (real replies in
``tests/data/smollm2_merge_replies.json``). :func:`added_text_problem` names the first such problem, so
the caller keeps the original paragraphs and counts the join as failed; facts *dropped* are checked by the
caller's coverage test.

Grounding is lexical, on content words (letters only, 3+ characters, not a stop word, crudely stemmed):
a sentence is grounded when its words come from the input paragraphs, plus connectives and the words a
video description uses for itself ("then", "scene", "camera"...). It is deliberately lenient (a
rewrite may paraphrase): a reply fails only when several of its words are new, or one sentence mostly is.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_TOKEN = re.compile(r"\w+", re.UNICODE)

#: prompt labels and instruction phrases of the merge prompts (never in a video description)
PROMPT_ECHO = (
    "original content", "optimized end", "optimized beginning", "last paragraph of previous",
    "first paragraph of next", "# requirements", "output format", "as follows", "the following paragraph",
    "preserve facts", "transition optimization", "format specifications",
)
#: words about the text itself rather than the video: meta-commentary unless the inputs use them
META_WORDS = frozenset({
    "paragraph", "paragraphs", "caption", "captions", "output", "prompt", "instruction", "instructions",
    "requirement", "requirements", "optimized", "optimize", "optimise", "optimised", "revised", "rewrite",
    "rewritten", "summary", "summarize", "summarise", "summarized", "narrative", "sentence", "sentences",
})
#: connectives and self-references of a video description: allowed although not in the inputs
ALLOWED = frozenset({
    "then", "after", "afterward", "afterwards", "later", "next", "meanwhile", "finally", "subsequently",
    "soon", "while", "once", "following", "eventually", "again", "first", "moment", "shortly", "continue",
    "continues", "begin", "begins", "start", "starts", "ends", "end", "scene", "scenes", "video", "clip",
    "camera", "shows", "show", "showing", "shown", "appears", "seen", "view", "frame", "shot", "during",
    "throughout", "now", "still", "another", "both", "same", "time", "back",
})
_ALLOWED_STEMS: frozenset[str] = frozenset()  # filled below, once _stem exists
STOP = frozenset("""
a an the and or but nor so yet for of in on at to from by with without within into onto over under above below
up down out off about around through across along between among against toward towards behind beside near
is are was were be been being am do does did done have has had having will would shall should can could may
might must this that these those there here it its it's he him his she her hers they them their theirs we us
our you your i me my mine who whom whose which what when where why how all any each every some such no not
only own than too very just also as if because until unless though although whether either neither one two
more most less least much many few other others into upon via per s t
""".split())


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    w = word.lower()
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


_ALLOWED_STEMS = frozenset(_stem(w) for w in ALLOWED)


def content_stems(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text) if len(w) >= 3 and w.lower() not in STOP]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _norm(sentence: str) -> str:
    return " ".join(w.lower() for w in _TOKEN.findall(sentence))


def prompt_echo(text: str, sources: Iterable[str] = ()) -> str | None:
    """A prompt label or instruction phrase in ``text`` that the inputs do not contain, else None."""
    low = text.lower()
    src = " ".join(sources).lower()
    return next((p for p in PROMPT_ECHO if p in low and p not in src), None)


def repeated_sentence(text: str, sources: Iterable[str] = ()) -> str | None:
    """A sentence the reply repeats more often than the inputs do (a generation loop), else None."""
    have = Counter(_norm(s) for src in sources for s in _sentences(src))
    got = Counter(n for n in (_norm(s) for s in _sentences(text)) if len(n.split()) >= 3)
    return next((s for s, n in got.items() if n > max(1, have.get(s, 0))), None)


def repeated_phrase(text: str, sources: Iterable[str] = (), n: int = 6, times: int = 3) -> str | None:
    """A run of ``n`` words the reply says ``times`` times or more, more often than the inputs (a loop inside
    one long sentence, which :func:`repeated_sentence` cannot see), else None."""
    def grams(t: str) -> list[str]:
        w = [x.lower() for x in _TOKEN.findall(t)]
        return [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)]

    suspects = {g: k for g, k in Counter(grams(text)).items() if k >= times}
    if not suspects:  # the common case: no source text needs counting
        return None
    have = Counter(g for src in sources for g in grams(src) if g in suspects)
    return next((g for g, k in suspects.items() if k > have.get(g, 0)), None)


_END = re.compile(r"[.!?…\"'”’)\]]\s*$")


def cut_off(text: str, sources: Iterable[str] = ()) -> bool:
    """The reply stops mid-sentence (the token limit) while every input ends its last sentence."""
    ends = [bool(_END.search(s.strip())) for s in sources if s.strip()]
    return bool(text.strip()) and all(ends) and not _END.search(text.strip())


def added_text_problem(
    reply: str | Sequence[str],
    sources: Sequence[str],
    *,
    max_new_words: int = 3,
    max_new_share: float = 0.2,
    max_sentence_new_share: float = 0.4,
) -> str | None:
    """Why ``reply`` adds text that ``sources`` do not support, or None when it only connects them.

    Checked in order: prompt labels / instruction echo; meta-commentary (words about paragraphs, captions,
    output, not about the video); a repeated sentence or phrase (a generation loop); a reply cut off
    mid-sentence (the token limit: its last words are a fragment); invented content: more than ``max_new_words``
    content words that are in no input and more than ``max_new_share`` of the reply's, or a sentence with
    two or more new content words making at least ``max_sentence_new_share`` of it.
    """
    text = reply if isinstance(reply, str) else "\n".join(reply)
    echo = prompt_echo(text, sources)
    if echo:
        return f"instruction echo ({echo!r})"
    src_words = {w.lower() for s in sources for w in _WORD.findall(s)}
    meta = sorted({w.lower() for w in _WORD.findall(text) if w.lower() in META_WORDS} - src_words)
    if meta:
        return f"meta-commentary ({', '.join(meta)})"
    loop = repeated_sentence(text, sources) or repeated_phrase(text, sources)
    if loop:
        return f"repeats itself ({loop[:60]!r})"
    if cut_off(text, sources):
        return f"cut off mid-sentence ({text.strip()[-40:]!r})"
    # grounding: sentences copied from the inputs are grounded by definition (long integrations are mostly
    # copies), so only the others are stemmed and checked
    copied = {_norm(x) for src in sources for x in _sentences(src)}
    fresh = [x for x in _sentences(text) if _norm(x) not in copied]
    if not fresh:
        return None
    vocab = {st for src in sources for st in content_stems(src)} | _ALLOWED_STEMS
    per = [content_stems(x) for x in fresh]
    copied_words = sum(1 for x in _sentences(text) if _norm(x) in copied
                       for w in _WORD.findall(x) if len(w) >= 3 and w.lower() not in STOP)
    new = [w for sw in per for w in sw if w not in vocab]
    total = copied_words + sum(len(sw) for sw in per)
    if len(new) > max_new_words and len(new) > max_new_share * max(1, total):
        return f"adds content not in the input ({', '.join(sorted(set(new))[:6])})"
    for sentence, sw in zip(fresh, per):
        n_new = sum(w not in vocab for w in sw)
        if n_new >= 2 and n_new >= max_sentence_new_share * len(sw):
            return f"adds a sentence not in the input ({sentence[:60]!r})"
    return None
