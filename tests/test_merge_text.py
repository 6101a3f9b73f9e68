"""The merging algorithm on hand-written captions with a scripted LLM: exact splicing, parsing, grouping."""

from __future__ import annotations

import random

import pytest

from lovr_hf.backends.base import approx_tokens
from lovr_hf.backends.llms.reply_checks import parse_transition_reply
from lovr_hf.backends.standins.chat_llms import ScriptedLLM
from lovr_hf.merge.clusters import clusters_per_video, group_clips, slice_number
from lovr_hf.merge.text import (
    PARAGRAPH_SEP,
    integrate_video,
    merger_params,
    smooth_group,
    split_paragraphs,
    summarize_theme,
)
from lovr_hf.prompts import (
    CAPTION_SYSTEM,
    CAPTION_USER,
    INTEGRATE_PROMPT,
    MERGE_SYSTEM,
    TRANSITION_PROMPT,
    load_prompt,
    load_prompt_set,
    parse_score,
    prompt_hash,
    render_prompt,
)

# three clip captions as a VLM writes them: several paragraphs, blank lines, stray whitespace
CAP_A = "A man in a red coat enters a bakery.\n\nHe looks at the bread on the shelves.  \nThe room is warm."
CAP_B = "  The man pays the baker with coins.\nThe baker smiles.\n"
CAP_C = "Outside, snow falls on the street.\r\nA dog barks at the man.\n\n\nThe scene ends at dusk."


def test_split_paragraphs_like_the_original() -> None:
    assert split_paragraphs(CAP_A) == ["A man in a red coat enters a bakery.", "He looks at the bread on the shelves.",
                                       "The room is warm."]
    assert split_paragraphs(CAP_C)[0] == "Outside, snow falls on the street."  # \r stripped
    assert split_paragraphs("") == [] and split_paragraphs(None) == [] and split_paragraphs(" \n \n") == []
    assert PARAGRAPH_SEP == "\n"  # caption_merger.py: '\n'.join(merged_paragraphs)


def test_smooth_group_splices_only_the_joins_exactly() -> None:
    llm = ScriptedLLM([
        "[Optimized end of previous paragraph]\nThe room is warm and inviting.\n"
        "[Optimized beginning of next paragraph]\nThen the man pays the baker with coins.",
        "The baker smiles as he leaves.\nAfter that, snow falls on the street outside.",
    ])
    r = smooth_group([CAP_A, CAP_B, CAP_C], llm)
    assert r.caption == (
        "A man in a red coat enters a bakery.\n"
        "He looks at the bread on the shelves.\n"
        "The room is warm and inviting.\n"
        "Then the man pays the baker with coins.\n"
        "The baker smiles as he leaves.\n"
        "After that, snow falls on the street outside.\n"
        "A dog barks at the man.\n"
        "The scene ends at dusk."
    )
    assert (r.merged_paragraphs, r.llm_calls, r.failed_calls, r.errors, r.status) == (8, 2, 0, [], "ok")
    assert len(split_paragraphs(r.caption)) == r.merged_paragraphs
    # each call saw exactly the last paragraph so far and the next caption's first paragraph
    first, second = llm.user_prompts()
    assert first == render_prompt(TRANSITION_PROMPT, prev="The room is warm.",
                                  next="The man pays the baker with coins.")
    assert "He looks at the bread" not in first and "The baker smiles" not in first
    assert "[Last paragraph of previous caption]:\nThe baker smiles.\n" in second  # B's last, unrewritten
    assert "[First paragraph of next paragraph]:\nOutside, snow falls on the street.\n" in second
    assert all(c[0] == {"role": "system", "content": MERGE_SYSTEM} for c in llm.calls)


def test_one_paragraph_reply_replaces_previous_and_empties_next() -> None:
    llm = ScriptedLLM(["The room is warm, and then the man pays with coins.",
                       "The room is warm; he pays, then snow falls."])
    r = smooth_group([CAP_A, "The man pays the baker with coins.", "Snow falls."], llm)
    assert split_paragraphs(r.caption) == [
        "A man in a red coat enters a bakery.", "He looks at the bread on the shelves.",
        "The room is warm; he pays, then snow falls.",
    ]
    # the second join got the paragraph that ended the text after the first rewrite (no empty paragraph)
    assert "[Last paragraph of previous caption]:\nThe room is warm, and then the man pays with coins.\n" \
        in llm.user_prompts()[1]
    assert r.merged_paragraphs == 3 and r.llm_calls == 2 and r.failed_calls == 0


