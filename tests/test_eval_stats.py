"""Scores people can re-derive, on a real eval (dummy embedder, generated video): rankings reproduce every
pass@k, slices add up, ``--verify`` passes and then fails on one altered embedding value, ``--compare A B``,
protocols side by side, availability and needs_review accounting, the release query set, the oracle flag,
truncation rates, provenance and the "how to reproduce" commands."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_embed import LONG, make_repo

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.evaluation import provenance, scoring
from lovr_hf.evaluation.release_marker import MARKER, MARKER_SCHEMA
from lovr_hf.evaluation.results import read_results, write_results
from lovr_hf.evaluation.run import evaluate_model
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.evaluation.verify import verify
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.card import write_card
from lovr_hf.report.compare import paired
from lovr_hf.report.results_page import RESULTS_MD, render_results
from lovr_hf.stats.directions import DIRECTIONS
from lovr_hf.stats.rankings import write_rankings

N_CLIPS = 5
BASE = {"model": "dummy", "interval": 30, "topk": "1,2,3,5", "clip_queries": "all", "bootstrap": 200}


@pytest.fixture(scope="module")
def embedded(eval_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo with the dummy model's embeddings (and its scores): copied by each test that changes it."""
    root = tmp_path_factory.mktemp("eval_stats") / "lovr"
    repo = make_repo(root, eval_source, long_caption=True, themes=True)
    evaluate_model(repo, EvalConfig(**BASE, backend_options={"max_text_tokens": 20}))
    render_results(repo)  # what `lovr eval` renders once per command
    return root


def copy_of(embedded: Path, tmp_path: Path) -> BenchmarkRepo:
    dst = tmp_path / "lovr"
    shutil.copytree(embedded, dst)
    return BenchmarkRepo(dst)


def score(repo: BenchmarkRepo, render: bool = False, **kw) -> list[dict]:
    """``lovr eval --calc_pass``; without ``render`` the same writes minus the card and plots (seconds each)."""
    cfg = EvalConfig(**{**BASE, "backend_options": {"max_text_tokens": 20}, **kw})
    if render:
        rows = evaluate_model(repo, cfg, steps=["calc_pass"])
        render_results(repo)  # what `lovr eval` renders once per command
        return rows
    scored = scoring.score(repo, cfg)
    write_rankings(repo, cfg.slug(), cfg.protocol, scored.rankings)
    write_results(repo, cfg.label(), scored.rows, cfg.protocol)
    return scored.rows


def rows_of(repo: BenchmarkRepo, model: str = "dummy", protocol: str = "lovr") -> dict[tuple, dict]:
    return {(r["slice"], r["direction"], r["metric"], r["k"]): r for r in read_results(repo)
            if r["model"] == model and r["protocol"] == protocol}


