"""The original ``caption_generator.py`` mode (``--video-folder --jsonl-file --result-file``) on real clip files:
original fields kept, resume by the result file, original chunking, failed clips retried, not misfiled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _caption_helpers import RecordingCaptioner

from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.jsonl import caption_jsonl, original_chunk
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.engine.control import RunControl
from lovr_hf.video.frames import caption_num_frames

FPS = 12
CLIPS = {1: 120, 2: 96, 3: 4, 4: 60}  # slice -> frames: 10 s, 8 s, 4 frames (skipped), 5 s


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Clip files laid out like the original's ``<vid>/<vid>-Scene-NNN.mp4``, plus a corrupt one."""
    root = tmp_path_factory.mktemp("jsonl_clips")
    for k, n in CLIPS.items():
        make_video(root / "v" / f"v-Scene-{k:03d}.mp4", [SceneSpec(n)], 48, 32, FPS, seed=k)
    (root / "v" / "v-Scene-006.mp4").write_bytes(b"not a video at all")
    return root


def lines(k: int, **extra) -> dict:
    return {"vid": "v", "slice_num": k, "path": f"v/v-Scene-{k:03d}.mp4", **extra}


def write_input(path: Path, infos: list[dict]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in infos), encoding="utf-8")
    return path


def read_out(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_original_mode_through_the_cli(folder: Path, tmp_path: Path) -> None:
    infos = [lines(1, duration=10.0, source="yt"), lines(2), lines(3), lines(5), lines(6), lines(4),
             lines(1, duration=99.0)]  # 5: missing file, 6: corrupt file, last: a duplicate key
    jsonl = write_input(tmp_path / "clips.jsonl", infos)
    out = tmp_path / "out" / "caps.jsonl"
    args = ["-q", "caption", "--backend", "recording", "--video-folder", str(folder), "--jsonl-file", str(jsonl),
            "--result-file", str(out), "--batch-size", "2"]
    RecordingCaptioner.calls.clear()
    assert cli_main(args) == 0
    got = read_out(out)
    # input order, every input field kept, plus the caption; failed clips have no line (retried next time)
    assert [(g["slice_num"], g["status"]) for g in got] == [(1, "ok"), (2, "ok"), (3, "skipped"), (4, "ok")]
    assert got[0] == {**infos[0], "cap": got[0]["cap"], "status": "ok"}
    for g in got:
        if g["status"] == "ok":  # each caption belongs to its own clip (the original could misfile them)
            n = caption_num_frames(CLIPS[g["slice_num"]], CLIPS[g["slice_num"]] / FPS)
            assert g["cap"].startswith(f"The clip shows {n} frames of 48x32 pixels")
    assert got[2]["cap"] == ""
    assert len(RecordingCaptioner.calls) == 3
    # resume: nothing is captioned again; --strict reports the two clips that have no caption
    RecordingCaptioner.calls.clear()
    assert cli_main(args + ["--strict"]) == 1
    assert read_out(out) == got and RecordingCaptioner.calls == []
    # a fixed clip is picked up by the next run, the others are left alone
    make_video(folder / "v" / "v-Scene-005.mp4", [SceneSpec(36)], 48, 32, FPS, seed=5)
    assert cli_main(args) == 0
    assert [g["slice_num"] for g in read_out(out)] == [1, 2, 3, 5, 4] and len(RecordingCaptioner.calls) == 1
    (folder / "v" / "v-Scene-005.mp4").unlink()
    # --rerun starts the result file afresh
    RecordingCaptioner.calls.clear()
    assert cli_main(args + ["--rerun"]) == 0
    assert len(read_out(out)) == 4 and len(RecordingCaptioner.calls) == 3


def test_lines_of_the_original_script_count_as_done(folder: Path, tmp_path: Path) -> None:
    jsonl = write_input(tmp_path / "clips.jsonl", [lines(1), lines(2), lines(4)])
    out = tmp_path / "caps.jsonl"
    theirs = {**lines(2), "cap": "A caption written by the original script."}
    out.write_text(json.dumps(theirs) + "\n" + json.dumps(lines(9, cap="not requested")) + "\n" + '{"vid": "v", "sl',
                   encoding="utf-8")  # plus a line for another clip and a torn last line
    RecordingCaptioner.calls.clear()
    summary = caption_jsonl(str(folder), str(jsonl), str(out), CaptionConfig(backend="recording"))
    got = read_out(out)
    assert [g["slice_num"] for g in got] == [1, 2, 4] and got[1] == theirs  # kept verbatim
    assert (summary.already_done, summary.written, summary.failed) == (1, 3, 0)
    assert len(RecordingCaptioner.calls) == 2


def test_original_chunking(folder: Path, tmp_path: Path) -> None:
    assert original_chunk(list(range(7)), 3, 0) == [0, 1, 2] and original_chunk(list(range(7)), 3, 2) == [6]
    with pytest.raises(ValueError):
        original_chunk([1, 2], 2, 2)
    jsonl = write_input(tmp_path / "clips.jsonl", [lines(1), lines(2), lines(4)])
    parts = []
    for idx in range(2):
        out = tmp_path / f"caps-{idx}.jsonl"
        caption_jsonl(str(folder), str(jsonl), str(out), CaptionConfig(backend="dummy"),
                      RunControl(num_chunks=2, chunk_idx=idx))
        parts.append([g["slice_num"] for g in read_out(out)])
    assert parts == [[1, 2], [4]]  # contiguous chunks of ceil(3 / 2) lines, as the original split them


def test_failed_calls_are_retried_and_bad_paths_refused(folder: Path, tmp_path: Path) -> None:
    jsonl = write_input(tmp_path / "clips.jsonl", [lines(1), lines(2), {"vid": "v", "slice_num": 7,
                                                                        "path": "../outside.mp4"}])
    out = tmp_path / "caps.jsonl"
    flaky = CaptionConfig(backend="dummy", backend_options={"fail_frame_counts": [caption_num_frames(96, 8.0)]})
    summary = caption_jsonl(str(folder), str(jsonl), str(out), flaky)
    assert [g["slice_num"] for g in read_out(out)] == [1] and summary.failed == 2
    assert "refusing a clip" in summary.errors["v-2"] and "outside the video folder" in summary.errors["v-7"]
    summary = caption_jsonl(str(folder), str(jsonl), str(out), CaptionConfig(backend="dummy"))
    assert [g["slice_num"] for g in read_out(out)] == [1, 2] and summary.failed == 1
    write_input(jsonl, [{"vid": "v", "path": "v/v-Scene-001.mp4"}])
    with pytest.raises(ValueError, match="missing slice_num"):
        caption_jsonl(str(folder), str(jsonl), str(out), CaptionConfig(backend="dummy"))
    with pytest.raises(SystemExit):
        cli_main(["-q", "caption", "--backend", "dummy", "--jsonl-file", str(jsonl)])