@pytest.mark.parametrize("bad", [
    RuntimeError("connection reset"), "", "   \n ", '{"error": {"message": "overloaded"}}',
    "<html><body><h1>502 Bad Gateway</h1></body></html>", "I'm sorry, but I can't help with that.",
    "ok", "word " * 400,  # far too short / far too long for the two input paragraphs
])
def test_failed_join_keeps_the_original_paragraphs(bad: object) -> None:
    llm = ScriptedLLM([bad, "The baker smiles.\nOutside, snow falls on the street."])
    r = smooth_group([CAP_A, CAP_B, CAP_C], llm)
    assert split_paragraphs(r.caption) == split_paragraphs(CAP_A) + split_paragraphs(CAP_B) + split_paragraphs(CAP_C)
    assert r.llm_calls == 2 and r.failed_calls == 1 and r.status == "failed"
    assert len(r.errors) == 1 and r.errors[0].startswith("join 0->1:")
    if isinstance(bad, BaseException):
        assert "RuntimeError: connection reset" in r.error


def test_captions_without_text_cost_no_call_and_single_caption_is_verbatim() -> None:
    llm = ScriptedLLM()
    r = smooth_group(["", CAP_B, "  \n", ""], llm)
    assert r.caption == "The man pays the baker with coins.\nThe baker smiles." and r.llm_calls == 0
    assert smooth_group([], llm).caption == "" and smooth_group([], llm).merged_paragraphs == 0
    assert llm.calls == []


def test_smooth_group_is_deterministic_with_the_default_responder() -> None:
    caps = [CAP_A, CAP_B, CAP_C, CAP_B]
    assert smooth_group(caps, ScriptedLLM()) == smooth_group(caps, ScriptedLLM())


@pytest.mark.parametrize("reply, expected", [
    ("First part.\nSecond part.", ["First part.", "Second part."]),
    ("First part.\n\nSecond part.", ["First part.", "Second part."]),
    ("First part.\\nSecond part.", ["First part.", "Second part."]),  # literal backslash-n
    ("[Optimized end of previous paragraph] First part. \\n [Optimized beginning of next paragraph] Second part.",
     ["First part.", "Second part."]),
    ("[Paragraph 1]\nFirst part.\n[Paragraph 2]\nSecond part.", ["First part.", "Second part."]),
    ("Paragraph 1: First part.\nParagraph 2: Second part.", ["First part.", "Second part."]),
    ("**Paragraph 1:** First part.\n**Paragraph 2:** Second part.", ["First part.", "Second part."]),
    ("**[Previous paragraph]:** First part.\n**[Next paragraph]:** Second part.", ["First part.", "Second part."]),
    ("Here are the optimized paragraphs:\n\nFirst part.\nSecond part.", ["First part.", "Second part."]),
    ("```\nFirst part.\nSecond part.\n```", ["First part.", "Second part."]),
    ('"First part."\n"Second part."', ["First part.", "Second part."]),
    ("Only one paragraph.", ["Only one paragraph.", ""]),
    ("One.\nTwo.\nThree.", ["One.", "Two.", "Three."]),  # the rest replaces the next paragraph
    ("[Music plays] A man sings.\nHe bows.", ["[Music plays] A man sings.", "He bows."]),  # not a label
    ("Next, the man leaves.\nHe waves.", ["Next, the man leaves.", "He waves."]),  # not a label either
    (None, None), ("", None), ("  \n\n ", None), ("[Paragraph 1]\n[Paragraph 2]", None),
    ('{"choices": []}', None), ("<!DOCTYPE html><html></html>", None), ("12345 ... !!!", None),
    ("I cannot help with that request.", None),
])
def test_parse_transition_reply(reply: str | None, expected: list[str] | None) -> None:
    assert parse_transition_reply(reply) == expected


# ---- grouping --------------------------------------------------------------------------------------------


def _rows(vid: str, n: int, fmt: str = "Scene-{:03d}") -> list[dict]:
    return [{"vid": vid, "slice_num": fmt.format(i), "cap": f"{vid} clip {i}."} for i in range(1, n + 1)]


def test_group_clips_numeric_order_and_sizes() -> None:
    rows = _rows("v1", 23)
    random.Random(0).shuffle(rows)
    clusters = group_clips(rows)
    assert [c.clip_count for c in clusters] == [10, 10, 3]
    assert [c.cluster_id for c in clusters] == ["v1_0", "v1_1", "v1_2"]
    assert [(c.start_slice_num, c.end_slice_num) for c in clusters] == [(1, 10), (11, 20), (21, 23)]
    assert clusters[0].captions[8:] == ["v1 clip 9.", "v1 clip 10."]  # Scene-009 before Scene-010
    assert clusters[0].clip_ids[:2] == ["v1-Scene-001", "v1-Scene-002"]
    assert clusters_per_video(23) == 3 and clusters_per_video(20) == 2 and clusters_per_video(0) == 0


