"""``lovr``'s exit codes for what escapes a command: usage errors and a full disk are one line (exit 2), a
bug keeps its traceback (exit 1); a mistyped flag shows the subcommand's usage; multi-value flags take both
repeats and comma lists."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest
from _caption_helpers import clip_row
from test_failures import caption_source  # noqa: F401 - fixture

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.repo import BenchmarkRepo


def _lovr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("lovr ")]


def test_run_without_input_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert cli_main(["-q", "run", "--repo", str(tmp_path / "lovr")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _lovr_lines(err) == ["lovr run: input_folder is required (--input_folder or the config file)"]


def test_mistyped_flag_prints_the_subcommand_usage(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["eval", "--modle", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: lovr eval" in err and "unrecognized arguments: --modle x" in err


def test_a_flag_is_taken_only_as_spelled(capsys) -> None:
    """No prefix matching: ``--mod`` is not ``--model`` (nor ``--model-path``); a shortened flag is an error
    with the subcommand's usage instead of silently meaning another flag."""
    with pytest.raises(SystemExit) as e:
        cli_main(["eval", "--mod", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: lovr eval" in err and "unrecognized arguments: --mod x" in err


def _captioned_repo(root: Path, src: Path) -> BenchmarkRepo:
    repo = BenchmarkRepo(root)
    repo.write(schema.CLIPS, [clip_row(src, "v", 1, 0, 60)])
    return repo


def test_full_disk_is_one_line_naming_the_path(caption_source: Path, tmp_path: Path, monkeypatch,  # noqa: F811
                                               capsys) -> None:
    repo = _captioned_repo(tmp_path / "lovr", caption_source)
    target = str(repo.root / "data" / "clip_captions")

    def full(self, config, rows, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", target)

    monkeypatch.setattr(BenchmarkRepo, "write", full)
    monkeypatch.setattr(BenchmarkRepo, "write_table", full, raising=False)
    rc = cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = _lovr_lines(err)
    assert len(lines) == 1 and target in lines[0] and "free space then rerun" in lines[0]


def test_a_bug_keeps_its_traceback_and_exits_1(caption_source: Path, tmp_path: Path, monkeypatch,  # noqa: F811
                                               capsys) -> None:
    repo = _captioned_repo(tmp_path / "lovr", caption_source)
    import lovr_hf.cli.caption as caption_mod

    def broken(*a, **k):
        return None.missing  # a programming error in lovr_hf

    monkeypatch.setattr(caption_mod, "caption", broken)
    assert cli_main(["-q", "caption", "--repo", str(repo.root), "--backend", "dummy"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "AttributeError" in err and "a bug" in err


def test_multi_value_flags_take_repeats_and_comma_lists() -> None:
    from lovr_hf.cli.common import split_list
    from lovr_hf.cli.run import add_arguments, overrides_from_args
    from lovr_hf.pipeline import load_config

    assert split_list(["a,b", "c", " ,d"]) == ["a", "b", "c", "d"] and split_list(None) == []
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--input_folder", "v", "--eval-models", "m1,m2", "--eval-models", "m3",
                         "--api-base", "http://both/v1", "--merge-api-base", "http://merge/v1"])
    cfg = load_config(None, overrides_from_args(args))
    assert cfg.eval_models == ["m1", "m2", "m3"]
    assert cfg.caption.api_base == "http://both/v1" and cfg.merge.api_base == "http://merge/v1"
    args = p.parse_args(["--input_folder", "v", "--caption-api-base", "http://cap/v1"])
    cfg = load_config(None, overrides_from_args(args))
    assert cfg.caption.api_base == "http://cap/v1" and cfg.merge.api_base is None


def test_eval_model_comma_list_evaluates_each(tmp_path: Path, eval_source: Path) -> None:
    from test_embed import make_repo

    repo = make_repo(tmp_path / "lovr", eval_source)
    models = ["dummy", "_embed_helpers:NativeTower"]
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", ",".join(models), "--topk", "1",
                     "--bootstrap", "0", "--interval", "30"]) == 0
    assert {r["model"] for r in repo.read(schema.RESULTS)} == set(models)


def test_a_keyerror_bug_in_eval_is_not_a_usage_error(tmp_path, monkeypatch, capsys) -> None:
    """``lovr eval`` turned every ``KeyError`` into exit 2 (a usage error), so a dictionary bug looked like the
    user's mistake; only a name the user gave that is not there (UnknownName) is exit 2 now."""
    import lovr_hf.evaluation.run as evaluation
    from lovr_hf import schema
    from lovr_hf.repo import BenchmarkRepo

    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.VIDEOS, [])  # a benchmark repo (card written), nothing scored yet
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--compare", "no-such-model"]) == 2

    def buggy(*args, **kwargs):
        return {}["embeddings"]  # a KeyError raised by a bug, not by a name the user gave

    monkeypatch.setattr(evaluation, "evaluate_models", buggy)
    capsys.readouterr()
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "dummy"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_valueerror_bug_in_eval_is_not_a_usage_error(tmp_path, monkeypatch, capsys) -> None:
    """``lovr eval`` turned every ``ValueError`` into exit 2, so a ValueError raised by a bug (here from numpy,
    deep inside a library) read as the user's mistake; exit 2 is for usage errors only
    (:func:`lovr_hf.cli.errors.exit_code_for`): a bug exits 1 with its traceback."""
    import numpy as np

    import lovr_hf.evaluation.run as evaluation
    from lovr_hf import schema
    from lovr_hf.repo import BenchmarkRepo

    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.VIDEOS, [])

    def buggy(*args, **kwargs):
        return np.zeros(4).reshape(3)  # ValueError: cannot reshape (a bug, not the user's input)

    monkeypatch.setattr(evaluation, "evaluate_models", buggy)
    capsys.readouterr()
    assert cli_main(["-q", "eval", "--repo", str(repo.root), "--model", "dummy"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "cannot reshape" in err



def test_every_flag_of_every_command_has_help_and_shows_its_default(capsys) -> None:
    """``--threshold``, ``--min_clip_duration``, ``--revision``, ... were listed with nothing beside them."""
    import argparse

    from lovr_hf.cli.app import COMMANDS, build_parser

    for name in COMMANDS:
        sub = build_parser(name).command_parser
        bare = [a.option_strings[0] for a in sub._actions
                if a.option_strings and a.help != argparse.SUPPRESS and not (a.help or "").strip()]
        assert not bare, f"lovr {name}: flags without help: {bare}"
        with pytest.raises(SystemExit) as exit_info:
            cli_main([name, "--help"])
        assert exit_info.value.code == 0
    all_help = " ".join(capsys.readouterr().out.split())  # every command's --help, one after the other
    # eval's --seed had no help text: it says what it does, and its default shows
    assert "--seed SEED seed of the --clip-queries draw (recorded on every row) (default: 0)" in all_help


def test_no_flag_relies_on_the_generic_help_fallback() -> None:
    """The fallback ("default: X", "a switch") is a safety net: every flag of every command says what it
    does (before: --threshold, --min_clip_duration, --clip_mode of lovr run, --revision, --dtype, ... did not)."""
    import argparse

    from lovr_hf.cli.app import COMMANDS, _help_for_every_flag, flags_on_generic_help

    assert {name: flags_on_generic_help(name) for name in COMMANDS} == {name: [] for name in COMMANDS}
    # the net itself still catches a flag added without help
    p = argparse.ArgumentParser()
    p.add_argument("--new-flag", default=3)
    assert _help_for_every_flag(p) == ["--new-flag"] and p._actions[-1].help == "default: %(default)s"
