"""A tiny video+text model registered in mteb's own model registry, for the MTEB bridge's tests and demos.

:class:`TinyClipVideoEncoder` is an mteb encoder (``mteb.models.abs_encoder.AbsEncoder``) written the way
mteb's own video wrappers are: ``encode`` looks at ``inputs.dataset.features``, a video input gets mteb's
``VideoCollator`` (``num_frames`` uniform frames by mteb's rule), texts get the model's prompt for the prompt
type (mteb's ``get_prompt_name`` lookup in ``model_prompts``, as its sentence-transformers wrapper does). Underneath is a tiny random CLIP (:func:`lovr_hf.tiny.build_tiny_clip`): frame
features mean-pooled. :func:`register_tiny_mteb_video` registers it with a ``ModelMeta`` (video + text).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TINY_MTEB_NAME = "lovr-tiny/clip-video-f4"
QUERY_PROMPT = "A video of "


def _encoder_class() -> type:
    from mteb.models.abs_encoder import AbsEncoder

    class TinyClipVideoEncoder(AbsEncoder):
        """mteb encoder over a tiny CLIP folder: prompts on the query side, 4 frames per video."""

        def __init__(self, model_name: str, revision: str | None = None, *, clip_dir: str, num_frames: int = 4,
                     device: str | None = None, **kwargs: Any) -> None:
            from transformers import CLIPModel, CLIPProcessor

            self.model = CLIPModel.from_pretrained(clip_dir).eval()
            self.processor = CLIPProcessor.from_pretrained(clip_dir)
            self.num_frames = num_frames
            self.model_prompts = {"query": QUERY_PROMPT}
            self.calls: list[dict[str, Any]] = []

        def _text(self, texts: list[str]) -> np.ndarray:
            import torch

            enc = self.processor(text=texts, padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                out = self.model.get_text_features(**enc)
            return (out if torch.is_tensor(out) else out.pooler_output).numpy()

        def _video(self, frames: Any) -> np.ndarray:  # uint8 [T, C, H, W]
            import torch

            pix = self.processor(images=list(frames.permute(0, 2, 3, 1).numpy()), return_tensors="pt")
            with torch.no_grad():
                out = self.model.get_image_features(pixel_values=pix["pixel_values"])
            f = (out if torch.is_tensor(out) else out.pooler_output).numpy()
            f = f / np.linalg.norm(f, axis=1, keepdims=True)
            return f.mean(0)

        def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str,
                   prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            from mteb.models.modality_collators import VideoCollator

            features = inputs.dataset.features
            self.calls.append({"task": task_metadata.name, "prompt_type": prompt_type,
                               "modalities": sorted(k for k in ("text", "video") if k in features)})
            out = []
            if "video" in features:
                inputs.collate_fn = VideoCollator(target_sampling_rate=16000, num_frames=self.num_frames)
                for batch in inputs:
                    out.extend(self._video(v) for v in batch["video"])
                return np.stack(out)
            name = self.get_prompt_name(task_metadata, prompt_type)  # mteb's prompt lookup, then its text
            prompt = self.model_prompts.get(name, "") if name else ""
            for batch in inputs:
                out.append(self._text([prompt + t for t in batch["text"]]))
            return np.concatenate(out)

    return TinyClipVideoEncoder


def register_tiny_mteb_video(clip_dir: str, name: str = TINY_MTEB_NAME, num_frames: int = 4) -> Any:
    """Register the tiny model in mteb's registry under ``name`` (video + text); returns its ModelMeta."""
    from mteb.models.model_meta import ModelMeta

    from lovr_hf.backends.embedders.mteb import register_mteb_model

    meta = ModelMeta(
        loader=_encoder_class(), loader_kwargs={"clip_dir": clip_dir, "num_frames": num_frames},
        name=name, revision="0", release_date=None, languages=["eng-Latn"], modalities=["video", "text"],
        model_type=["dense"], n_parameters=0, n_embedding_parameters=0, memory_usage_mb=0, max_tokens=77,
        embed_dim=16, license="mit", open_weights=True, public_training_code=None, public_training_data=None,
        framework=["PyTorch"], similarity_fn_name="cosine", use_instructions=False, training_datasets=set(),
        reference=None,
    )
    return register_mteb_model(meta)
