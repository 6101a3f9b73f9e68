"""Torch threads sized to the cores a process may use and that other processes leave free (issue #24)."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from lovr_hf.engine import cpu_budget


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def test_busy_cores_sees_a_cpu_bound_neighbour_but_not_this_process() -> None:
    burner = mp.get_context("spawn").Process(target=_burn, args=(20.0,), daemon=True)
    burner.start()
    try:
        time.sleep(1.0)  # the spawned interpreter is up and spinning
        busy = cpu_budget.busy_cores(0.5)
        assert busy >= 0.4, busy  # the burner gets at least a share of a core, whatever else runs
        assert cpu_budget.cpu_threads(0.5) <= max(1, cpu_budget.cpu_count() - int(busy + 0.5))
    finally:
        burner.terminate()
        burner.join()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_torch_threads_never_exceed_the_affinity_mask() -> None:
    code = ("import os, torch; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "torch.set_num_threads(8); from lovr_hf.engine.cpu_budget import size_torch_threads, cpu_count; "
            "n = size_torch_threads(); print(cpu_count(), n, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout.split()
    assert out == ["1", "1", "1"]
