"""lovr push against a real HTTP stand-in of the Hub (lovr_hf.testing.fake_hub), through the real HfApi.

What is checked is what the Hub would hold: no local path anywhere, no work state, the token that was sent
(and only that one), index-only pushes without video bytes, re-pushes that upload only what changed and
delete stale shards, batched commits for large repos, and that the pushed repo loads with ``datasets``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Video, load_dataset

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.hub import push as push_mod
from lovr_hf.hub.publish import PublishError, check_folder_limits, check_no_local_paths, stage
from lovr_hf.hub.push import push_to_hub
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.testing.fake_hub import FakeHub

TOKEN = "hf_pushtesttoken123"


@pytest.fixture(autouse=True)
def _plain_lfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in speaks git-LFS, not Xet: run huggingface_hub's non-Xet upload path."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[BenchmarkRepo, Path]]:
    """Repos built once (lovr run with dummy backends; with and without an eval), copied by each test."""
    root = tmp_path_factory.mktemp("push_build")
    return {"eval": _build(root / "eval", eval_model=True), "plain": _build(root / "plain", eval_model=False)}


def build_repo(tmp: Path, built: dict, eval_model: bool = True) -> tuple[BenchmarkRepo, Path]:
    import shutil

    src, vids = built["eval" if eval_model else "plain"]
    shutil.copytree(src.root, tmp / "lovr", symlinks=True)
    return BenchmarkRepo(tmp / "lovr"), vids


def _build(tmp: Path, clip_mode: str = "exact", eval_model: bool = True) -> tuple[BenchmarkRepo, Path]:
    vids = tmp / "my videos"
    vids.mkdir(parents=True)
    make_video(vids / "a.mp4", [SceneSpec(60), SceneSpec(66)], 64, 48, 12, seed=1)
    (vids / "sub").mkdir()
    make_video(vids / "sub" / "b.mp4", [SceneSpec(60)], 64, 48, 12, seed=2)
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "input_folder": str(vids), "repo": str(tmp / "lovr"), "segment": {"clip_mode": clip_mode},
        "caption": {"backend": "dummy"}, "merge": {"llm": "dummy", "cluster_size": 2},
    }))
    assert cli_main(["-q", "run", "--config", str(cfg)]) == 0
    repo = BenchmarkRepo(tmp / "lovr")
    if eval_model:
        assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "dummy", "--backend", "dummy",
                         "--interval", "10"]) == 0
    return repo, vids


def strings(data: bytes, name: str) -> list[str]:
    if name.endswith(".parquet"):
        out: list[str] = []
        for col in pq.read_table(io.BytesIO(data)).to_pylist():
            out += [v for v in col.values() if isinstance(v, str)]
            out += [x for v in col.values() if isinstance(v, list) for x in v if isinstance(x, str)]
        return out
    if name.endswith((".md", ".json", ".txt")):
        return [data.decode("utf-8")]
    return []


def assert_no_local_path(files: dict[str, bytes], *roots: Path) -> None:
    for name, data in files.items():
        for s in strings(data, name):
            for root in roots:
                assert str(root) not in s, f"{name} leaks {root}: {s[:200]!r}"


def download(hub: FakeHub, repo_id: str, dest: Path) -> Path:
    for name, data in hub.files(repo_id).items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return dest


def test_push_publishes_the_repo_without_local_paths_or_work_state(built: dict, tmp_path: Path, caplog) -> None:
    repo, vids = build_repo(tmp_path, built)
    with FakeHub(tokens={TOKEN}) as hub, caplog.at_level(logging.DEBUG):
        from huggingface_hub import HfApi

        url = push_to_hub(repo.root, "me/bench", private=True, api=HfApi(endpoint=hub.endpoint))
        files = hub.files("me/bench")
        assert url.endswith("datasets/me/bench") and hub.repos["me/bench"].private
        # exactly the token of the environment, on every call that carries one; the rest are LFS byte PUTs
        assert hub.tokens_seen() <= {TOKEN, None}
        assert all(r.method == "PUT" and r.path.startswith("/__lfs/") for r in hub.requests if r.token is None)
        assert TOKEN not in caplog.text
        assert not any(f.startswith(".lovr") or "/.lovr/" in f for f in files)
        assert {"README.md", "run_config.json", "results.md"} <= set(files)
        assert sum(f.endswith(".mp4") for f in files) == repo.read(schema.CLIPS).num_rows == 3
        assert_no_local_path(files, tmp_path, vids.parent, repo.root)
        assert all(TOKEN not in s for n, d in files.items() for s in strings(d, n))
        # the pushed repo is a dataset: every config loads, row for row, with the local repo's keys
        local = download(hub, "me/bench", tmp_path / "downloaded" / "bench")
    pub = BenchmarkRepo(local)
    assert set(pub.configs()) == set(repo.listed_configs())
    for config in pub.configs():
        ds = load_dataset(str(local), config, split="train")
        if config == schema.CLIPS:  # its video column points at the Hub (hf://...): not decoded offline
            ds = ds.cast_column(schema.VIDEO, Video(decode=False))
            assert [r["video"]["path"] for r in ds] == [f"hf://datasets/me/bench@main/{r['path']}" for r in ds]
        pk = schema.primary_key(config)
        assert [tuple(r[k] for k in pk) for r in ds] == [tuple(r[k] for k in pk) for r in repo.read(config)]
    videos = pub.read(schema.VIDEOS).to_list()
    assert all(v["path"] is None and v["size_bytes"] and len(v["sha256"]) == 64 for v in videos)
    assert {v["source_name"] for v in videos} == {"a.mp4", "sub/b.mp4"}
    clip_paths = pub.read(schema.CLIPS)["path"]
    assert all(p.startswith("clips/") and (local / p).is_file() for p in clip_paths)


def test_repush_uploads_only_what_changed_and_deletes_stale_shards(built: dict, tmp_path: Path) -> None:
    repo, _ = build_repo(tmp_path, built)
    with FakeHub(tokens={TOKEN}) as hub:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.endpoint)
        push_to_hub(repo.root, "me/bench", api=api)
        first_uploads = len(hub.lfs_uploads)
        assert len(hub.commits) == 1 and first_uploads > 0
        push_to_hub(repo.root, "me/bench", api=api)  # nothing changed: no commit, no bytes
        assert len(hub.commits) == 1 and len(hub.lfs_uploads) == first_uploads
        old_results = {f for f in hub.files("me/bench") if f.startswith("data/results/")}
        assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "dummy", "--backend", "dummy",
                         "--interval", "10", "--topk", "1,5"]) == 0  # new results shards
        push_to_hub(repo.root, "me/bench", api=api)
        c = hub.commits[-1]
        assert len(hub.commits) == 2
        assert not any(f.endswith(".mp4") for f in c.added)  # clips unchanged: not sent again
        assert any(f.startswith("data/results/") for f in c.added) and "README.md" in c.added
        assert set(c.deleted) == old_results  # the stale shards are gone from the Hub
        now = set(hub.files("me/bench"))
    assert {f for f in now if f.startswith("data/")} == {f for f in stage(repo, repo_id="me/bench").files
                                                          if f.startswith("data/")}


def test_no_media_publishes_an_index_that_materialize_can_rebuild(built: dict, tmp_path: Path) -> None:
    repo, vids = build_repo(tmp_path, built, eval_model=False)
    with FakeHub(tokens={TOKEN}) as hub:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.endpoint)
        push_to_hub(repo.root, "me/bench", api=api)  # first with media ...
        media = {f for f in hub.files("me/bench") if f.endswith(".mp4")}
        assert len(media) == 3
        push_to_hub(repo.root, "me/bench", api=api, no_media=True)  # ... then index only: clips deleted
        files = hub.files("me/bench")
        assert not any(f.endswith((".mp4", ".mkv")) for f in files)
        assert {f for f in hub.commits[-1].deleted if not f.startswith("data/")} == media
        card = files["README.md"].decode()
        assert "lovr materialize" in card and "Index only" in card and "hf download me/bench" in card
        local = download(hub, "me/bench", tmp_path / "dl" / "bench")
    pub = BenchmarkRepo(local)
    clips = pub.read(schema.CLIPS).to_list()
    assert all(c["path"] is None for c in clips)
    want = {(c["clip_id"], c["start_frame"], c["end_frame"]) for c in repo.read(schema.CLIPS)}
    assert {(c["clip_id"], c["start_frame"], c["end_frame"]) for c in clips} == want


def test_large_push_commits_in_batches_and_resumes(built: dict, tmp_path: Path, monkeypatch) -> None:
    repo, _ = build_repo(tmp_path, built)
    monkeypatch.setattr(push_mod, "LARGE_FILES", 3)
    monkeypatch.setattr(push_mod, "FILES_PER_COMMIT", 4)
    n_files = len(stage(repo).files)
    with FakeHub(tokens={TOKEN}) as hub:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.endpoint)
        real_commit = hub.commit
        calls = {"n": 0}

        def flaky(*a, **kw):  # the server goes away at the second batch (and stays away through the retries)
            calls["n"] += 1
            return (500, {"error": "server went away"}) if calls["n"] >= 2 and down else real_commit(*a, **kw)

        down = True
        hub.commit = flaky  # type: ignore[method-assign]
        monkeypatch.setattr(push_mod, "RETRY_WAIT_S", 0.0)
        with pytest.raises(push_mod.PushError, match=r"HTTP 500.*rerun `lovr push"):
            push_to_hub(repo.root, "me/bench", api=api)
        down = False
        assert len(hub.commits) == 1 and "(part 1/" in hub.commits[0].summary
        assert "README.md" not in hub.files("me/bench")  # the card goes last: never lists missing shards
        first = set(hub.commits[0].added)
        push_to_hub(repo.root, "me/bench", api=api)  # rerun: batch 1 is skipped (unchanged), the rest lands
        resent = {f for c in hub.commits[1:] for f in c.added}
        assert not (first & resent)
        assert len(hub.commits) == 1 + (-(-(n_files - len(first)) // 4))
        assert set(stage(repo, repo_id="me/bench").files) <= set(hub.files("me/bench"))


def test_push_fails_loudly_with_a_bad_token_and_publishes_nothing(built: dict, tmp_path: Path, monkeypatch) -> None:
    repo, _ = build_repo(tmp_path, built, eval_model=False)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with FakeHub(tokens={TOKEN}) as hub:
        from huggingface_hub import HfApi

        with pytest.raises(Exception, match="401"):
            push_to_hub(repo.root, "me/bench", api=HfApi(endpoint=hub.endpoint))
        assert not hub.commits and "me/bench" not in hub.repos
        assert hub.tokens_seen() == {"hf_wrong"}


def test_publication_checks_leaks_and_folder_limits(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="entries"):
        check_folder_limits(tmp_path, ["clips/v/a.mp4", "clips/v/b.mp4", "clips/v/c.mp4"], limit=2)
    check_folder_limits(tmp_path, ["clips/v/a.mp4", "clips/w/b.mp4"], limit=2)
    # the last check before upload reads every staged table cell and text file
    root = tmp_path / "staged"
    BenchmarkRepo(root).write(schema.SPLITS, [{"clip_id": "a-Scene-001", "video_id": f"{tmp_path}/a", "split": "x"}])
    files = [p.relative_to(root).as_posix() for p in root.rglob("*.parquet")]
    with pytest.raises(PublishError, match="local paths"):
        check_no_local_paths(root, files, [str(tmp_path)])
    (root / "notes.md").write_text("see /home/someone-else/x")
    check_no_local_paths(root, [*files, "notes.md"], ["/nowhere"])
    with pytest.raises(PublishError, match="notes.md"):
        check_no_local_paths(root, ["notes.md"], ["/home/someone-else"])


def test_push_cli_dry_run_and_required_repo_id(built: dict, tmp_path: Path, capsys) -> None:
    repo, _ = build_repo(tmp_path, built, eval_model=False)
    assert cli_main(["-q", "push", str(repo.root), "--repo-id", "me/x", "--dry-run"]) == 0
    staged = repo.work_root / "publish" / repo.root.name
    assert (staged / "README.md").is_file()
    with pytest.raises(SystemExit) as e:
        cli_main(["push", str(tmp_path)])
    assert e.value.code == 2
    assert "--repo-id" in capsys.readouterr().err


def test_push_takes_the_repo_as_every_command_does(built: dict, tmp_path: Path, capsys) -> None:
    """``--repo R`` as the other commands spell it. Before, argparse read ``--repo`` as a prefix of
    ``--repo-id``: ``lovr push --repo-id me/x --repo R`` tried to publish ./lovr under the Hub id R."""
    repo, _ = build_repo(tmp_path, built, eval_model=False)
    assert cli_main(["-q", "push", "--repo-id", "me/x", "--dry-run", "--repo", str(repo.root)]) == 0
    assert (repo.work_root / "publish" / repo.root.name / "README.md").is_file()
    capsys.readouterr()
    assert cli_main(["-q", "push", str(repo.root), "--repo", str(tmp_path / "other"), "--repo-id", "me/x",
                     "--dry-run"]) == 2
    assert "two repos given" in capsys.readouterr().err


# ---- push errors are one clear line (issue #22) ------------------------------------------------------------


class FlakyHub(FakeHub):
    """A Hub whose commit endpoint answers 500 the first ``failures`` times."""

    def __init__(self, failures: int, **kw) -> None:
        super().__init__(**kw)
        self.failures = failures

    def commit(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            return 500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"}
        return super().commit(*args, **kwargs)


@pytest.fixture
def release_repo(tmp_path: Path) -> BenchmarkRepo:
    from _release_helpers import build_release

    from lovr_hf.hub.release import import_release

    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(build_release(tmp_path / "release"), repo.root)
    return repo


def test_a_rejected_token_is_one_line_naming_the_repo(release_repo: BenchmarkRepo, monkeypatch, capsys) -> None:
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_TOKEN", "hf_wrongtoken000000000")
    with FakeHub(tokens={TOKEN}) as hub:
        monkeypatch.setattr(c, "ENDPOINT", hub.endpoint)
        code = cli_main(["push", str(release_repo.root), "--repo-id", "me/bench"])
        assert not hub.commits
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "token rejected for me/bench (HTTP 401)" in err and "hf_wrongtoken" not in err


def test_hub_5xx_on_commit_is_retried_then_says_what_to_rerun(release_repo: BenchmarkRepo, monkeypatch) -> None:
    from huggingface_hub import HfApi

    monkeypatch.setattr(push_mod, "RETRY_WAIT_S", 0.0)
    with FlakyHub(failures=1, tokens={TOKEN}) as hub:  # one 500, then fine: the push completes
        push_to_hub(release_repo.root, "me/bench", api=HfApi(endpoint=hub.endpoint))
        assert "README.md" in hub.files("me/bench")
    with FlakyHub(failures=99, tokens={TOKEN}) as hub:
        with pytest.raises(push_mod.PushError, match=r"HTTP 500\) 3 times: rerun `lovr push .* --repo-id me/b2`") as e:
            push_to_hub(release_repo.root, "me/b2", api=HfApi(endpoint=hub.endpoint))
        assert "\n" not in str(e.value) and not hub.commits