def test_group_clips_never_orders_by_string() -> None:
    # unpadded numbers and 4-digit scenes: string order would put 10 before 9 and 1000 before 999
    rows = [{"video_id": "v", "slice_num": s, "caption": str(s)} for s in ["10", "9", "2", "1"]]
    assert group_clips(rows, cluster_size=10)[0].captions == ["1", "2", "9", "10"]
    rows = [{"video_id": "v", "slice_num": n, "caption": str(n)} for n in (1000, 999, 998)]
    assert group_clips(rows)[0].slice_nums == [998, 999, 1000]
    assert slice_number("v1-Scene-010") == 10 and slice_number(7) == 7 and slice_number(3.0) == 3
    with pytest.raises(ValueError):
        slice_number("Scene-x")


def test_group_clips_several_videos_duplicates_and_sizes() -> None:
    rows = _rows("b", 12) + _rows("a", 5) + [dict(_rows("a", 5)[2], cap="duplicate")]
    clusters = group_clips(rows, cluster_size=4)
    assert [(c.cluster_id, c.clip_count) for c in clusters] == [
        ("a_0", 4), ("a_1", 1), ("b_0", 4), ("b_1", 4), ("b_2", 4)]
    assert "duplicate" not in clusters[0].captions  # the first row of a repeated slice wins
    with pytest.raises(ValueError):
        group_clips(rows, cluster_size=0)


# ---- full-video integration --------------------------------------------------------------------------


def test_integrate_video_pairwise_sequential() -> None:
    llm = ScriptedLLM()  # default responder: "<first>\nAfter that, <second lower-cased>"
    r = integrate_video(["Part one.", "Part two.", "Part three."], llm)
    assert r.caption == "Part one.\nAfter that, part two.\nAfter that, part three."
    assert (r.llm_calls, r.failed_calls, r.strategy, r.status) == (2, 0, "sequential:pairwise", "ok")
    assert llm.user_prompts()[1] == render_prompt(INTEGRATE_PROMPT, first="Part one.\nAfter that, part two.",
                                                  second="Part three.")


def test_integrate_video_hierarchical_same_calls() -> None:
    r = integrate_video(["P1.", "P2.", "P3.", "P4.", "P5."], ScriptedLLM(), mode="hierarchical")
    assert r.llm_calls == 4 and r.strategy == "hierarchical:pairwise"
    assert split_paragraphs(r.caption) == ["P1.", "After that, p2.", "After that, p3.", "After that, p4.",
                                           "After that, p5."]


def test_integrate_video_bounded_by_context_uses_boundary_region() -> None:
    clusters = [PARAGRAPH_SEP.join(f"Cluster {k} paragraph {i} describes a long and detailed scene."
                                   for i in range(6)) for k in range(4)]
    llm = ScriptedLLM()
    params = merger_params(max_new_tokens=120)
    max_ctx = 900
    r = integrate_video(clusters, llm, params, max_context_tokens=max_ctx, count_tokens=approx_tokens)
    assert r.strategy == "sequential:boundary" and r.llm_calls == 3 and r.failed_calls == 0
    for call in llm.calls:  # every prompt left room for max_new_tokens within the context
        used = sum(approx_tokens(m["content"]) for m in call)
        assert used + params.max_new_tokens <= max_ctx
    out = split_paragraphs(r.caption)
    # untouched paragraphs are verbatim and in order; only the boundary regions were rewritten
    assert out[0] == "Cluster 0 paragraph 0 describes a long and detailed scene."
    assert out[-1] == "Cluster 3 paragraph 5 describes a long and detailed scene."
    assert sum(p.startswith("After that, ") for p in out) == 3
    joined = "\n".join(out)
    assert joined.index("Cluster 1 paragraph 3") < joined.index("Cluster 2 paragraph 3") < joined.index(
        "Cluster 3 paragraph 3")


def test_integrate_video_mixes_strategies_as_the_text_grows() -> None:
    clusters = [f"Short cluster {k} text." for k in range(8)]
    r = integrate_video(clusters, ScriptedLLM(), merger_params(max_new_tokens=40), max_context_tokens=10_000)
    assert r.strategy == "sequential:pairwise+boundary" and r.llm_calls == 7 and r.failed_calls == 0


