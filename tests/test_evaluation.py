"""``lovr eval`` end to end: tiny CLIP and SigLIP through every direction, results config / table / plot in the
card, original stage flags with chunks then --video_merge, plug-in embedders, remote-code refusal, and
accelerate with 2 CPU processes equal to 1. (Metric maths itself: tests/test_retrieval.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_embed import LAYOUT, make_repo

from lovr_hf import __version__, schema
from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.standins.testing import DummyEmbedder
from lovr_hf.cli.app import main as cli_main
from lovr_hf.evaluation.models import EmbedConfig, make_embedder, model_slug, resolve_backend
from lovr_hf.evaluation.results import COST_JSON, cost_key
from lovr_hf.evaluation.run import evaluate_model, evaluate_models
from lovr_hf.evaluation.scoring import EvalConfig
from lovr_hf.model_labels import model_label
from lovr_hf.report.card import write_card
from lovr_hf.report.plots import PLOT
from lovr_hf.report.results_page import RESULTS_MD, render_results
from lovr_hf.stats.directions import DIRECTIONS
from lovr_hf.video.reader import read_clip_frames

N_CLIPS = sum(len(c) for c in LAYOUT.values())


def tiny_config(model: str, **kw) -> EvalConfig:
    return EvalConfig(**{"model": model, "topk": "1,5,10", "clip_queries": "all", "device": "cpu",
                         "dtype": "float32", "batch_size": 16, **kw})


def results_of(repo, model: str) -> dict[tuple[str, str, int], dict]:
    """The model's whole-direction rows (slice "all"; the text-limit rows are keyed by caption kind)."""
    return {(r["direction"], r["metric"], r["k"]): r for r in repo.read(schema.RESULTS)
            if r["model"] == model_label(model) and r["slice"] == "all"}  # a folder: its label, never its path


def test_tiny_clip_then_siglip_results_table_plot_card(eval_source: Path, tmp_path: Path, tiny: dict[str, str],
                                                       capsys) -> None:
    repo = make_repo(tmp_path / "lovr", eval_source, themes=True)
    clip, siglip = tiny["clip"], tiny["siglip"]
    rows = evaluate_model(repo, tiny_config(clip))
    clip_rows = results_of(repo, clip)
    got = {key: r for key, r in clip_rows.items() if key[0] in DIRECTIONS}
    main = [r for r in rows if r["slice"] == "all" and r["direction"] in DIRECTIONS]
    assert {r["direction"] for r in main} == set(DIRECTIONS)  # video-level themes -> theme directions too
    for d in DIRECTIONS:  # pass@k for the k of --topk that the direction's candidates allow (k <= candidates)
        n = got[(d, "median_rank", 0)]["num_candidates"]
        assert {k for (dd, m, k) in got if dd == d and m == "pass@k"} == {k for k in (1, 5, 10) if k <= n}
        assert (d, "mean_rank", 0) in got
    assert len(got) == len(main) and any(r["k"] == 5 for r in main)
    assert len(repo.read(schema.RESULTS)) == len(rows)  # + slices and text-limit rows
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in main)  # every metric has its interval
    # the tiny CLIP's tokenizer counts caption tokens: the long-caption share is on the rows
    trunc = results_of(repo, clip)[("video_caption", "truncation_rate", 0)]
    assert trunc["text_limit"] == 75 and 0.0 <= trunc["value"] < 1.0
    r = got[("text_to_clip", "pass@k", 1)]
    assert (r["num_queries"], r["num_candidates"]) == (N_CLIPS, N_CLIPS)
    assert (r["text_mode"], r["interval"], r["uniform_frames"], r["query_seed"], r["lovr_hf_version"]) == \
        ("truncate", 10, None, 0, __version__)  # CLIP: the original's interval 10
    assert (got[("text_to_video", "pass@k", 1)]["num_queries"], got[("text_to_video", "pass@k", 1)]["num_candidates"]) \
        == (2, 2)
    assert (got[("clip_to_theme", "pass@k", 1)]["num_queries"], got[("clip_to_theme", "pass@k", 1)]["num_candidates"]) \
        == (N_CLIPS, 2)
    assert all(0.0 <= v["value"] <= 1.0 for (_, m, _), v in got.items() if m == "pass@k")
    # k > candidates has no value (the original's topk raises there; a miss would turn into a hit)
    assert ("text_to_video", "pass@k", 5) not in got and ("text_to_video", "pass@k", 1) in got

    # a second model with other settings: its rows join, the first model's stay untouched
    evaluate_model(repo, tiny_config(siglip, text_mode="chunk-mean", num_frames=3))
    render_results(repo)  # what `lovr eval` renders once per command (the library call stores only)
    assert results_of(repo, clip) == clip_rows
    sg = results_of(repo, siglip)
    assert len([key for key in sg if key[0] in DIRECTIONS]) == len(got)
    assert (sg[("text_to_clip", "pass@k", 1)]["text_mode"], sg[("text_to_clip", "pass@k", 1)]["interval"],
            sg[("text_to_clip", "pass@k", 1)]["uniform_frames"]) == ("chunk-mean", None, 3)
    assert len(repo.load(schema.RESULTS)) == len(repo.read(schema.RESULTS))  # plain load_dataset

    md = (repo.root / RESULTS_MD).read_text()
    clip_cell, siglip_cell = f"| {model_label(clip)} |", f"| {model_label(siglip)} |"
    assert clip_cell in md and siglip_cell in md and "### text → clip" in md and "### clip → theme" in md
    assert f"]({PLOT})" in md and "### Cost" in md
    assert (repo.root / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_card(repo)  # storage never renders: a library caller renders the card when it wants it
    card = repo.card_path.read_text()
    assert "## Retrieval results" in card and PLOT in card and siglip_cell in card
    costs = json.loads((repo.root / COST_JSON).read_text())
    c = costs[cost_key(clip)]  # keyed by the model's label, never a local absolute path
    assert c["clips"]["items"] == N_CLIPS and c["videos"]["items"] == 2 and c["captions"]["items"] == N_CLIPS + 4
    assert c["total"]["io_ms"] > 0 and c["total"]["encode_ms"] > 0 and c["clips"]["frames"] > 0

    # --calc_pass alone re-scores from stored embeddings; only that model's rows are replaced
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", clip, "--calc_pass", "--topk", "1,2",
                     "--clip-queries", "all"]) == 0
    assert {k for (_, m, k) in results_of(repo, clip) if m == "pass@k"} == {1, 2}
    assert results_of(repo, siglip) == sg
    # --compare renders the chosen models side by side
    capsys.readouterr()
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--compare", siglip]) == 0
    out = capsys.readouterr().out
    assert siglip_cell in out and clip_cell not in out
    assert clip_cell not in (repo.root / RESULTS_MD).read_text()


