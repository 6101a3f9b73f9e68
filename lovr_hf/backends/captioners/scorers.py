"""Caption quality scorers (0-10) for the refinement loop: a cheap offline heuristic and an LLM judge.

A judge that cannot give a score (its call failed, its reply has no number) is a failure, never a
score: :meth:`QualityScorer.judge` returns a :class:`Judgement` per caption with either a score or the
error; the LLM judge overrides it to say why its reply held no score.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import LLMS, SCORERS, GenerationParams, Judgement, QualityScorer

logger = logging.getLogger(__name__)


class JudgeFailed(RuntimeError):
    """The quality judge could not score a caption (failed call or reply without a score)."""


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_TERMINAL = (".", "!", "?", '"', "'", ")", "*")


@SCORERS.register("heuristic")
class HeuristicScorer(QualityScorer):
    """Flags what a broken VLM output looks like, without a model: too short, repetitive, degenerate
    (few distinct words, non-words, one token repeated) or truncated mid-sentence.

    Starts from 10 and subtracts: length under ``min_words`` (up to 5 points), repeated 3-grams (up to
    4), low type/token ratio (up to 3), a large share of non-alphabetic tokens (up to 3), no final
    punctuation (1). The weights are deliberately simple; use the LLM judge for semantic quality.
    """

    name = "heuristic"

    def __init__(self, min_words: int = 40, **_: Any) -> None:
        self.min_words = min_words

    def score_one(self, text: str) -> float:
        text = (text or "").strip()
        tokens = text.split()
        if not tokens:
            return 0.0
        words = [w.lower() for w in _WORD.findall(text)]
        score = 10.0
        score -= 5.0 * max(0.0, 1.0 - len(tokens) / self.min_words)
        if len(words) >= 6:
            grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
            repeated = 1.0 - len(set(grams)) / len(grams)
            score -= 4.0 * min(1.0, repeated * 2)
            ttr = len(set(words)) / len(words)
            score -= 3.0 * max(0.0, (0.35 - ttr) / 0.35)
        alpha_share = len(words) / len(tokens)
        score -= 3.0 * max(0.0, (0.7 - alpha_share) / 0.7)
        if not text.endswith(_TERMINAL):
            score -= 1.0
        return float(np.clip(score, 0.0, 10.0))

    def score(self, captions: Sequence[str], frames: Sequence[np.ndarray] | None = None) -> list[float]:
        return [self.score_one(c) for c in captions]


@SCORERS.register("llm")
class LLMJudgeScorer(QualityScorer):
    """Any chat LLM as judge with the judge prompt of :mod:`lovr_hf.prompts`.

    :meth:`judge` gives per caption a score or the error (the failed call's reason, or the reply that
    held no score); :meth:`score` raises :class:`JudgeFailed` rather than inventing a score.
    """

    name = "llm"

    def __init__(self, llm_spec: str = "openai", llm: Any = None, **llm_kwargs: Any) -> None:
        if llm is None:
            backend, _, model = llm_spec.partition(":")
            if model:
                llm_kwargs.setdefault("api_model" if backend == "openai" else "model_path", model)
            llm = LLMS.create(backend, **llm_kwargs)
        self.llm = llm

    def judge(self, captions: Sequence[str], frames: Sequence[np.ndarray] | None = None) -> list[Judgement]:
        from lovr_hf.prompts import JUDGE_PROMPT, JUDGE_SYSTEM, parse_score, render_prompt

        params = GenerationParams(temperature=0.0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=16,
                                  do_sample=False)
        out = []
        for c in captions:
            msgs = [{"role": "system", "content": JUDGE_SYSTEM},
                    {"role": "user", "content": render_prompt(JUDGE_PROMPT, caption=c)}]
            try:
                reply = self.llm.chat(msgs, params)
            except Exception as exc:
                out.append(Judgement(None, f"quality judge failed: {type(exc).__name__}: {exc}"))
            else:
                s = parse_score(reply)
                out.append(Judgement(s) if s is not None else
                           Judgement(None, f"quality judge reply has no score: {(reply or '')[:80]!r}"))
            if out[-1].error:
                logger.warning("%s", out[-1].error)
        return out

    def score(self, captions: Sequence[str], frames: Sequence[np.ndarray] | None = None) -> list[float]:
        results = self.judge(captions, frames)
        failed = next((j.error for j in results if j.error), None)
        if failed:
            raise JudgeFailed(failed)
        return [float(j.score) for j in results]  # type: ignore[arg-type]
