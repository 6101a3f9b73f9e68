"""Usage errors of ``lovr segment`` are one line on stderr and exit 2 (no traceback, no repo); its flags say
their defaults, and every spelling of the original's flags still parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from lovr_hf.cli.app import build_parser
from lovr_hf.cli.app import main as cli_main


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_input_folder_is_one_line_exit_2_and_no_repo(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "lovr"
    line = _usage_error(["segment", "--input_folder", str(tmp_path / "no such folder"), "--repo", str(repo),
                         "--output_dir", str(tmp_path / "clips")], capsys)
    assert line.startswith("lovr segment: ") and "no such folder" in line and "not a folder" in line
    assert not repo.exists() and not (tmp_path / "clips").exists()


def test_input_folder_without_videos_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "notes.txt").write_text("not a video")
    line = _usage_error(["segment", "--input_folder", str(videos), "--repo", str(tmp_path / "lovr")], capsys)
    assert line.startswith("lovr segment: ") and "holds no video file" in line and ".mkv" in line
    assert not (tmp_path / "lovr").exists()


def test_help_shows_defaults_and_metavar(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["segment", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for text in ("(default 34.0", "(default 5.0", "(default 64)", "(default 100)", "(default exact)",
                 "--max_workers N, --max-workers N"):
        assert text in out, text


def test_original_flag_spellings_still_parse() -> None:
    p = build_parser("segment")
    a = p.parse_args(["segment", "--input_folder", "v", "--output_dir", "o", "--max_workers", "3", "--threshold", "30",
                      "--min_clip_duration", "2.5", "--min_clips", "10", "--max_clips", "20", "--clip_mode", "copy"])
    b = p.parse_args(["segment", "--input-folder", "v", "--output-dir", "o", "--max-workers", "3", "--threshold", "30",
                      "--min-clip-duration", "2.5", "--min-clips", "10", "--max-clips", "20", "--clip-mode", "copy"])
    assert vars(a) == vars(b)
    assert (a.input_folder, a.output_dir, a.num_proc, a.threshold, a.min_clip_duration, a.min_clips, a.max_clips,
            a.clip_mode) == ("v", "o", 3, 30.0, 2.5, 10, 20, "copy")