def test_stage_flags_chunks_then_merge_equal_single(eval_source: Path, tmp_path: Path) -> None:
    args = ["--model", "dummy", "--interval", "30", "--topk", "1,5,10", "--clip-queries", "3", "--seed", "7"]
    single = make_repo(tmp_path / "single", eval_source, themes=True)
    assert cli_main(["-q", "eval", "--repo", str(single.root), *args]) == 0
    cfg = schema.embeddings_config("dummy")
    expected_emb = single.read(cfg).to_list()
    expected_res = single.read(schema.RESULTS).to_list()
    assert {r["num_queries"] for r in expected_res if r["direction"] == "text_to_clip" and r["slice"] == "all"} == {3}

    repo = make_repo(tmp_path / "chunks", eval_source, themes=True)
    run = ["-q", "eval", "--repo", str(repo.root), *args]
    assert cli_main([*run, "--encode_text"]) == 0
    assert cli_main([*run, "--encode_video", "--num_chunks", "2", "--chunk_idx", "0"]) == 0
    kinds = set(repo.read(cfg)["kind"])
    assert kinds == {"clip_caption", "video_caption", "theme_caption"}  # chunk 1 still missing: not gathered
    assert cli_main([*run, "--encode_video", "--num_chunks", "2", "--chunk_idx", "1"]) == 0
    assert not repo.has(schema.RESULTS)
    repo.remove(cfg)  # --video_merge rebuilds the config from the committed chunk work
    assert cli_main([*run, "--video_merge"]) == 0
    assert repo.read(cfg).to_list() == expected_emb
    assert cli_main([*run, "--calc_pass"]) == 0
    assert repo.read(schema.RESULTS).to_list() == expected_res
    # the same model under a second label: its own config, same vectors, both labels in the results
    evaluate_model(repo, EvalConfig(model="dummy", model_name="dummy again", interval=30, topk="1,5,10",
                                    clip_queries="3", seed=7))
    assert repo.read(schema.embeddings_config(model_slug("dummy again"))).to_list() == expected_emb
    res = repo.read(schema.RESULTS).to_list()
    strip = [{k: v for k, v in r.items() if k != "model"} for r in res]
    assert strip[: len(strip) // 2] == strip[len(strip) // 2 :] and {r["model"] for r in res} == {"dummy", "dummy again"}


PLUGIN = '''
import numpy as np
from lovr_hf.backends.base import Embedder
from lovr_hf.backends.standins.testing import DummyEmbedder


BUILT = []


class VideoTower(Embedder):
    """A plug-in with a native video tower: the embedding of a clip/video is that of its first frame."""

    def __init__(self, model_path="none", text_mode="truncate"):
        BUILT.append(model_path)
        self.model_path = model_path
        self.inner = DummyEmbedder(text_mode=text_mode)

    def model_id(self):
        return f"video-tower:{self.model_path}"

    def embed_text(self, texts):
        return self.inner.embed_text(texts)

    def embed_frames(self, frames):
        return self.inner.embed_frames(frames)

    def embed_video(self, frames):
        return self.inner.embed_frames(frames[:1])[0]
'''


def test_plugin_embedder_module_class(eval_source: Path, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "lovr_plugin_video_tower.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    repo = make_repo(tmp_path / "lovr", eval_source)
    spec = "lovr_plugin_video_tower:VideoTower"
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", spec, "--interval", "30",
                     "--topk", "1,5"]) == 0
    emb = {(r["kind"], r["item_id"]): r for r in repo.read(schema.embeddings_config(model_slug(spec)))}
    assert {r["model"] for r in emb.values()} == {"video-tower:none"}
    assert sys.modules["lovr_plugin_video_tower"].BUILT == ["none"]  # one instance shared by all stages
    clips = {r["clip_id"]: r for r in repo.read(schema.CLIPS)}
    first = DummyEmbedder().embed_frames(read_clip_frames(clips["a-Scene-002"], [0], repo.root))[0]
    np.testing.assert_allclose(emb[("clip", "a-Scene-002")]["embedding"], first, atol=1e-6)
    video_first = DummyEmbedder().embed_frames(read_clip_frames(clips["a-Scene-001"], [0], repo.root))[0]
    np.testing.assert_allclose(emb[("video", "a")]["embedding"], video_first, atol=1e-6)
    assert {r["model"] for r in repo.read(schema.RESULTS)} == {spec}
    # --backend module:Class with a separate model path: the class gets model_path
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--backend", spec, "--model", "some/weights",
                     "--encode_text"]) == 0
    rows = repo.read(schema.embeddings_config(model_slug("some/weights")))
    assert set(rows["model"]) == {"video-tower:some/weights"}


