"""The demo's merger: a real small LLM first, an honest labelled stand-in where the reply guard rejects it.

SmolLM2-135M (the demo's offline LLM) mostly echoes the original merge prompt or loops; the reply guard
rejects those replies and the join keeps the original paragraphs, so a newcomer running ``lovr demo``
would never see what a merge does. :class:`GuardedMerger` asks the LLM (bounded: see
:mod:`lovr_hf.backends.llms.transformers`), checks the reply with the very verdicts the merge stage applies
(:func:`~lovr_hf.backends.llms.reply_checks.join_verdict` / :func:`~lovr_hf.backends.llms.reply_checks.theme_verdict`),
and where they reject it answers with :class:`StandInJoiner`'s text instead: a deterministic joiner
that does what the prompt asks in the plainest way (a temporal connective between the two paragraphs,
a repeated sentence dropped). Every call is logged with who wrote the text; :data:`TALLY` counts them
for the demo's output and card. It is only for the demo: a real run merges with the LLM alone.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from typing import Any

from lovr_hf.backends.base import ChatLLM, GenerationParams
from lovr_hf.backends.llms.reply_checks import join_verdict, theme_verdict
from lovr_hf.prompts import INTEGRATE_PROMPT, THEME_PROMPT, TRANSITION_PROMPT, prompt_fields

logger = logging.getLogger(__name__)

STAND_IN_NAME = "stand-in joiner"
#: (task, writer) -> calls in this process: task in join | theme | integrate, writer in llm | stand-in
TALLY: Counter[tuple[str, str]] = Counter()
_TALLY_LOCK = threading.Lock()
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def reset_tally() -> None:
    with _TALLY_LOCK:
        TALLY.clear()


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word looks like a name or an acronym ("I", "BBC")."""
    word = text.split(" ", 1)[0]
    if not word or word == "I" or (len(word) > 1 and word[1:].lower() != word[1:]):
        return text
    return text[0].lower() + text[1:]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


class StandInJoiner:
    """Deterministic text for the merge prompts: what a join, an integration and a theme minimally are."""

    def join(self, prev: str, nxt: str) -> str:
        seen = {s.lower() for s in _sentences(prev)}
        rest = [s for s in _sentences(nxt) if s.lower() not in seen] or _sentences(nxt)
        return f"{prev.strip()}\nThen, {_lower_first(' '.join(rest))}"

    def integrate(self, first: str, second: str) -> str:
        return self.join(first, second)

    def theme(self, caption: str) -> str:
        paragraphs = [p for p in caption.split("\n") if p.strip()]
        opening = _sentences(paragraphs[0])[0] if paragraphs else ""
        closing = _sentences(paragraphs[-1])[0] if len(paragraphs) > 1 else ""
        text = opening if not closing or closing == opening else f"{opening} Later, {_lower_first(closing)}"
        return text if text.endswith((".", "!", "?")) else text + "."

    def reply(self, task: str, fields: dict[str, str]) -> str:
        if task == "join":
            return self.join(fields["prev"], fields["next"])
        if task == "integrate":
            return self.integrate(fields["first"], fields["second"])
        return self.theme(fields["caption"])


class _Canned(ChatLLM):
    """A ChatLLM that answers one fixed text (the demo's tests feed the merger a known reply through it)."""

    name = "canned"

    def __init__(self, text: str) -> None:
        self.text = text

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> str:
        return self.text

    def model_id(self) -> str:
        return "canned"


def guard_problem(task: str, fields: dict[str, str], reply: str) -> str | None:
    """Why the merge stage would reject ``reply`` for this task (None: it would keep it): the stage's own
    verdicts (:mod:`lovr_hf.backends.llms.reply_checks`), with the stage's default bounds."""
    if task == "join":
        prev, nxt = fields["prev"].strip(), fields["next"].strip()
        if not (prev and nxt):
            return None  # the stage asks no join of an empty paragraph
        _, problem = join_verdict(prev, nxt, reply)
        return f"join 0->1: {problem}" if problem is not None else None
    if task == "theme":
        return theme_verdict(fields["caption"], reply)[1]
    return None  # integration replies are checked by the stage (coverage), not repeated here


def _task(messages: list[dict[str, str]]) -> tuple[str, dict[str, str]] | None:
    user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    for task, template in (("join", TRANSITION_PROMPT), ("theme", THEME_PROMPT), ("integrate", INTEGRATE_PROMPT)):
        fields = prompt_fields(template, user)
        if fields is not None:
            return task, fields
    return None


class GuardedMerger(ChatLLM):
    """``llm="lovr_hf.backends.standins.demo_merge:GuardedMerger"``: the transformers LLM, the stand-in where rejected.

    ``llm_options`` go to :class:`~lovr_hf.backends.llms.transformers.TransformersChatLLM`
    (``model_path``: a Hub id, folder, .gguf or ``"smollm2"``).
    """

    name = "guarded-merger"

    def __init__(self, model_path: str | None = None, **llm_options: Any) -> None:
        from lovr_hf.backends.llms.transformers import TransformersChatLLM

        self.llm = TransformersChatLLM(model_path, **llm_options)
        self.stand_in = StandInJoiner()

    @property
    def max_context_tokens(self) -> int | None:  # the real model's, so the stage sizes its inputs to it
        return self.llm.max_context_tokens

    def count_tokens(self, text: str) -> int:
        return self.llm.count_tokens(text)

    def load(self) -> Any:  # the real model's weights, before any row (a missing folder stops the command)
        return self.llm.load()

    def check_server(self, what: str = "model") -> None:
        self.llm.check_server(what)

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> str:
        task = _task(messages)
        reply = self.llm.chat(messages, params)
        if task is None:
            return reply
        kind, fields = task
        problem = guard_problem(kind, fields, reply)
        with _TALLY_LOCK:
            TALLY[(kind, "stand-in" if problem else "llm")] += 1
        if problem is None:
            logger.info("merge %s: the LLM's reply kept (%d chars)", kind, len(reply))
            return reply
        logger.info("merge %s: the LLM's reply was rejected (%s); the %s writes it", kind, problem, STAND_IN_NAME)
        return self.stand_in.reply(kind, fields)

    def model_id(self) -> str:
        return f"{self.llm.model_id()}+{STAND_IN_NAME}"


def tally_note() -> str:
    """One line for the demo's output: who wrote each merged text."""
    with _TALLY_LOCK:
        parts = []
        for kind in ("join", "integrate", "theme"):
            llm, stand = TALLY[(kind, "llm")], TALLY[(kind, "stand-in")]
            if llm or stand:
                parts.append(f"{kind}s: {llm} by the LLM, {stand} by the {STAND_IN_NAME} (LLM reply rejected)")
    return "merge texts written: " + ("; ".join(parts) if parts else "none")


def theme_note() -> str:
    """The themes' share of the tally (joins and integrations are in the run summary's merge line)."""
    with _TALLY_LOCK:
        llm, stand = TALLY[("theme", "llm")], TALLY[("theme", "stand-in")]
    return f"themes written: {llm} by the LLM, {stand} by the {STAND_IN_NAME} (LLM reply rejected)" if llm or stand \
        else ""
