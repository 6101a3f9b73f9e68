"""How many CPU threads this process should give torch right now.

torch sizes its intra-op pool to every core of the machine. When the process may run on fewer cores
(``taskset``, a container's cpuset) or other processes keep some cores busy, the extra threads spin
and wait for each other: on a 2-core machine with two other CPU-bound processes, a SmolLM2 join took
~150 s with 2 threads where one thread needs a few seconds. :func:`cpu_threads` is the number of cores
this process may use (``os.sched_getaffinity``) minus those other processes keep busy, measured from
``/proc/stat`` over a short window (``os.getloadavg`` where there is no ``/proc``), and at least 1.
"""

from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger(__name__)


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask / container quota, not the host's core count): the one
    definition (the video decode workers size themselves from it too)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _proc_stat() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), idle


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def busy_cores(window_s: float = 0.1) -> float:
    """Cores kept busy by *other* processes, averaged over ``window_s`` (1-min load average as fallback)."""
    a, own0, t0 = _proc_stat(), _own_cpu_seconds(), time.monotonic()
    if a is None:
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)  # the load average counts this process too
        except OSError:
            return 0.0
    time.sleep(window_s)
    b, own1, t1 = _proc_stat(), _own_cpu_seconds(), time.monotonic()
    total, idle = b[0] - a[0], b[1] - a[1]
    if total <= 0:
        return 0.0
    machine = os.cpu_count() or 1
    busy = machine * (total - idle) / total - (own1 - own0) / max(t1 - t0, 1e-6)
    return max(0.0, busy)


def cpu_threads(window_s: float = 0.1) -> int:
    """Threads worth running now: usable cores not kept busy by other processes (at least 1)."""
    usable = cpu_count()
    free = usable - int(busy_cores(window_s) + 0.5)
    return max(1, min(usable, free))


def size_torch_threads(window_s: float = 0.1) -> int:
    """Set torch's intra-op threads to :func:`cpu_threads` (only when it changes) and return the count."""
    import torch

    n = cpu_threads(window_s)
    if torch.get_num_threads() != n:
        logger.info("torch threads: %d -> %d (%d usable cores, others busy)", torch.get_num_threads(), n,
                    cpu_count())
        torch.set_num_threads(n)
    return n