def test_remote_code_refused_and_optional_backends(eval_source: Path, tmp_path: Path, capsys) -> None:
    assert resolve_backend("jinaai/jina-clip-v2") == "jina"
    with pytest.raises(ValueError, match="--trust-remote-code"):
        EMBEDDERS.create("jina", model_path="jinaai/jina-clip-v2")
    with pytest.raises(ValueError, match="--trust-remote-code"):
        make_embedder(EmbedConfig(model="jinaai/jina-clip-v2"))
    repo = make_repo(tmp_path / "lovr", eval_source)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "jinaai/jina-clip-v2"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    assert not repo.work_dir().exists() or not any(repo.work_dir().iterdir())  # refused before any work
    assert resolve_backend("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == "open_clip"
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="open_clip_torch"):
            make_embedder(EmbedConfig(model="hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"))
    with pytest.raises(ValueError, match="one model"):
        evaluate_models(repo, ["dummy", "dummy2"], EvalConfig(model_name="x"))


@pytest.mark.slow
def test_accelerate_two_processes_equal_one(eval_source: Path, tmp_path: Path, tiny: dict[str, str]) -> None:
    clip = tiny["clip"]
    single = make_repo(tmp_path / "single", eval_source, themes=True)
    evaluate_model(single, tiny_config(clip, batch_size=4))
    repo = make_repo(tmp_path / "dist", eval_source, themes=True)
    # `accelerate launch --cpu` starts ONE process unless given an MPI hostfile (accelerate 1.x simple_launcher);
    # the torchrun-based launcher with no visible GPU gives 2 real CPU ranks (gloo, via dist.barrier)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "lovr_hf", "-q", "eval", "--repo", str(repo.root), "--model", clip, "--topk", "1,5,10",
           "--clip-queries", "all", "--device", "cpu", "--dtype", "float32", "--batch-size", "4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = schema.embeddings_config(model_slug(clip))
    want = {(r["kind"], r["item_id"]): r for r in single.read(cfg)}
    got = {(r["kind"], r["item_id"]): r for r in repo.read(cfg)}
    assert got.keys() == want.keys()
    for key, r in want.items():
        np.testing.assert_allclose(got[key]["embedding"], r["embedding"], atol=1e-5, err_msg=str(key))
        assert got[key]["num_frames"] == r["num_frames"]
    res_single, res_dist = results_of(single, clip), results_of(repo, clip)
    assert res_dist.keys() == res_single.keys()
    for key, r in res_single.items():
        assert res_dist[key]["value"] == pytest.approx(r["value"]), key
    batches = list(repo.work_dir("embed-video").glob("*/batch-*"))
    assert len({b.name.split("-")[2] for b in batches}) == 2  # committed by two different processes


