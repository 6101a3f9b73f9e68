"""``lovr report``: a static HTML page per model with the results, the plots and a gallery of hits and
misses whose thumbnails are decoded from the clip files; opened in headless Chromium when available."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_embed import make_repo

from lovr_hf.cli import report as report_cli
from lovr_hf.evaluation.run import evaluate_model
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report import html as report
from lovr_hf.report.card import write_card
from lovr_hf.report.results_page import render_results
from lovr_hf.stats.rankings import read_rankings
from lovr_hf.video.reader import evenly_spaced, read_clip_frames

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(eval_source: Path, tmp_path_factory: pytest.TempPathFactory) -> BenchmarkRepo:
    repo = make_repo(tmp_path_factory.mktemp("report") / "lovr", eval_source, themes=True)
    evaluate_model(repo, EvalConfig(model="dummy", interval=30, topk="1,2,3,5", clip_queries="all", bootstrap=100))
    render_results(repo)  # what `lovr eval` renders once per command (the plots the page shows)
    return repo


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    return report_cli.main(parser.parse_args(argv))


def test_report_page_has_results_plots_and_a_gallery_of_decoded_clips(scored: BenchmarkRepo, tmp_path: Path) -> None:
    out = tmp_path / "site"
    assert _run(["--repo", str(scored.root), "--out", str(out), "--samples", "4"]) == 0
    page = out / "dummy.html"
    text = page.read_text()
    assert "pass@1 (%)" in text and re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", text)  # values with intervals
    assert 'src="assets/pass_at_k.png"' in text or "assets/" in text
    rankings = {r["query_id"]: r for r in read_rankings(scored, "dummy", "lovr") if r["direction"] == "text_to_clip"}
    shown = re.findall(r'<div class="q (hit|miss)"><b>\w+</b>: gold rank (\d+) \(query ([^)]+)\)', text)
    assert 1 <= len([s for s in shown if s[2] in rankings]) <= 4
    for kind, rank, qid in shown:  # hit/miss and the rank come from the stored rankings
        if qid in rankings:
            assert int(rank) == rankings[qid]["gold_rank"] and (kind == "hit") == (rankings[qid]["gold_rank"] == 1)
    assert "★ gold" in text
    # every image referenced exists; the gold strip is the clip's own frames, decoded through the reader
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs and all((out / s).is_file() for s in srcs)
    clips = {c["clip_id"]: c for c in scored.read("clips").to_list()}
    qid = next(q for _, _, q in shown if q in clips)
    strip = np.asarray(Image.open(out / f"thumbs/clip-{qid}-s.png").convert("RGB"))
    row = clips[qid]
    expected = read_clip_frames(row, evenly_spaced(row["num_frames"], report.STRIP_FRAMES), root=scored.root,
                                size=report.THUMB)
    assert strip.shape == (report.THUMB[1], report.THUMB[0] * report.STRIP_FRAMES, 3)
    assert np.array_equal(strip, np.concatenate(list(expected), axis=1))
    # a user error is one line and exit 2
    assert _run(["--repo", str(scored.root), "--out", str(out), "--model", "nope"]) == 2


def test_report_through_the_cli(scored: BenchmarkRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    from lovr_hf.cli import app as cli

    monkeypatch.setitem(cli.COMMANDS, "report", ("lovr_hf.cli.report", "static HTML report per model"))
    assert cli.main(["-q", "report", "--repo", str(scored.root), "--out", str(tmp_path / "site")]) == 0
    assert capsys.readouterr().out.strip().endswith("dummy.html")
    empty = BenchmarkRepo(tmp_path / "empty")
    write_card(empty)
    assert cli.main(["-q", "report", "--repo", str(empty.root), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no results" in err[0] and "Traceback" not in err[0]


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(scored: BenchmarkRepo, tmp_path: Path) -> None:
    out = tmp_path / "site"
    (page,) = report.write_report(scored, out, samples=4)
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "shot.png"
    run = subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, tables and thumbnails, not a blank page
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "Failed to load" in ln]
    assert not console, console
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images-broken="0"' in dom, dom[:500]
    assert dom.count("<img") >= 5