def test_integrate_video_failures_and_trivial_cases() -> None:
    llm = ScriptedLLM([RuntimeError("boom"), "<html><body>oops</body></html>"], default="")
    r = integrate_video(["One.", "Two.", "Three."], llm)
    assert split_paragraphs(r.caption) == ["One.", "Two.", "Three."] and r.failed_calls == 2
    assert r.status == "failed" and "RuntimeError: boom" in r.error
    single = integrate_video(["", "Only.\n\nText."], ScriptedLLM())
    assert (single.caption, single.strategy, single.llm_calls) == ("Only.\nText.", "single", 0)
    assert integrate_video([], ScriptedLLM()).strategy == "empty"


def test_theme_summary_and_truncation() -> None:
    llm = ScriptedLLM()
    r = integrate_video(["One.", "Two."], llm, theme=True)
    assert r.theme and r.theme_error is None and r.llm_calls == 2
    long_caption = "\n".join(f"Paragraph {i} of a very long video description." for i in range(64))
    t = summarize_theme(long_caption, llm, max_context_tokens=400, count_tokens=approx_tokens, max_new_tokens=50)
    assert t.truncated and t.error is None and t.caption
    assert "Paragraph 0 of" in llm.user_prompts()[-1] and "Paragraph 1 of" not in llm.user_prompts()[-1]
    failed = summarize_theme("Some text.", ScriptedLLM([RuntimeError("down")]))
    assert failed.caption == "" and failed.status == "failed"


# ---- prompts --------------------------------------------------------------------------------------------


def test_prompts_faithful_hash_and_overrides(tmp_path) -> None:
    assert CAPTION_SYSTEM.startswith("You are a video analysis assistant") and "structured description" in CAPTION_SYSTEM
    for word in ("events, scenes, character actions, overall style", "emotional atmosphere, narrative elements",
                 "noteworthy details"):
        assert word in CAPTION_USER
    assert MERGE_SYSTEM == "You are a helpful video summarizer."
    assert "- There must be a \n between the paragraphs" in TRANSITION_PROMPT  # the original's escape
    assert "Preserve facts" in TRANSITION_PROMPT and "temporal transition words" in TRANSITION_PROMPT
    assert prompt_hash("a", "bc") != prompt_hash("ab", "c") and len(prompt_hash("x")) == 12
    assert prompt_hash(MERGE_SYSTEM, TRANSITION_PROMPT) == prompt_hash(MERGE_SYSTEM, TRANSITION_PROMPT)
    assert render_prompt("{prev} {x} {next}", prev="a{b}", next="c") == "a{b} {x} c"
    (tmp_path / "p.txt").write_text("Describe {this}.\n", encoding="utf-8")
    assert load_prompt(tmp_path / "p.txt") == "Describe {this}."
    (tmp_path / "p.json").write_text('{"system": "S"}', encoding="utf-8")
    assert load_prompt_set(tmp_path / "p.json", {"system": "a", "user": "b"}) == {"system": "S", "user": "b"}
    assert load_prompt_set(tmp_path / "p.txt", {"system": "a", "user": "b"})["user"] == "Describe {this}."
    (tmp_path / "bad.json").write_text('{"sistem": "S"}', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown prompt names"):
        load_prompt_set(tmp_path / "bad.json", {"system": "a"})
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError):
        load_prompt(tmp_path / "empty.txt")


@pytest.mark.parametrize("reply, score", [
    ("7", 7.0), ("Score: 8/10", 8.0), ("**6.5**", 6.5), ("10", 10.0), ("0", 0.0), ("I'd say 9.", 9.0),
    ("no idea", None), ("", None), (None, None), ("42", None),
])
def test_parse_score(reply: str | None, score: float | None) -> None:
    assert parse_score(reply) == score


# ---- cluster membership against a restatement of the original caption_merger.py -------------------------


