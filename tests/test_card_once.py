"""Storage never renders: a command renders its repo's card once, when it ends, from what the repo then holds
(before, every table write re-rendered the card body, plots included)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import DatasetCard

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report import card


def test_a_command_renders_the_card_once_and_a_library_write_not_at_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = card.render_card_body

    def counting(repo, files):  # type: ignore[no-untyped-def]
        calls.append(repo.root)
        return real(repo, files)

    monkeypatch.setattr(card, "render_card_body", counting)
    inp = tmp_path / "in"
    inp.mkdir()
    make_video(inp / "a.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=1)
    repo = BenchmarkRepo(tmp_path / "lovr")
    assert cli_main(["-q", "segment", "--input_folder", str(inp), "--repo", str(repo.root),
                     "--clip_mode", "virtual"]) == 0
    assert calls == [repo.root]  # videos and clips written, one render
    text = DatasetCard.load(repo.card_path).text
    clips = len(repo.read(schema.CLIPS))
    assert f"| clips | {clips} |" in text and f"| `{schema.VIDEOS}` | 1 |" in text
    # a library write updates the index only; the body says what the last render saw until it renders again
    repo.write(schema.SPLITS, [{"clip_id": repo.read(schema.CLIPS)[0]["clip_id"], "video_id": "a", "split": "test"}])
    assert calls == [repo.root]
    assert schema.SPLITS in repo.listed_configs() and f"`{schema.SPLITS}`" not in DatasetCard.load(repo.card_path).text
    card.write_card(repo)
    assert f"| `{schema.SPLITS}` | 1 |" in DatasetCard.load(repo.card_path).text
