"""How a stage runs, as opposed to what it computes: the run control every stage entry function takes.

It lives in the engine (not in the command line that fills it from flags, :mod:`lovr_hf.cli.common`) because
library callers pass it to ``segment(...)``, ``caption(...)``, ``run_pipeline(...)`` as well.
"""

from __future__ import annotations

import dataclasses

from lovr_hf.engine.dist import Shard, current_shard


@dataclasses.dataclass
class RunControl:
    """How a stage runs, as opposed to what it computes (never part of a fingerprint)."""

    repo: str = "lovr"
    num_proc: int | None = None
    num_chunks: int | None = None
    chunk_idx: int | None = None
    rerun: bool = False
    retry_failed: bool = False
    gather_only: bool = False
    allow_partial: bool = False
    strict: bool = False
    debug: bool = False

    def shard(self) -> Shard:
        return current_shard(self.num_chunks, self.chunk_idx)
