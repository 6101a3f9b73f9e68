"""``lovr doctor --fix`` repairs while holding every stage's writer lock: a writer cannot start mid-repair, and a
running writer means no repair at all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lovr_hf.engine import doctor
from lovr_hf.engine.workdir import committed_batches
from lovr_hf.locks import held_locks
from tests.test_doctor import _repo
from tests.test_stage import ToyConfig, ToyStage


def _holders_seen_by_another_process(work_root: Path) -> list[str]:
    code = f"from lovr_hf.locks import held_locks; import json; print(json.dumps(held_locks({str(work_root)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_fix_holds_the_stage_writer_lock_while_it_repairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path)
    batch = committed_batches(ToyStage(ToyConfig()).work_path(repo))[0]
    (batch / "videos.parquet").write_bytes(b"PAR1 garbage")
    seen: list[list[str]] = []
    real = doctor._set_aside

    def watching(b: Path):  # type: ignore[no-untyped-def]
        fix = real(b)

        def run() -> str:
            seen.append(_holders_seen_by_another_process(repo.work_root))  # what a starting writer would find
            return fix()
        return run

    monkeypatch.setattr(doctor, "_set_aside", watching)
    report = doctor.diagnose(repo, fix=True)
    assert any("set aside" in f for f in report.fixed), report.render()
    assert seen and any(h.startswith("toy-0-of-1:") for h in seen[0]), seen
    assert held_locks(repo.work_root) == []  # released afterwards


def test_fix_repairs_nothing_while_a_writer_runs(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    batch = committed_batches(ToyStage(ToyConfig()).work_path(repo))[0]
    (batch / "videos.parquet").write_bytes(b"PAR1 garbage")
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lovr_hf.locks import writer_lock
        with writer_lock({str(repo.work_root)!r}, "toy"):
            print("held", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "held"
        report = doctor.diagnose(repo, fix=True)
        assert not report.fixed and any("a writer is running" in p for p in report.problems), report.render()
        assert batch.is_dir()  # untouched
    finally:
        writer.communicate("")
    assert any("set aside" in f for f in doctor.diagnose(repo, fix=True).fixed)
