"""Local model folders are named by folder name + content hash, never by absolute path (issue #24)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lovr_hf.evaluation.models import model_slug
from lovr_hf.model_labels import model_label
from lovr_hf.tiny import build_tiny_clip


def test_a_local_model_is_named_by_its_folder_and_content(tmp_path: Path) -> None:
    a = Path(build_tiny_clip(tmp_path / "one" / "tiny-clip"))
    b = tmp_path / "two" / "deeper" / "tiny-clip"
    shutil.copytree(a, b)
    assert model_label(str(a)) == model_label(str(b))  # the same weights in two places: one name
    assert model_label(str(a)).startswith("tiny-clip-") and "/" not in model_label(str(a))
    assert model_slug(str(a)) == model_label(str(a))
    assert str(tmp_path.name) not in model_slug(str(a))
    (b / "config.json").write_text((b / "config.json").read_text().replace("}", ', "note": 1}', 1))
    assert model_label(str(b)) != model_label(str(a))  # another config: another model


def test_a_missing_folder_never_puts_its_path_in_a_config_name() -> None:
    missing = "/tmp/tmp_fA4p9k1dxC/models/no-such-clip"
    slug = model_slug(missing)
    assert slug.startswith("no-such-clip-") and "tmp" not in slug, slug  # before: tmp__tmp_fA4p9k1dxC__models__...
    assert model_label("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"
    assert model_label("describer") == "describer" and model_label("pkg.mod:Cls") == "pkg.mod:Cls"


def _texts(root: Path) -> dict[str, str]:
    """Every text a published repo carries besides its media: the card, the results page, the JSON assets,
    and every string of every Arrow table (results, rankings, embeddings)."""
    from lovr_hf.repo import BenchmarkRepo

    repo = BenchmarkRepo(root)
    out = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*")
           if p.is_file() and p.suffix in (".md", ".json", ".jsonl", ".yaml", ".txt")
           and p.relative_to(root).parts[0] != repo.work_root.name}  # the local work state is never published
    for config in repo.config_files():
        out[config] = repr(repo.read_table(config).to_pylist())
    return out


def test_results_card_and_assets_never_hold_a_local_folders_path(eval_source: Path, tmp_path: Path,
                                                                 capsys) -> None:
    from test_embed import make_repo

    from lovr_hf import schema
    from lovr_hf.cli.app import main as cli_main

    a = Path(build_tiny_clip(tmp_path / "models-a" / "clip"))
    b = tmp_path / "models-b" / "clip"  # same basename, another model (another config)
    shutil.copytree(a, b)
    (b / "config.json").write_text((b / "config.json").read_text().replace("}", ', "note": 1}', 1))
    label_a, label_b = model_label(str(a)), model_label(str(b))
    assert label_a != label_b and label_a.startswith("clip-") and label_b.startswith("clip-")
    repo = make_repo(tmp_path / "lovr", eval_source)
    common = ["--topk", "1,5", "--clip-queries", "all", "--device", "cpu", "--dtype", "float32", "--bootstrap", "20"]
    for m in (a, b):
        assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", str(m), *common]) == 0
    rows = repo.read_table(schema.RESULTS).to_pylist()
    assert {r["model"] for r in rows} == {label_a, label_b} == {r["model_ref"] for r in rows}
    leaks = {name: text for name, text in _texts(repo.root).items() if str(tmp_path) in text}
    assert not leaks, sorted(leaks)  # before: the results rows, the card tables and eval_cost.json held it
    card = repo.card_path.read_text()
    assert f"| {label_a} |" in card and f"| {label_b} |" in card
    # a rerun of the same folder (anywhere: the label is its content) replaces its own rows, nothing more
    moved = tmp_path / "elsewhere" / "clip"
    shutil.copytree(a, moved)
    n = len(rows)
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", str(moved), "--calc_pass", *common]) == 0
    assert len(repo.read(schema.RESULTS)) == n
    # verify maps the rows back to the model: with the folder given, it recomputes them; without it, it says
    # what it needs (the rows do not say where the folder lies)
    capsys.readouterr()
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--verify", "--model", str(a)]) == 0
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--verify"]) == 1
    assert "give the folder again" in capsys.readouterr().out
    # lovr report takes the folder too and names the page by the label
    assert cli_main(["-q", "report", "--repo", str(repo.root), "--model", str(b), "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / f"{model_slug(str(b))}.html").read_text()
    assert label_b in page and str(tmp_path) not in page
