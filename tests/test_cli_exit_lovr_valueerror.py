"""A ``ValueError`` lovr_hf raises itself to refuse a request is a usage error (one line, exit 2) wherever in the
package it is raised, not only under ``lovr_hf/cli/`` (the test looked there after the layout move)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lovr_hf.cli.app import main as cli_main


def test_a_bad_option_in_a_run_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("input_folder: x\nsegment:\n  no_such_option: 1\n")
    assert cli_main(["-q", "run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lovr run: unknown SegmentConfig option(s): no_such_option"], err
    assert not (tmp_path / "lovr").exists()