def test_rankings_reproduce_every_pass_at_k_and_slices_add_up(embedded: Path) -> None:
    repo = BenchmarkRepo(embedded)
    res = rows_of(repo)
    ranks = repo.read(schema.rankings_config("dummy")).to_list()
    assert {r["direction"] for r in ranks} == set(DIRECTIONS)
    checked = 0
    for (sl, d, metric, k), r in res.items():
        if sl != "all" or d not in DIRECTIONS:
            continue
        g = np.array([x["gold_rank"] for x in ranks if x["direction"] == d])
        want = {"pass@k": np.mean(g <= k) if k else None, "median_rank": np.median(g), "mean_rank": np.mean(g)}
        assert r["value"] == want[metric] and r["num_queries"] == g.size, (d, metric, k)
        assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["bootstrap_resamples"] == 200
        checked += 1
    # pass@k exists for every k of --topk 1,2,3,5 up to the direction's candidates (rankings.defined_ks), plus
    # MdR and MnR
    cands = {d: r["num_candidates"] for (sl, d, _, _), r in res.items() if sl == "all" and d in DIRECTIONS}
    assert len(cands) == 6 and checked == sum(sum(k <= n for k in (1, 2, 3, 5)) + 2 for n in cands.values())
    assert min(cands.values()) < 5  # (so the rule is exercised: a direction with fewer candidates than k)
    for x in ranks:  # the gold sits at its rank in the top list (ids are unique here)
        if x["gold_rank"] <= len(x["top_ids"]) and len(x["gold_ids"]) == 1 and x["direction"] in DIRECTIONS[:4]:
            assert x["top_ids"][x["gold_rank"] - 1] == x["gold_ids"][0]
            assert x["top_scores"][x["gold_rank"] - 1] == pytest.approx(x["gold_score"])
    # slices of one kind partition the queries: weighted by query counts they add up to the overall value
    sliced = 0
    for d in ("text_to_clip", "clip_to_text", "text_to_video", "video_to_text"):
        for prefix in ("duration:", "caption_words:", "video:"):
            for metric, k in [("pass@k", k) for k in (1, 2, 3, 5)] + [("mean_rank", 0)]:
                parts = [r for (sl, dd, m, kk), r in res.items() if sl.startswith(prefix) and dd == d
                         and m == metric and kk == k]
                if not parts:
                    continue
                total = res[("all", d, metric, k)]
                assert sum(p["num_queries"] for p in parts) == total["num_queries"]
                weighted = sum(p["num_queries"] * p["value"] for p in parts) / total["num_queries"]
                assert weighted == pytest.approx(total["value"], abs=1e-12), (d, prefix, metric, k)
                sliced += 1
    # clip directions: 3 kinds of slices, video directions 2; each with the defined pass@k and mean rank
    assert sliced == sum((3 if "clip" in d else 2) * (sum(k <= cands[d] for k in (1, 2, 3, 5)) + 1)
                         for d in ("text_to_clip", "clip_to_text", "text_to_video", "video_to_text"))
    assert res[("duration:0-5s", "text_to_clip", "pass@k", 1)]["num_queries"] == 2  # clips of 4.5 and 2.0 s
    assert res[("video:a", "text_to_clip", "pass@k", 1)]["num_queries"] == 3


def test_verify_passes_then_fails_after_one_embedding_value_changes(embedded: Path, tmp_path: Path, capsys) -> None:
    repo = copy_of(embedded, tmp_path)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    cfg = schema.embeddings_config("dummy")
    files = repo.config_files()[cfg]
    assert len(files) == 1
    path = repo.root / files[0]
    original = path.read_bytes()
    t = pq.read_table(path)
    rows = t.to_pylist()
    i = next(j for j, r in enumerate(rows) if r["kind"] == "clip" and r["item_id"] == "b-Scene-002")
    rows[i]["embedding"][5] += 0.25  # one value of one clip embedding, edited in place (same file name)
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), path)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--verify"]) == 1
    out = capsys.readouterr().out  # edited in place: the shard no longer matches its name and recorded hash
    assert "verify: FAILED" in out and files[0] in out and "SHA-256" in out
    # the same edit written as a consistent shard (new name, hash recorded, as a forger with write access
    # would): the recomputation from the stored evidence still catches it
    path.write_bytes(original)
    repo.write(cfg, rows)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "verify: FAILED" in out and "embeddings_fingerprint" in out
    assert "rankings" in out  # the clip's scores moved too
    # back to the stored rows: OK again; then an edited results value fails on both recomputations
    repo.write(cfg, t.to_pylist())
    assert verify(repo).ok
    res = repo.read_table(schema.RESULTS).to_pylist()
    j = next(j for j, r in enumerate(res) if r["slice"] == "all" and r["direction"] == "text_to_video"
             and r["metric"] == "pass@k" and r["k"] == 1)
    res[j]["value"] += 0.5
    repo.write(schema.RESULTS, res)
    report = verify(repo)
    assert not report.ok
    assert any("results-from-rankings" in d and "text_to_video" in d for d in report.differences)
    assert any(d.startswith("dummy [lovr] results ('all', 'text_to_video'") for d in report.differences)


