"""The picklable map function of :class:`lovr_hf.engine.stage.Stage`: process a batch, commit it atomically.

``datasets`` pickles it into worker processes (``num_proc``): models and clients are loaded lazily in the
process that runs it (``Stage.setup``), never pickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lovr_hf import schema
from lovr_hf.engine.workdir import commit_batch
from lovr_hf.repo import to_arrow


class BatchRunner:
    """The picklable map function: process a batch, commit it atomically, return the primary rows."""

    def __init__(self, stage: Any, work: str, digests: dict[str, str]) -> None:
        self.stage = stage  # a lovr_hf.engine.stage.Stage (not imported: the stage module imports this one)
        self.work = work
        self.digests = digests
        self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage, "work": self.work, "digests": self.digests, "_ready": False}

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not self._ready:
            self.stage.setup()
            self._ready = True
        results = self.stage.process(batch)
        col = self.stage.digest_column
        if col:
            primary = self.stage.outputs[0]
            rows = _as_rows(results.get(primary, []))
            for r in rows:
                r[col] = self.digests.get(str(r[self.stage.input_key]))
            results = {**results, primary: rows}
        tables = {
            cfg: to_arrow(_as_rows(results.get(cfg, [])), schema.features_for(cfg)) for cfg in self.stage.outputs
        }
        keys = [str(k) for k in batch[self.stage.input_key]]
        commit_batch(Path(self.work), tables, keys, self.stage, [self.digests.get(k) for k in keys])
        return tables[self.stage.outputs[0]].to_pydict()


def _as_rows(value: dict[str, list[Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        cols = list(value)
        n = len(value[cols[0]]) if cols else 0
        return [{c: value[c][i] for c in cols} for i in range(n)]
    return list(value)
