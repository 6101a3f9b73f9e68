"""Regenerates processors_tf4.npz: what the original scripts' image processors made of fixed frames, computed
with the transformers release of the original run (4.51.3, before 4.52 made the torchvision processors the
default), so tests/test_oracle_processors.py can hold transformers 5's processors to it without installing a
second transformers. Run it outside the project's environment, e.g.:

    pip install --no-deps --target /tmp/tf4 transformers==4.51.3 tokenizers==0.21.1 huggingface_hub==0.30.2
    PYTHONPATH=/tmp/tf4 python tests/data/oracle/make_processor_reference.py

Each family's preprocessor_config.json (processor_configs.json: the published configs' values at 32 px
instead of 224) is loaded the way its original script loaded it: ``AutoProcessor.from_pretrained(path)``
(siglip, metaclip: no ``use_fast``, so the slow PIL processor) or ``use_fast=True`` (siglip2).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import transformers
from transformers import AutoImageProcessor

HERE = Path(__file__).parent
USE_FAST = {"siglip": None, "metaclip": None, "siglip2": True}


def frames() -> list[np.ndarray]:
    """Smooth gradients plus noise in three shapes (odd sizes exercise the resize and the crop rounding)."""
    rng = np.random.default_rng(21)
    out = []
    for h, w in ((72, 96), (37, 50), (61, 45)):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
        out.append(np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    return out


def main() -> None:
    configs = json.loads((HERE / "processor_configs.json").read_text())
    result: dict[str, np.ndarray] = {"transformers_version": np.array(transformers.__version__)}
    imgs = frames()
    for i, f in enumerate(imgs):
        result[f"frame_{i}"] = f
    for family, cfg in configs.items():
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "preprocessor_config.json").write_text(json.dumps(cfg))
            proc = AutoImageProcessor.from_pretrained(d, use_fast=USE_FAST[family])
        result[f"{family}_class"] = np.array(type(proc).__name__)
        for i, f in enumerate(imgs):
            result[f"{family}_{i}"] = proc(images=[f], return_tensors="pt")["pixel_values"][0].numpy().astype(np.float32)
    np.savez_compressed(HERE / "processors_tf4.npz", **result)
    print({k: (v.shape if v.ndim else str(v)) for k, v in result.items()})


if __name__ == "__main__":
    main()