def test_compare_two_models_paired_and_side_by_side(embedded: Path, tmp_path: Path, capsys) -> None:
    repo = copy_of(embedded, tmp_path)
    # a second model: the same embedder with colour given less weight (another score on the same queries)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "dummy", "--model-name", "dummy-lowcolour",
                     "--backend-option", "colour_weight=0.5", "--interval", "30", "--topk", "1,2,3,5",
                     "--clip-queries", "all", "--bootstrap", "200"]) == 0
    capsys.readouterr()
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--compare", "dummy", "dummy-lowcolour"]) == 0
    out = capsys.readouterr().out
    assert "### text → clip" in out and "| dummy-lowcolour | lovr |" in out  # the side-by-side tables
    assert "## Paired comparison: A = dummy, B = dummy-lowcolour" in out and "McNemar p" in out
    rows = paired(repo, "dummy", "dummy-lowcolour")
    a, b = rows_of(repo, "dummy"), rows_of(repo, "dummy-lowcolour")
    for r in rows:
        key = ("all", r["direction"], r["metric"], r["k"])
        assert r["value_a"] == a[key]["value"] and r["value_b"] == b[key]["value"]
        assert r["diff"] == pytest.approx(a[key]["value"] - b[key]["value"])
        assert r["ci_low"] <= r["diff"] <= r["ci_high"]
    t2c = {(r["metric"], r["k"]): r for r in rows if r["direction"] == "text_to_clip"}
    assert t2c[("pass@k", 1)]["a_only"] + t2c[("pass@k", 1)]["b_only"] <= N_CLIPS
    # the same model under a second label pairs to exactly zero
    evaluate_model(repo, EvalConfig(**BASE, model_name="copy", backend_options={"max_text_tokens": 20}),
                   steps=["encode_text", "encode_video", "calc_pass"])
    assert all(r["diff"] == 0 and not r["significant"] for r in paired(repo, "dummy", "copy"))
    # one model or three: side by side only
    capsys.readouterr()
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--compare", "dummy", "copy", "dummy-lowcolour"]) == 0
    assert "Paired comparison" not in capsys.readouterr().out
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--compare", "dummy", "nope"]) == 2


def test_protocols_side_by_side_and_availability(embedded: Path, tmp_path: Path) -> None:
    repo = copy_of(embedded, tmp_path)
    # each protocol embeds on its own (its own table); the original's first
    evaluate_model(repo, EvalConfig(**BASE, protocol="original", backend_options={"max_text_tokens": 20}))
    # one clip could not be embedded (e.g. its source video is missing from an index-only repo)
    for cfg in (schema.embeddings_config("dummy"), schema.embeddings_config("dummy--original")):
        emb = repo.read_table(cfg).to_pylist()
        for r in emb:
            if r["kind"] == "clip" and r["item_id"] == "a-Scene-002":
                r.update(embedding=None, status=schema.ERROR, error="cannot decode")
        repo.write(cfg, emb)
    score(repo, protocol="original")
    score(repo)
    lovr, orig = rows_of(repo, protocol="lovr"), rows_of(repo, protocol="original")
    t2c_l, t2c_o = lovr[("all", "text_to_clip", "pass@k", 1)], orig[("all", "text_to_clip", "pass@k", 1)]
    assert (t2c_l["num_queries"], t2c_l["num_queries_total"], t2c_l["num_unavailable"]) == (4, 5, 1)
    assert json.loads(t2c_l["left_out"]) == {"no gold visual embedding": 1}
    assert (t2c_l["num_candidates"], t2c_l["num_candidates_total"]) == (4, 5)
    assert json.loads(lovr[("all", "clip_to_text", "mean_rank", 0)]["left_out"]) == {"no visual embedding": 1}
    # original: the query stays in as a miss, ranked after every candidate
    assert (t2c_o["num_queries"], t2c_o["num_queries_total"], t2c_o["num_unavailable"]) == (5, 5, 1)
    orig_ranks = [r for r in repo.read(schema.rankings_config("dummy--original")).to_list() if r["protocol"] == "original"
                  and r["direction"] == "text_to_clip"]
    missed = next(r for r in orig_ranks if r["query_id"] == "a-Scene-002")
    assert missed["gold_rank"] == 5 and missed["top_ids"] and missed["gold_score"] is None
    assert t2c_o["value"] == pytest.approx(t2c_l["value"] * 4 / 5)
    # re-scoring one protocol replaces only its rows
    before = rows_of(repo, protocol="original")
    score(repo, topk="1,2")
    assert rows_of(repo, protocol="original") == before
    assert {k for (_, _, m, k) in rows_of(repo, protocol="lovr") if m == "pass@k"} == {1, 2}
    md = render_results(repo)
    assert "| dummy | lovr |" in md and "| dummy | original |" in md and "| 4 / 5 |" in md
    assert "### Queries scored and left out" in md and "no gold visual embedding: 1" in md
    assert verify(repo).ok