def original_merger(caps: list[dict], join) -> list[dict]:
    """What ``data_generation/caption_merger.py`` (TechNomad-ds/LoVR-benchmark) computes, restated: per video,
    EVERY caption row sorted by slice_num, runs of 10, ``<vid>_<k>``; the first clip's paragraphs, then per
    next clip with paragraphs one call on (last paragraph so far, its first paragraph), the reply split at
    its first newline into the new last paragraph and the new first paragraph; clips without text cost no
    call. ``join(prev, next)`` plays the LLM."""
    out = []
    for vid in sorted({c["vid"] for c in caps}):
        rows = sorted((c for c in caps if c["vid"] == vid), key=lambda c: c["slice_num"])
        for i in range(0, len(rows), 10):
            run = rows[i:i + 10]
            merged = [p.strip() for p in run[0]["cap"].split("\n") if p.strip()]
            for clip in run[1:]:
                cur = [p.strip() for p in clip["cap"].split("\n") if p.strip()]
                if not cur:
                    continue
                prev = merged[-1] if merged else ""
                if not prev:
                    merged.extend(cur)
                    continue
                reply = join(prev, cur[0])
                head, _, tail = reply.partition("\n")
                merged[-1], cur[0] = head.strip(), tail.strip()
                merged.extend(cur)
            out.append({"vid": vid, "cluster_id": f"{vid}_{i // 10}", "start_slice_num": run[0]["slice_num"],
                        "end_slice_num": run[-1]["slice_num"], "clip_count": len(run),
                        "cap": "\n".join(merged), "merged_paragraphs": len(merged)})
    return out


def _join(prev: str, nxt: str) -> str:
    return f"{prev}\nThen, {nxt[0].lower()}{nxt[1:]}"


def _caption_rows() -> list[dict]:
    """Two videos; skipped (too short), failed and needs_review clips in the middle of runs."""
    rows = []
    for vid, n in (("vA", 23), ("vB", 12)):
        for k in range(1, n + 1):
            rows.append({"clip_id": f"{vid}-Scene-{k:03d}", "video_id": vid, "slice_num": k, "status": "ok",
                         "caption": f"In clip {k} of {vid} a dog runs across the yard.\nThe dog stops at gate {k}."})
    for vid, k, status in (("vA", 4, "skipped"), ("vA", 11, "failed"), ("vA", 12, "error"), ("vB", 1, "skipped"),
                           ("vB", 7, "needs_review")):
        r = next(r for r in rows if r["video_id"] == vid and r["slice_num"] == k)
        r["status"] = status
        if status != "needs_review":
            r["caption"] = ""  # what the caption stage writes for a clip it could not caption
    return rows


def test_cluster_membership_equals_the_original_with_skipped_clips() -> None:
    from lovr_hf.merge.inputs import cluster_inputs

    rows = _caption_rows()
    want = original_merger([{"vid": r["video_id"], "slice_num": r["slice_num"], "cap": r["caption"]} for r in rows],
                           _join)
    got = cluster_inputs(rows, 10)
    assert got["cluster_id"] == [w["cluster_id"] for w in want] == ["vA_0", "vA_1", "vA_2", "vB_0", "vB_1"]
    assert [(s[0], s[-1], len(s)) for s in got["slice_nums"]] == \
        [(w["start_slice_num"], w["end_slice_num"], w["clip_count"]) for w in want]
    # the text: identical to the original's on the same captions (unusable clips add no text, as there)
    for item, w in zip(got, want):
        assert smooth_group(item["captions"], ScriptedLLM(default=lambda m: _join(*_user_pair(m)))).caption == w["cap"]
    assert "clip 7 of vB" in want[3]["cap"]  # needs_review text is merged (flagged by its status)


def _user_pair(messages: list[dict]) -> tuple[str, str]:
    user = messages[-1]["content"]
    prev = user.split("[Last paragraph of previous caption]:\n", 1)[1].split("\n\n[First paragraph", 1)[0]
    nxt = user.split("[First paragraph of next paragraph]:\n", 1)[1].split("\n\n# Requirements", 1)[0]
    return prev, nxt


def test_cluster_membership_in_jsonl_mode_equals_the_original(tmp_path) -> None:
    import json

    from lovr_hf.merge.config import MergeConfig
    from lovr_hf.merge.jsonl import merge_jsonl

    rows = _caption_rows()
    caps = [{"vid": r["video_id"], "slice_num": r["slice_num"], "cap": r["caption"], "status": r["status"]}
            for r in rows]
    (tmp_path / "caps.jsonl").write_text("".join(json.dumps(c) + "\n" for c in reversed(caps)))
    merge_jsonl(str(tmp_path / "caps.jsonl"), str(tmp_path / "out.jsonl"),
                MergeConfig(llm="lovr_hf.backends.standins.chat_llms:PromptLLM", num_workers=1))
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    want = original_merger(caps, _join)
    keys = ("vid", "cluster_id", "start_slice_num", "end_slice_num", "clip_count", "cap", "merged_paragraphs")
    assert [{k: g[k] for k in keys} for g in got] == want
    assert got[1]["left_out"] == ["vA-Scene-011", "vA-Scene-012"]  # recorded, still in their run
