"""The README's commands as written are tests: a user copies them, so they must run with their defaults.

Only the paths change (the README's ``/data/long_videos`` and ``--repo lovr`` become folders of this test);
every flag and default is the README's own, read from README.md itself so the two cannot drift apart.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lovr_hf import schema
from lovr_hf.cli.app import main as cli_main
from lovr_hf.demo.samples import make_sample_folder
from lovr_hf.repo import BenchmarkRepo

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(prefix: str) -> list[str]:
    """The README's one command line starting with ``prefix`` (a shell line inside a code block), as argv."""
    lines = [ln.strip() for ln in README.read_text().splitlines() if ln.strip().startswith(prefix)]
    assert len(lines) == 1, f"README.md must hold exactly one line starting with {prefix!r}, found {len(lines)}"
    return shlex.split(lines[0])


def test_readme_offline_lovr_run_as_written(tmp_path: Path) -> None:
    """Section 2's offline ``lovr run``: every stage ends ok, exit 0, and every table and clip file is there."""
    argv = readme_command("lovr run --input_folder /data/long_videos --repo lovr --captioner describer")
    assert argv[0] == "lovr"
    videos, repo_dir = tmp_path / "long_videos", tmp_path / "lovr"
    make_sample_folder(videos, durations_s=(24.0, 21.0), width=160, height=96, fps=12)
    argv = [str(videos) if a == "/data/long_videos" else str(repo_dir) if a == "lovr" else a for a in argv[1:]]
    assert cli_main(["-q", *argv]) == 0

    repo = BenchmarkRepo(repo_dir)
    vids = repo.read(schema.VIDEOS).to_list()
    assert len(vids) == 2 and all(v["status"] == schema.OK for v in vids)
    clips = repo.read(schema.CLIPS).to_list()
    assert len(clips) >= 4  # 10 s scenes: at least two clips per video
    for c in clips:
        assert (repo_dir / c["path"]).is_file() or Path(c["path"]).is_file()
    caps = repo.read(schema.CLIP_CAPTIONS).to_list()
    assert len(caps) == len(clips) and all(c["status"] == schema.OK and c["caption"] for c in caps)
    vcaps = repo.read(schema.VIDEO_CAPTIONS).to_list()
    assert len(vcaps) == 2 and all(v["status"] == schema.OK and v["caption"] for v in vcaps)
    results = repo.read(schema.RESULTS).to_list()
    assert {r["direction"] for r in results} >= {"text_to_clip", "clip_to_text", "text_to_video", "video_to_text"}


@pytest.mark.parametrize("command,flag", [("caption", "--backend"), ("run", "--captioner")])
def test_captioner_help_lists_the_describer(command: str, flag: str, capsys) -> None:
    """The offline stand-in the README uses is named where a user looks for captioners."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    helps = re.findall(rf"(?<![\w-]){flag}(?:, \S+)? [A-Z_]+ (.{{0,160}})", out)  # the option's help text
    assert helps and any("describer" in h for h in helps)


DOCS = [README, *sorted((README.parent / "docs").glob("*.md")), README.parent / "metrics" / "lovr_retrieval" / "README.md"]


def _python_imports(path: Path) -> list[str]:
    """Every ``from lovr_hf… import …`` line inside a python code block (or a doctest ``>>>`` line) of ``path``."""
    out, in_python = [], False
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("```"):
            in_python = s in ("```python", "```py") if not in_python else False
            continue
        s = s.removeprefix(">>> ")
        if (in_python or line.strip().startswith(">>>")) and re.match(r"(from lovr_hf[\w.]* import |import lovr_hf)", s):
            out.append(s)
    return out


def test_documented_python_imports_resolve() -> None:
    """The library API the README and docs show (``from lovr_hf.segment import SegmentConfig, segment``, …) is
    importable as written: the layout move had changed the README's lines instead of keeping the imports."""
    lines = [(p.name, ln) for p in DOCS for ln in _python_imports(p)]
    assert any("from lovr_hf.segment import SegmentConfig, segment" == ln for _, ln in lines)
    assert any("from lovr_hf.evaluation import EvalConfig, evaluate_model" in ln for _, ln in lines)
    for name, line in lines:
        namespace: dict = {}
        exec(compile(line, name, "exec"), namespace)  # noqa: S102 - the docs' own import lines
        imported = [n.strip().split(" as ")[-1] for n in line.split(" import ", 1)[1].split(",")]
        assert all(n in namespace for n in imported), (name, line)


def test_every_documented_flag_exists_on_its_command() -> None:
    """Every ``lovr <command> …`` line of the README and docs uses only flags its command has, spelled in full
    (the CLI takes no abbreviations): a renamed or removed flag cannot stay in the docs."""
    from lovr_hf.cli.app import COMMANDS, build_parser

    flags = {cmd: {o for a in build_parser(cmd).command_parser._actions for o in a.option_strings}
             for cmd in COMMANDS}
    seen, wrong = 0, []
    for path in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            for m in re.finditer(r"(?:^|`|\s)lovr ([a-z-]+)((?: [^`|#]*)?)", line):
                if m.group(1) not in COMMANDS:
                    continue
                for flag in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", m.group(2)):
                    seen += 1
                    if flag not in flags[m.group(1)]:
                        wrong.append(f"{path.name}: lovr {m.group(1)} {flag}  ({line.strip()[:90]})")
    assert seen > 50  # the docs' command lines were found at all
    assert not wrong, "\n".join(wrong)