def test_needs_review_flagged_by_default_and_excluded_on_request(embedded: Path, tmp_path: Path) -> None:
    repo = copy_of(embedded, tmp_path)
    caps = repo.read_table(schema.CLIP_CAPTIONS).to_pylist()
    for c in caps:
        if c["clip_id"] == "b-Scene-001":
            c["status"] = schema.NEEDS_REVIEW
    repo.write(schema.CLIP_CAPTIONS, caps)
    score(repo)
    r = rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]
    assert (r["num_queries"], r["num_needs_review"], r["needs_review_excluded"]) == (5, 1, False)
    flagged = [x for x in repo.read(schema.rankings_config("dummy")).to_list() if x["needs_review"]]
    assert {x["query_id"] for x in flagged} == {"b-Scene-001"} and len(flagged) == 2  # text->clip, clip->text
    score(repo, exclude_needs_review=True)
    r = rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]
    assert (r["num_queries"], r["num_queries_total"], r["num_needs_review"]) == (4, 4, 0)
    assert json.loads(r["left_out"]) == {"caption needs_review": 1} and r["needs_review_excluded"]
    assert verify(repo).ok


def test_release_marker_selects_the_released_queries(embedded: Path, tmp_path: Path) -> None:
    repo = copy_of(embedded, tmp_path)
    score(repo, clip_queries="auto")  # no marker: 1000 drawn, i.e. all 5 here
    assert rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]["query_set"] == "1000"
    # the marker lovr import-release writes (lovr_hf.hub.release): its query_set ids are the released queries
    marker = {"schema": MARKER_SCHEMA, "query_set": {"ids": ["a-Scene-001", "b-Scene-002"], "count": 2}}
    (repo.root / MARKER).write_text(json.dumps(marker))
    score(repo, clip_queries="auto")
    r = rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]
    assert (r["query_set"], r["num_queries"]) == ("release", 2)
    assert verify(repo).ok


def test_oracle_flag_and_truncation_rate(embedded: Path, tmp_path: Path) -> None:
    repo = copy_of(embedded, tmp_path)
    res = rows_of(repo)
    # the dummy counts words against max_text_tokens=20: only video a's LONG caption is over the limit
    long_words = len(LONG.lower().replace(".", " ").split())
    short_words = len("video b shows green things".split())
    trunc = res[("all", "video_caption", "truncation_rate", 0)]
    assert trunc["text_limit"] == 20 and trunc["num_queries"] == 2
    assert trunc["value"] == pytest.approx((long_words - 20) / (long_words + short_words))
    assert res[("all", "video_caption", "truncated_captions", 0)]["value"] == 0.5
    assert res[("all", "clip_caption", "truncation_rate", 0)]["value"] == 0.0
    assert not res[("all", "text_to_clip", "pass@k", 1)]["oracle"]
    # an embedding side that chose frames with an oracle marks its visual rows (frame_rule "oracle:...")
    cfg = schema.embeddings_config("dummy")
    emb = repo.read_table(cfg).to_pylist()
    for r in emb:
        if r["kind"] in ("clip", "video"):
            r["frame_rule"] = "oracle:gold-caption"
    repo.write(cfg, emb)
    score(repo, render=True)
    assert rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]["oracle"]
    md = (repo.root / RESULTS_MD).read_text()
    assert "| dummy ⚠ oracle | lovr |" in md and "oracle frame choice" in md
    assert "tokens past the limit" in md and (repo.root / "assets/retrieval_slices.png").read_bytes()[:4] == b"\x89PNG"


def test_reproduce_command_recomputes_the_same_rows(embedded: Path, tmp_path: Path) -> None:
    repo = copy_of(embedded, tmp_path)
    md = (repo.root / RESULTS_MD).read_text()
    block = md[md.index("### How to reproduce this table"):]
    cmd = next(line for line in block.splitlines() if line.startswith("lovr eval") and "--model dummy" in line)
    before = rows_of(repo)
    repo.remove(schema.RESULTS)
    args = shlex.split(cmd)[2:]  # drop "lovr eval"
    args[args.index("--repo") + 1] = str(repo.root)
    assert cli_main(["-q", "eval", *args, "--calc_pass"]) == 0
    assert rows_of(repo) == before
    assert "lovr eval --repo lovr --verify" in block and "Dataset fingerprint" in block


