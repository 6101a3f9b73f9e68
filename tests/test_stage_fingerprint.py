"""The declarative fingerprint of :class:`lovr_hf.engine.stage.Stage` (``fingerprint_fields``,
``fingerprint_config``, ``fingerprint_extra``): the default payload hashes exactly what it hashed before (existing
work folders keep their names), and a stage that declares its normalisation instead of overriding
``fingerprint_payload`` gets the same fingerprint as its override (the adoption path, shown for segment,
caption and materialize)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import CaptionStage
from lovr_hf.engine.stage import Stage
from lovr_hf.engine.workdir import stable_hash
from lovr_hf.hub.materialize import MaterializeConfig, MaterializeStage
from lovr_hf.redact import redact
from lovr_hf.segment.stage import SegmentConfig, SegmentStage
from tests.test_stage import ToyConfig, ToyStage


def test_default_payload_is_the_one_existing_work_folders_are_named_after(tmp_path: Path) -> None:
    for cfg in (ToyConfig(), dataclasses.replace(ToyConfig(), batch_size=5)):
        st = ToyStage(cfg)
        old = dataclasses.asdict(cfg)
        for f in st.runtime_fields:
            old.pop(f, None)
        assert st.fingerprint() == stable_hash({"stage": st.name, "version": st.version, "config": redact(old)})


def test_fingerprint_fields_select_what_changes_the_output() -> None:
    class Narrow(ToyStage):
        fingerprint_fields: ClassVar[tuple[str, ...] | None] = ("batch_size",)

        def fingerprint_extra(self) -> dict[str, Any]:
            return {"prompt_hash": "abc"}

    payload = Narrow(ToyConfig(batch_size=3)).fingerprint_payload()
    assert payload["config"] == {"batch_size": 3} and payload["prompt_hash"] == "abc"
    assert Narrow(ToyConfig(batch_size=3)).fingerprint() != Narrow(ToyConfig(batch_size=4)).fingerprint()


class LegacySegment(SegmentStage):
    """SegmentStage's fingerprint as its ``fingerprint_payload`` override computed it before it declared its
    normalisation (the oracle: existing work folders are named after it)."""

    def fingerprint_payload(self) -> dict[str, Any]:
        payload = Stage.fingerprint_payload(self)
        cfg = payload["config"] = redact(dataclasses.asdict(self.config))
        cfg["output_dir"] = self.clips_dir
        cfg["clip_layout"] = self.layout
        cfg["downscale"] = str(cfg["downscale"]).lower()
        if cfg["clip_mode"] != "exact":
            for k in ("crf", "preset", "audio"):
                cfg.pop(k, None)
        if cfg["clip_mode"] == "virtual":
            cfg.pop("output_dir", None)
            cfg.pop("clip_layout", None)
        if not cfg["adaptive"]:
            for k in ("min_clips", "max_clips", "max_adaptive_iter"):
                cfg.pop(k, None)
        for f in self.runtime_fields:
            cfg.pop(f, None)
        return payload


@pytest.mark.parametrize("kw", [{}, {"clip_mode": "copy"}, {"clip_mode": "virtual", "downscale": 3},
                                {"adaptive": True, "threshold": 3.0}])
def test_segment_declares_its_fingerprint_unchanged(tmp_path: Path, kw: dict[str, Any]) -> None:
    cfg = SegmentConfig(**kw)
    args = (cfg, tmp_path / "clips", str(tmp_path))
    assert SegmentStage(*args).fingerprint() == LegacySegment(*args).fingerprint()
    assert "fingerprint_payload" not in vars(SegmentStage)  # declared, not coded


def test_caption_and_materialize_declare_it_unchanged(tmp_path: Path) -> None:
    class LegacyCaption(CaptionStage):
        def fingerprint_payload(self) -> dict[str, Any]:
            cfg = dataclasses.asdict(self.config)
            for f in self.runtime_fields:
                cfg.pop(f, None)
            cfg.pop("prompt_file", None)
            return {"stage": self.name, "version": self.version, "config": redact(cfg),
                    "prompt_hash": self.prompt_hash()}

    class LegacyMaterialize(MaterializeStage):
        def fingerprint_payload(self) -> dict[str, Any]:
            cfg = dataclasses.asdict(self.config)
            for f in self.runtime_fields:
                cfg.pop(f, None)
            cfg["output_dir"] = self.clips_dir
            return {"stage": self.name, "version": self.version, "config": redact(cfg)}

    cap = CaptionConfig(backend="dummy", backend_options={"api_key": "sk-secret-1234567890"})
    assert CaptionStage(cap, str(tmp_path)).fingerprint() == LegacyCaption(cap, str(tmp_path)).fingerprint()
    margs = (MaterializeConfig(), str(tmp_path), "clips", str(tmp_path))
    assert MaterializeStage(*margs).fingerprint() == LegacyMaterialize(*margs).fingerprint()
    for cls in (CaptionStage, MaterializeStage):
        assert "fingerprint_payload" not in vars(cls)


def test_merge_and_embedding_stages_declare_theirs_unchanged(tmp_path: Path) -> None:
    """Merge and embedding stages name no config block (``fingerprint_config_key = None``): their whole identity
    is ``fingerprint_extra``, and the fingerprint equals what their former overrides hashed."""
    from lovr_hf.evaluation.embed import TextEmbedStage
    from lovr_hf.evaluation.embed_video import VideoEmbedStage
    from lovr_hf.evaluation.models import EmbedConfig, model_payload
    from lovr_hf.merge.config import MergeConfig, llm_identity
    from lovr_hf.merge.stage import ClusterStage, ThemeStage, VideoCaptionStage
    from lovr_hf.prompts import prompt_hash

    mcfg = MergeConfig(llm="dummy", backend_options={"api_key": "sk-secret-1234567890"}, temperature=0.3)
    for cls in (ClusterStage, VideoCaptionStage, ThemeStage):
        st = cls(mcfg)
        legacy = {"stage": st.name, "version": st.version, "llm": llm_identity(mcfg),
                  "settings": {f: getattr(mcfg, f) for f in ("temperature", "seed", *st.settings)},
                  "backend_options": redact(dict(mcfg.backend_options)), "prompts": prompt_hash(*st.prompts)}
        assert st.fingerprint() == stable_hash(legacy), cls.__name__
        assert "sk-secret" not in str(st.fingerprint_payload())
    ecfg = EmbedConfig(model="dummy", text_mode="truncate", max_text_tokens=7)
    text = TextEmbedStage(ecfg, "clip_caption", "dummy")
    assert text.fingerprint() == stable_hash({
        "stage": text.name, "version": text.version, "model": model_payload(ecfg), "output": text.outputs[0],
        "text_mode": "truncate", "max_text_tokens": 7})
    video = VideoEmbedStage(EmbedConfig(model="dummy"), "dummy", str(tmp_path))
    rule = video.class_rule
    assert not rule.oracle
    assert video.fingerprint() == stable_hash({
        "stage": video.name, "version": video.version, "model": model_payload(video.config),
        "output": video.outputs[0], "interval": video.interval, "num_frames": video.config.num_frames or None,
        "protocol": video.config.protocol, "frame_rule": rule.kind})
    for cls in (ClusterStage, TextEmbedStage, VideoEmbedStage, SegmentStage, CaptionStage, MaterializeStage):
        assert not any("fingerprint_payload" in vars(k) for k in cls.__mro__ if k is not Stage), cls.__name__
