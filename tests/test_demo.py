"""`lovr demo` (the README's first command): offline, it reads like a small benchmark; `--hub` runs the same
pipeline with the small real models' code paths (tested here with local folders in their place)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.cli import demo
from lovr_hf.demo.run import DESCRIBER, run_demo
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo

pytestmark = pytest.mark.slow

#: common English function words: real English prose is made of them (token soup and byte noise are not)
FUNCTION_WORDS = {"the", "a", "an", "and", "of", "in", "on", "to", "is", "it", "its", "with", "from", "at", "by",
                  "as", "then", "while", "that", "this", "which", "end", "most", "nothing", "after"}


def english_share(text: str) -> float:
    words = re.findall(r"[A-Za-z']+", text.lower())
    return sum(w in FUNCTION_WORDS for w in words) / max(1, len(words))


def test_offline_demo_reads_like_a_small_benchmark(tmp_path: Path, capsys, monkeypatch, caplog) -> None:
    from lovr_hf.demo.samples import make_sample_folder

    monkeypatch.chdir(tmp_path)  # as a newcomer runs it: a relative output folder below the working directory
    out = tmp_path / "demo"  # shorter sample videos than the demo's own (it generates them only when absent)
    make_sample_folder(out / "videos", durations_s=(21.0, 16.0), width=320, height=180, fps=24)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)  # the command's own parser and main (the CLI's logging set-up would drop caplog)
    with caplog.at_level(logging.INFO):
        assert demo.main(parser.parse_args(["--output_dir", "demo"])) == 0
    printed = capsys.readouterr().out
    repo = BenchmarkRepo(out / "lovr")
    # clip captions describe their clips, and differ from clip to clip
    caps = repo.read(schema.CLIP_CAPTIONS).to_list()
    assert len(caps) >= 4 and all(c["status"] == schema.OK for c in caps)
    assert len({c["caption"] for c in caps}) == len(caps)
    # the merged video captions are English (the function-word check), never prompt text
    videos = repo.read(schema.VIDEO_CAPTIONS).to_list()
    assert videos and all(english_share(v["caption"]) > 0.25 for v in videos), [v["caption"][:200] for v in videos]
    assert not any(re.search(r"\[(original content|last paragraph)|# requirements", v["caption"], re.I)
                   for v in videos)
    # every merge call is accounted for in the printed summary: how many kept the original text, why
    calls = sum(r["llm_calls"] for r in repo.read(schema.CLUSTERS)) + sum(v["llm_calls"] for v in videos)
    # a merge a reader can see: every join of a cluster connects its two paragraphs (by the LLM where the reply
    # guard keeps its reply, else by the labelled stand-in joiner), and ONE line says who wrote how many (before:
    # "merge LLM calls: N, of which 0 kept the original text", then a separate line on the stand-in)
    joins = sum(r["llm_calls"] for r in repo.read(schema.CLUSTERS))
    lines = [line for line in printed.splitlines() if line.startswith("merge")]
    assert len(lines) == 1, lines
    written = re.fullmatch(rf"merge texts: {calls} \({joins} joins \+ {calls - joins} integrations\): (\d+) by the "
                           r"LLM, (\d+) by the labelled stand-in joiner, (\d+) kept the original text; (\d+) LLM "
                           r"replies rejected \((\d+) failed calls\)", lines[0])
    assert written, lines[0]
    by_llm, stand, kept, rejected, failed = map(int, written.groups())
    assert by_llm + stand + kept == calls and kept == failed == 0  # the stand-in passes the stage's own guard
    assert rejected == stand  # each stand-in text replaced a rejected LLM reply
    assert "merge LLM calls" not in caplog.text and "merge texts: " in caplog.text  # the run summary: the same line
    for cl in repo.read(schema.CLUSTERS).to_list():  # each join added its connective between the paragraphs
        assert cl["caption"].count("Then, ") >= (cl["llm_calls"] if int(written[1]) == 0 else 1), cl["caption"]
    # one progress line per LLM call with its time; no call ran to a 1024-token limit
    llm_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LLM ")]
    assert len(llm_lines) == calls + len(videos) and all(re.search(r"in \d+\.\ds on \d+ thread", m) for m in llm_lines)
    assert all(int(re.search(r"\(limit (\d+)", m)[1]) <= 96 for m in llm_lines)
    assert "demo finished in" in printed
    # retrieval above chance with the describer; the random CLIP is there and labelled as random
    res = {(r["model"], r["direction"], r["k"]): r for r in repo.read(schema.RESULTS)
           if r["metric"] == "pass@k" and r["slice"] == "all"}
    t2c = res[(DESCRIBER, "text_to_clip", 1)]
    assert t2c["value"] > 2.0 / t2c["num_candidates"]
    assert t2c["model_revision"].startswith("builtin:lovr_hf-")  # the stand-in is lovr_hf's own code
    card = repo.card_path.read_text()
    assert "Demo data" in card and "offline stand-in" in card and "RANDOM weights" in card and "SmolLM2" in card
    assert "stand-in joiner" in card
    # the card's reproduce commands point at the repo where it is (issue #24: they said --repo lovr)
    assert "lovr eval --repo demo/lovr --verify" in card and "--repo lovr " not in card
    assert "offline stand-in" in printed and "RANDOM weights" in printed
    assert f"eval: `{model_label(str(out / 'models' / 'tiny-clip'))}` — tiny CLIP" in card  # the results' name
    # issue #24: a local model folder is named by its label in the output and the logs, never by its path
    tiny = str((out / "models" / "tiny-clip").resolve())
    assert model_label(tiny) in printed and tiny not in printed
    named_by_path = [r.getMessage() for r in caplog.records if tiny in r.getMessage()
                     and not r.getMessage().startswith("built tiny ")]  # where the folder was built is a path
    assert not named_by_path, named_by_path


def test_hub_demo_path_with_local_folders_in_place_of_the_hub_models(tmp_path: Path) -> None:
    from lovr_hf.tiny import build_tiny_clip, build_tiny_smolvlm2

    models = tmp_path.parent / "tiny_models"
    vlm = build_tiny_smolvlm2(models / "smolvlm2")
    clip = build_tiny_clip(models / "clip")
    summary = run_demo(tmp_path / "demo", hub=True, caption_model=vlm, merge_model="smollm2", eval_model=clip,
                       durations_s=(12.0,))
    repo = BenchmarkRepo(summary["repo"])
    run = repo.run_config()
    assert run["demo"]["mode"] == "hub"
    assert run["caption"]["backend"] == "transformers" and run["caption"]["model_path"] == vlm
    caps = repo.read(schema.CLIP_CAPTIONS).to_list()
    assert caps and all(c["model"] == vlm and c["status"] == schema.OK for c in caps)
    assert {r["model"] for r in repo.read(schema.RESULTS)} == {model_label(clip)}  # a folder: its label
    card = repo.card_path.read_text()
    assert "--hub" in card and "local folder" in card and "SmolVLM2-256M-Video-Instruct" in card


def test_guarded_merger_keeps_a_good_reply_and_labels_the_stand_in_text() -> None:
    """The demo's merger: the LLM's reply where the merge stage's own guard keeps it, else the stand-in's."""
    from lovr_hf.backends.standins import demo_merge
    from lovr_hf.merge.text import merger_params, smooth_group, transition_messages

    prev = "From beginning to end the scene keeps its purple look."
    nxt = "A dim textured scene in which magenta, black and green cover most of the frame."
    merger = demo_merge.GuardedMerger.__new__(demo_merge.GuardedMerger)
    merger.stand_in = demo_merge.StandInJoiner()
    demo_merge.reset_tally()
    merger.llm = demo_merge._Canned("The original content is as follows")  # SmolLM2's usual echo
    res = smooth_group([prev, nxt], merger, merger_params())
    assert res.failed_calls == 0 and res.caption == f"{prev}\nThen, a dim textured scene in which magenta, black " \
                                                     "and green cover most of the frame."
    good = f"{prev}\nThen, the scene turns dim: magenta, black and green cover most of the frame."
    merger.llm = demo_merge._Canned(good)
    assert merger.chat(transition_messages(prev, nxt), merger_params()) == good
    assert demo_merge.TALLY[("join", "stand-in")] == 1 and demo_merge.TALLY[("join", "llm")] == 1
    assert "joins: 1 by the LLM, 1 by the stand-in joiner" in demo_merge.tally_note()
    theme = demo_merge.StandInJoiner().theme(f"{nxt}\n{prev}")
    assert demo_merge.guard_problem("theme", {"caption": f"{nxt}\n{prev}"}, theme) is None