def test_provenance(embedded: Path, tmp_path: Path, tiny: dict[str, str]) -> None:
    repo = copy_of(embedded, tmp_path)
    r = rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]
    assert r["model_revision"].startswith("builtin:lovr_hf-") and r["dataset_fingerprint"] == \
        provenance.dataset_fingerprint(repo)
    assert r["torch_version"] and r["transformers_version"] and r["numpy_version"] == np.__version__
    assert json.loads(r["embed_settings"])["backend_options"] == {"max_text_tokens": 20}
    # edited captions change the dataset fingerprint, and verify says so
    caps = repo.read_table(schema.CLIP_CAPTIONS).to_pylist()
    caps[0]["caption"] += " and a dog"
    repo.write(schema.CLIP_CAPTIONS, caps)
    assert provenance.dataset_fingerprint(repo) != r["dataset_fingerprint"]
    assert any("dataset_fingerprint" in d for d in verify(repo).differences)
    # ... and the card says the stored scores are out of date until the model is scored again
    write_card(repo)
    assert "Out of date:** dummy (lovr)" in repo.card_path.read_text()
    from lovr_hf.report.info import repo_status

    assert repo_status(repo)["results_out_of_date"] == ["dummy (lovr)"]
    with pytest.raises(ValueError, match="stored embeddings do not match the current data"):
        score(repo, render=True)  # --calc_pass alone: the embeddings of the old caption are refused
    evaluate_model(repo, EvalConfig(**BASE, backend_options={"max_text_tokens": 20}))  # re-embeds, then scores
    render_results(repo)  # what `lovr eval` renders once per command
    write_card(repo)
    assert "Out of date" not in repo.card_path.read_text() and verify(repo).ok
    assert repo_status(repo)["results_out_of_date"] == []
    # a local model folder: a hash of its files, changed by any file
    folder = tmp_path / "model"
    shutil.copytree(tiny["clip"], folder)
    rev = provenance.model_revision(str(folder), "transformers", repo=repo)
    assert rev.startswith("sha256:") and rev == provenance.model_revision(str(folder), "transformers", repo=repo)
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert provenance.model_revision(str(folder), "transformers", repo=repo) != rev
    # a Hub id: the commit its ref points to in the local cache; unknown -> said so, never guessed
    cache = tmp_path / "hub"
    ref = cache / "models--org--clip" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123456789abcdef0123456789abcdef01234567")
    assert provenance.model_revision("org/clip", "transformers", cache_dir=cache) == ref.read_text()
    assert provenance.model_revision("org/other", "transformers", cache_dir=cache) == "unresolved:main"
    assert provenance.model_revision("org/clip", "transformers", "v2", cache_dir=cache) == "unresolved:v2"
    assert provenance.model_revision("json:JSONDecoder", "json:JSONDecoder").startswith("module:")


def test_results_of_an_older_lovr_hf_still_render(embedded: Path, tmp_path: Path) -> None:
    repo = copy_of(embedded, tmp_path)
    score(repo, topk="1,2")  # (shard names are content hashes: the re-scored rows below get a new one)
    path = repo.root / repo.config_files()[schema.RESULTS][0]
    old_cols = ["model", "protocol", "slice", "direction", "metric", "k", "value", "num_queries", "num_candidates",
                "text_mode", "interval", "uniform_frames", "query_seed", "lovr_hf_version"]
    t = pq.read_table(path, columns=old_cols)
    t = t.filter(pa.compute.equal(t["slice"], "all"))
    repo.write(schema.RESULTS, t.to_pylist())  # the 14 columns results had before intervals (the rest null)
    md = render_results(repo)
    assert "### text → clip" in md and "| dummy | lovr |" in md
    score(repo)  # re-scoring replaces the old rows with full ones
    got = rows_of(repo)[("all", "text_to_clip", "pass@k", 1)]
    assert got["ci_low"] is not None, got