def test_calc_pass_refuses_embeddings_made_for_other_data(eval_source: Path, tmp_path: Path) -> None:
    """Scoring stored embeddings (`--calc_pass`) checks each row's `input_digest` against the current inputs,
    from the published table alone: a rewritten caption makes it refuse (exit 2, the stage and count named);
    a full `lovr eval` re-embeds exactly that caption, then `--calc_pass` scores again."""
    import shutil

    repo = make_repo(tmp_path / "lovr", eval_source)
    run = ["-q", "eval", "--repo", str(repo.root), "--model", "dummy", "--interval", "30", "--clip-queries", "all"]
    assert cli_main(run) == 0
    cfg = schema.embeddings_config("dummy")
    before = {r["item_id"]: r for r in repo.read(cfg) if r["kind"] == "clip_caption"}
    assert all(r["input_digest"] for r in repo.read(cfg))
    assert cli_main([*run, "--calc_pass"]) == 0  # nothing changed: scores
    caps = repo.read_table(schema.CLIP_CAPTIONS).to_pylist()
    caps[0]["caption"] = "a completely different description of the clip"
    repo.write(schema.CLIP_CAPTIONS, caps)
    shutil.rmtree(repo.root / ".lovr")  # as downloaded from the Hub: no work state, the table alone decides
    assert cli_main([*run, "--calc_pass"]) == 2
    with pytest.raises(ValueError, match=r"embed-text-clip_caption: 1 units added, changed or removed"):
        evaluate_model(repo, EvalConfig(model="dummy", interval=30, clip_queries="all"), steps=["calc_pass"])
    assert cli_main(run) == 0
    after = {r["item_id"]: r for r in repo.read(cfg) if r["kind"] == "clip_caption"}
    changed = {k for k in before if after[k]["embedding"] != before[k]["embedding"]}
    assert changed == {caps[0]["clip_id"]}
    assert cli_main([*run, "--calc_pass"]) == 0


def test_model_loading_is_its_own_cost_not_caption_encoding(eval_source: Path, tmp_path: Path, monkeypatch) -> None:
    """The cost table counted the model load as the first batch's caption encoding (14,948 ms for 10 captions):
    a load that takes 1.5 s shows as load time, and the captions' encode time stays below it."""
    import time as time_mod

    import lovr_hf.evaluation.embed_stage as embed_mod

    real = embed_mod.load_embedder

    def slow_load(config):
        time_mod.sleep(1.5)  # a model that takes a while to load
        return real(config)

    monkeypatch.setattr(embed_mod, "load_embedder", slow_load)
    repo = make_repo(tmp_path / "lovr", eval_source)
    evaluate_model(repo, tiny_config("dummy"))
    render_results(repo)  # what `lovr eval` renders once per command
    costs = json.loads((repo.root / COST_JSON).read_text())[cost_key("dummy")]
    assert costs["captions"]["load_ms"] >= 1500 and costs["total"]["load_ms"] >= costs["captions"]["load_ms"]
    assert costs["captions"]["encode_ms"] < 1500
    assert "load ms" in (repo.root / RESULTS_MD).read_text()
