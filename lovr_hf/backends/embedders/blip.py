"""BLIP image–text retrieval features through transformers ``BlipForImageTextRetrieval``.

BLIP retrieves with its ITC (image–text contrastive) features: the [CLS] state of the ViT through
``vision_proj`` and the [CLS] state of the BERT text encoder (run without the image) through ``text_proj``,
both L2-normalised — exactly what the model's own forward compares when called with
``use_itm_head=False``. The ITM head (text cross-attending to one image) scores a text–image *pair*, which
a retrieval index over 40k clips cannot afford, so it is not used. ``BlipModel`` (the deprecated,
captioning-pretrained class) has ``get_text_features`` too, but its projections were not trained for
retrieval; ITM checkpoints (``Salesforce/blip-itm-*``) are required and anything else is refused.

The original ``run_blip.sh`` runs ``BLIP_test.py``, which is in no commit of the original repository; the
gme script was derived from it (its blocks are still marked "BLIP encode api"), so the frame pipeline is
taken to be the common one: frames every ``--interval``, R/B swapped, mean of normalised frame features.
"""

from __future__ import annotations

from typing import Any

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.families import FRAMES, Family, register_family
from lovr_hf.backends.embedders.transformers import TransformersEmbedder

DEFAULT_MODEL = "Salesforce/blip-itm-base-coco"


@EMBEDDERS.register("blip")
class BlipEmbedder(TransformersEmbedder):
    """``BlipForImageTextRetrieval`` ITC features (same options as the ``transformers`` adapter)."""

    name = "blip"

    def __init__(self, model_path: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        super().__init__(model_path, **kwargs)

    def _model_class(self) -> Any:
        from transformers import BlipForImageTextRetrieval

        return BlipForImageTextRetrieval

    def _check_model(self, model: Any) -> None:
        archs = getattr(model.config, "architectures", None) or []
        if archs and "BlipForImageTextRetrieval" not in archs:
            raise TypeError(
                f"{self.model_path} is a {archs[0]} checkpoint: BLIP retrieval needs an image-text retrieval "
                "checkpoint (BlipForImageTextRetrieval, e.g. Salesforce/blip-itm-base-coco); its ITC "
                "projections would be random otherwise"
            )

    def _text_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        out = model.text_encoder(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
        return model.text_proj(out.last_hidden_state[:, 0, :])

    def _image_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        out = model.vision_model(pixel_values=inputs["pixel_values"])
        return model.vision_proj(out.last_hidden_state[:, 0, :])


register_family(Family(
    name="blip", backend="blip", patterns=(r"blip-itm", r"(^|/)blip[-_]"), model_types=("blip",), priority=1,
    video_input=FRAMES, original_interval=None, interval=30, original_bgr=True,
    text="the BERT tokenizer's 512 tokens, truncated; padding longest with its attention mask",
    pooling="ITC features ([CLS] -> vision_proj / text_proj), L2-normalised; frames: mean of normalised "
            "frame features, re-normalised",
    precision="model dtype (auto: bf16 on GPU); original unknown",
    hub_ids=(DEFAULT_MODEL, "Salesforce/blip-itm-large-coco"),
    notes="run_blip.sh runs BLIP_test.py, which no commit contains: checkpoint, interval and text length of "
          "the paper's row are not recorded; BGR assumed from the gme script derived from it",
))
