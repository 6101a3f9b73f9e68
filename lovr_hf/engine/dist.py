"""Which share of the work this process owns: accelerate/torchrun ranks, or the original manual chunks.

``--num-chunks N --chunk-idx i`` (the original LoVR flags) and ``accelerate launch`` both reduce to a
(rank, world_size) pair; shards are cut from the *full* input in a fixed order, so a rerun of chunk i
always owns the same items whatever has been finished since.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    #: True when launched by accelerate/torchrun: ranks can wait for each other, rank 0 gathers
    launched: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"shard {self.rank + 1}/{self.world_size}" if self.world_size > 1 else "single process"


def current_shard(num_chunks: int | None = None, chunk_idx: int | None = None) -> Shard:
    """Manual chunk flags win; else the launcher's environment (RANK/WORLD_SIZE); else one process."""
    if num_chunks is not None and num_chunks > 1:
        idx = chunk_idx or 0
        if not 0 <= idx < num_chunks:
            raise ValueError(f"--chunk-idx must be in [0, {num_chunks}), got {idx}")
        return Shard(idx, num_chunks, launched=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return Shard(int(os.environ.get("RANK", "0")), world, launched=True)
    return Shard()


def barrier(shard: Shard) -> None:
    """Wait for every rank of a launched job (no-op for manual chunks and single processes)."""
    if not shard.launched or shard.world_size <= 1:
        return
    import torch
    from accelerate import PartialState

    # without cpu=True a CPU-only multi-process launch reports DistributedType.NO and does not wait
    PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def shard_range(n: int, shard: Shard) -> range:
    """Contiguous block of ``n`` items for ``shard`` (same rule as datasets.split_dataset_by_node)."""
    per, extra = divmod(n, shard.world_size)
    start = shard.rank * per + min(shard.rank, extra)
    return range(start, start + per + (1 if shard.rank < extra else 0))


def local_device() -> str:
    """cuda:<LOCAL_RANK> when a GPU is there, else cpu: each process loads its model on its own device."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "cpu"
