"""Local model folders are named by folder name + content hash, never by absolute path (issue #24)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lovr_hf.models import model_label, model_slug
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
