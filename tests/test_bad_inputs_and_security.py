"""A corpus of bad inputs through `lovr run`, backend faults end to end, and the security promises."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.demo.samples import make_bad_inputs, make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.ids import check_id, id_problem, strip_video_extension
from lovr_hf.merge.config import MergeConfig
from lovr_hf.pipeline import PipelineConfig, run_pipeline
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.segment.stage import SegmentConfig
from lovr_hf.testing.fake_openai import Error, FakeOpenAIServer, Garbage, Hang, RateLimit

ROOT = Path(__file__).resolve().parents[1]


def test_bad_input_corpus_through_lovr_run(tmp_path: Path) -> None:
    work = tmp_path / "work"
    inp = work / "in"
    inp.mkdir(parents=True)
    expected_bad = make_bad_inputs(inp)
    make_video(inp / "two seconds.mp4", [SceneSpec(24)], 64, 48, 12, seed=1)
    make_video(inp / "vidéo à écouter 視頻.mp4", [SceneSpec(72), SceneSpec(72)], 64, 48, 12, seed=2)
    make_video(inp / "..mp4", [SceneSpec(30)], 64, 48, 12, seed=3)  # a name made of '..'
    make_video(inp / "..\\..\\escape.mp4", [SceneSpec(30)], 64, 48, 12, seed=4)  # backslashes: legal here
    (inp / "folder.mp4").mkdir()
    os.symlink(inp / "loop.mp4", inp / "loop.mp4")
    before = {p.name for p in tmp_path.iterdir()}
    work_before = {p.name for p in work.iterdir()}
    cfg = PipelineConfig(input_folder=str(inp), repo=str(work / "lovr"),
                         caption=CaptionConfig(backend="dummy"), merge=MergeConfig(llm="dummy"))
    summary = run_pipeline(cfg)
    repo = BenchmarkRepo(work / "lovr")
    videos = {r["source_name"]: r for r in repo.read(schema.VIDEOS)}
    bad = set(expected_bad) | {"folder.mp4", "loop.mp4"}
    good = {"two seconds.mp4", "vidéo à écouter 視頻.mp4", "..mp4", "..\\..\\escape.mp4"}
    assert {n for n in good if id_problem(strip_video_extension(n)) is None} == {"two seconds.mp4",
                                                                                 "vidéo à écouter 視頻.mp4"}
    assert set(videos) == bad | good
    for name in bad:
        assert videos[name]["status"] == schema.ERROR and len(videos[name]["error"]) > 5, name
    for name in good:
        assert videos[name]["status"] == schema.OK, (name, videos[name]["error"])
        vid = videos[name]["video_id"]
        stem = strip_video_extension(name)
        if id_problem(stem) is None:  # safe as one path component: the name is the id, verbatim
            assert vid == stem, name
        else:  # '.', backslashes: a hashed [A-Za-z0-9_-] slug, which can never escape
            assert re.fullmatch(r"[A-Za-z0-9_-]+", vid) and vid != stem, name
        assert check_id(vid) == vid
        assert (repo.root / "clips" / vid).is_dir()
        assert (repo.root / "clips").resolve() in (repo.root / "clips" / vid).resolve().parents
    clips = repo.read(schema.CLIPS)
    assert {videos[n]["video_id"] for n in good} == set(clips["video_id"])
    assert set(repo.read(schema.VIDEO_CAPTIONS)["video_id"]) == set(clips["video_id"])
    assert summary["videos_ok"] == 4
    # nothing written outside the repo folder (inputs untouched, no stray files next to them)
    assert {p.name for p in tmp_path.iterdir()} == before
    assert {p.name for p in work.iterdir()} == work_before | {"lovr"}
    for p in repo.root.rglob("*"):
        assert repo.root in p.resolve().parents or p.is_symlink()


@pytest.fixture()
def small_videos(tmp_path: Path) -> Path:
    d = tmp_path / "vids"
    d.mkdir()
    make_video(d / "a.mp4", [SceneSpec(60), SceneSpec(66), SceneSpec(72)], 64, 48, 12, seed=5)
    return d


def test_backend_faults_end_to_end_then_retry_failed(small_videos: Path, tmp_path: Path, monkeypatch,
                                                      caplog) -> None:
    secret, hf_token = "sk-never-show-me-4242", "hf_never_show_me_4242"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", hf_token)
    with FakeOpenAIServer() as srv, caplog.at_level(logging.DEBUG):
        # the captioner's first requests fail in every way; retries absorb the transient ones,
        # the persistent garbage exhausts the retries of one clip -> failed row
        srv.push(Error(500), RateLimit(retry_after=0.1), Hang(seconds=4), Garbage("no_choices"),
                 Garbage("no_choices"), Garbage("no_choices"), Garbage("no_choices"))
        cfg = PipelineConfig(
            input_folder=str(small_videos), repo=str(tmp_path / "lovr"),
            segment=SegmentConfig(clip_mode="virtual"),
            caption=CaptionConfig(backend="openai", api_base=srv.base_url, api_model="fake-vlm", batch_size=1,
                                  api_concurrency=1, backend_options={"timeout": 1.5, "max_retries": 3}),
            merge=MergeConfig(llm="openai", api_base=srv.base_url, api_model="fake-llm", num_workers=1,
                              timeout=1.5),
        )
        run_pipeline(cfg)
        n_requests = len(srv.chat_requests)
        repo = BenchmarkRepo(tmp_path / "lovr")
        caps = repo.read(schema.CLIP_CAPTIONS)
        assert caps.num_rows == 3
        failed = [r["clip_id"] for r in caps if r["status"] == schema.FAILED]
        assert len(failed) == 1, caps["status"]
        assert n_requests > caps.num_rows + repo.read(schema.CLUSTERS)["llm_calls"][0]  # retries happened
        ok_before = {r["clip_id"]: r["caption"] for r in caps if r["status"] == schema.OK}
        n_before = len(srv.chat_requests)
        run_pipeline(cfg, RunControl(retry_failed=True))
        caption_requests = [r for r in srv.chat_requests[n_before:] if r.body.get("model") == "fake-vlm"]
        assert len(caption_requests) == 1  # only the failed clip was captioned again
        caps = repo.read(schema.CLIP_CAPTIONS)
        assert set(caps["status"]) == {schema.OK}
        assert {r["clip_id"]: r["caption"] for r in caps if r["clip_id"] in ok_before} == ok_before
    # credentials never leak into logs or outputs
    assert secret not in caplog.text and hf_token not in caplog.text
    for p in repo.root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert secret.encode() not in data and hf_token.encode() not in data, p


# torch.load only with weights_only=True (tensors only: the restricted loader of .bin checkpoints, backends/files.py)
UNSAFE = re.compile(r"pickle\.loads?\(|torch\.load\((?!.*weights_only=True)|allow_pickle\s*=\s*True|trust_remote_code\s*=\s*True|"
                    r"(?<![.\w])eval\(|dill\.loads?\(|joblib\.load\(")


def code_lines(path: Path) -> dict[int, str]:
    """Source lines with strings and comments removed (so messages and docs do not count)."""
    import tokenize

    skip = {tokenize.STRING, tokenize.COMMENT, tokenize.ENCODING, getattr(tokenize, "FSTRING_MIDDLE", -1)}
    lines: dict[int, str] = {}
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type not in skip:
                lines[tok.start[0]] = lines.get(tok.start[0], "") + tok.string
    return lines


def test_no_pickle_and_no_remote_code_by_default_in_library_code() -> None:
    offenders = []
    for folder in ("lovr_hf", "builders", "metrics", "scripts"):
        for p in (ROOT / folder).rglob("*.py"):
            rel = p.relative_to(ROOT).as_posix()
            for i, line in code_lines(p).items():
                m = UNSAFE.search(line)
                if m:
                    offenders.append(f"{rel}:{i}: {line}")
    assert not offenders, "\n".join(offenders)
    # the grep itself works: it catches a planted call
    assert UNSAFE.search("x=pickle.load(f)") and UNSAFE.search("torch.load(p)") and not UNSAFE.search("m.eval()")
    assert UNSAFE.search("torch.load(p,weights_only=False)") and not UNSAFE.search("torch.load(p,weights_only=True)")


def test_pytorch_pickle_checkpoints_are_read_only_when_asked(tmp_path: Path) -> None:
    """A ``.bin`` state dict is refused unless the caller has the user's consent; with it, the restricted loader
    reads tensors and refuses an object that would run code when unpickled."""
    import torch

    from lovr_hf.backends.files import load_weights

    good = tmp_path / "model.bin"
    torch.save({"w": torch.arange(3.0)}, good)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        load_weights(good)
    assert torch.equal(load_weights(good, allow_torch_format=True)["w"], torch.arange(3.0))
    evil = tmp_path / "evil.bin"
    torch.save({"w": torch.zeros(1), "x": _Planted()}, evil)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_weights(evil, allow_torch_format=True)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "m.safetensors"))
    assert torch.equal(load_weights(tmp_path / "m.safetensors")["w"], torch.ones(2))


class _Planted:
    """An arbitrary class instance: unpickling it needs a global lookup, which weights_only refuses."""


def test_trust_remote_code_is_off_unless_asked() -> None:
    from lovr_hf.backends.captioners.transformers import TransformersCaptioner
    from lovr_hf.backends.embedders.transformers import TransformersEmbedder
    from lovr_hf.backends.llms.transformers import TransformersChatLLM

    assert TransformersCaptioner("x").trust_remote_code is False
    assert CaptionConfig().trust_remote_code is False
    assert TransformersChatLLM("x")._load_kwargs["trust_remote_code"] is False
    assert TransformersEmbedder("x").trust_remote_code is False


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "lovr_hf", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("segment", "caption", "merge", "eval", "run", "demo", "push", "import-release", "info"):
        assert cmd in out


# ---- publishing publishes only what it should (issue #22) --------------------------------------------------


@pytest.fixture
def _hub_env(monkeypatch: pytest.MonkeyPatch) -> str:
    import huggingface_hub.constants as c

    token = "hf_securitytesttoken99"
    monkeypatch.setattr(c, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    return token


def _linked_release(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """The miniature release with one clip file a link to /etc/passwd and one a link to a video outside it."""
    from tests._release_helpers import build_release, clip_files, write_clip

    release = build_release(tmp_path / "release")
    files = clip_files(release)
    passwd = files["-7wwfGJXEZg-Scene-003"]
    passwd.unlink()
    passwd.symlink_to("/etc/passwd")
    outside = tmp_path / "elsewhere" / "private.mp4"
    write_clip(outside, 30, (1, 2, 3), seed=9)
    linked = files["-_q3Q-Scene-002"]
    linked.unlink()
    linked.symlink_to(outside)
    return release, outside, Path("/etc/passwd").read_bytes()


def test_linked_clip_files_are_refused_at_import_and_never_reach_the_hub(tmp_path: Path, _hub_env: str) -> None:
    from huggingface_hub import HfApi

    from lovr_hf.hub.push import push_to_hub
    from lovr_hf.hub.release import import_release
    from lovr_hf.testing.fake_hub import FakeHub

    release, outside, passwd = _linked_release(tmp_path)
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    rows = {r["clip_id"]: r for r in repo.read(schema.CLIPS).to_list()}
    for cid in ("-7wwfGJXEZg-Scene-003", "-_q3Q-Scene-002"):
        assert rows[cid]["status"] == schema.ERROR and "symbolic link" in rows[cid]["error"], rows[cid]
    # even rows that claim `ok` for a link out of the release (an older import) publish nothing of it
    table = repo.read(schema.CLIPS).to_list()
    for r in table:
        if r["clip_id"] in ("-7wwfGJXEZg-Scene-003", "-_q3Q-Scene-002"):
            r.update(status=schema.OK, error=None)
    repo.write(schema.CLIPS, table)
    with FakeHub(tokens={_hub_env}) as hub:
        push_to_hub(repo.root, "me/release", api=HfApi(endpoint=hub.endpoint))
        files = hub.files("me/release")
    blobs = list(files.values())
    assert passwd not in blobs and outside.read_bytes() not in blobs
    assert not any(passwd in b for b in blobs if len(passwd) > 16)
    assert sum(f.endswith(".mp4") for f in files) == 5  # 7 decodable files on disk, 2 of them links
    published = {r["clip_id"]: r["path"] for r in BenchmarkRepo(_download(files, tmp_path / "dl")).read(schema.CLIPS).to_list()}
    assert published["-7wwfGJXEZg-Scene-003"] is None and published["-_q3Q-Scene-002"] is None
    card = files["README.md"].decode()
    assert "not published: resolves outside the repo and its release" in card


def test_a_non_video_file_among_the_media_or_credentials_in_the_run_config_stop_the_push(
        tmp_path: Path, _hub_env: str) -> None:
    from lovr_hf.hub.publish import PublishError, stage
    from lovr_hf.hub.release import import_release
    from tests._release_helpers import build_release, clip_files

    release = build_release(tmp_path / "release")
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(release, repo.root)
    # a run config written by hand (or by an older lovr_hf) with a credential in a URL
    (repo.root / "run_config.json").write_text('{"caption": {"api_base": "http://user:s3cret@llm.local/v1"}}')
    pub = stage(repo)
    for f in pub.files:
        assert b"s3cret" not in (pub.root / f).read_bytes(), f
    # a clip file replaced by a text file inside the release: an `ok` row, but not a video
    target = clip_files(release)["-7wwfGJXEZg-Scene-001"]
    target.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    with pytest.raises(PublishError, match="not a video file"):
        stage(repo)


def _download(files: dict[str, bytes], dest: Path) -> Path:
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return dest


def test_a_tampered_caption_shard_is_rebuilt_by_a_plain_caption_rerun(tmp_path: Path) -> None:
    """Issue #22: a clip_captions shard rewritten with fewer rows under the same name used to make `lovr
    caption` say "nothing changed" (and --rerun "wrote N rows" while the file kept fewer)."""
    import pyarrow.parquet as pq
    import yaml

    from lovr_hf.cli.app import main as cli_main

    vids = tmp_path / "vids"
    vids.mkdir()
    make_video(vids / "a.mp4", [SceneSpec(60), SceneSpec(66), SceneSpec(60)], 64, 48, 12, seed=1)
    make_video(vids / "b.mp4", [SceneSpec(60), SceneSpec(60)], 64, 48, 12, seed=2)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"input_folder": str(vids), "repo": str(tmp_path / "lovr"),
                                   "caption": {"backend": "dummy"}, "merge": {"llm": "dummy", "cluster_size": 2}}))
    assert cli_main(["-q", "run", "--config", str(cfg)]) == 0
    repo = BenchmarkRepo(tmp_path / "lovr")
    want = repo.read(schema.CLIP_CAPTIONS).to_list()
    shard = repo.root / repo.config_files()[schema.CLIP_CAPTIONS][0]
    pq.write_table(pq.read_table(shard).slice(0, len(want) - 2), shard)
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy"]) == 0
    assert repo.read(schema.CLIP_CAPTIONS).to_list() == want
    pq.write_table(pq.read_table(shard).slice(0, 1), repo.root / repo.config_files()[schema.CLIP_CAPTIONS][0])
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy", "--rerun"]) == 0
    assert repo.read(schema.CLIP_CAPTIONS).to_list() == want and repo.verify() == {}
