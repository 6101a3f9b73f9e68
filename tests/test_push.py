"""lovr push: create_repo -> upload_folder with the right arguments, work state excluded, no token leak."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

from lovr_hf import schema
from lovr_hf.cli import main as cli_main
from lovr_hf.push import IGNORE_PATTERNS, push_to_hub
from lovr_hf.repo import BenchmarkRepo


class RecordingApi:
    """Stands in for HfApi at the network boundary only; records what would be sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        kept = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in kw["ignore_patterns"])]
        self.calls.append(("upload_folder", {**kw, "files": sorted(kept)}))


def make_repo(root: Path) -> BenchmarkRepo:
    repo = BenchmarkRepo(root)
    repo.write(schema.VIDEOS, [{"video_id": "v", "source_name": "v.mp4", "path": "/x/v.mp4", "duration_s": 9.0,
                                "fps": 24.0, "num_frames": 216, "width": 64, "height": 48, "rotation": 0, "threshold": 34.0,
                                "status": "ok", "error": None}])
    repo.write_run_config({"segment": {"threshold": 34}, "api_key": "sk-secret-value"})
    (repo.work_dir("caption")).mkdir(parents=True)
    (repo.work_dir("caption") / "done.json").write_text("{}")
    return repo


def test_push_uploads_card_and_data_but_not_work_state(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_supersecrettoken")
    repo = make_repo(tmp_path / "lovr")
    api = RecordingApi()
    with caplog.at_level(logging.DEBUG):
        url = push_to_hub(repo.root, "me/lovr-test", private=True, api=api)
    assert url.endswith("me/lovr-test")
    (c_name, c_kw), (u_name, u_kw) = api.calls
    assert c_name == "create_repo" and c_kw["repo_type"] == "dataset" and c_kw["private"] is True
    assert u_name == "upload_folder" and u_kw["repo_type"] == "dataset"
    files = u_kw["files"]
    assert "README.md" in files and "run_config.json" in files
    assert any(f.startswith("data/videos/") for f in files)
    assert not any(f.startswith(".lovr") for f in files)
    assert "sk-secret-value" not in (repo.root / "run_config.json").read_text()
    assert "hf_supersecrettoken" not in caplog.text
    assert IGNORE_PATTERNS


def test_push_cli_requires_repo_id(tmp_path: Path, capsys) -> None:
    try:
        cli_main(["push", str(tmp_path)])
    except SystemExit as e:
        assert e.code == 2
    assert "--repo-id" in capsys.readouterr().err
