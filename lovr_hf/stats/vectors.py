"""The one L2 normalisation of lovr_hf: embedders, embedding stages and the retrieval maths all normalise
rows the same way (float32, row-wise), so a cosine score means one thing everywhere."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np


def l2_normalize(x: Any, *, zero_rows: Literal["keep", "raise"] = "keep") -> np.ndarray:
    """Row-wise L2 normalisation in float32.

    ``zero_rows="keep"`` (embedders: an empty input may embed to zeros): an all-zero row stays zero.
    ``zero_rows="raise"`` (ranking with ``normalize=True``): an all-zero row has no direction, and ranking it
    would score every candidate 0, so it is refused instead.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if zero_rows == "raise" and (norms == 0).any():
        raise ValueError("cannot L2-normalise an all-zero embedding")
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
