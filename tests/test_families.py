"""The model family table: lookup (Hub ids, local folders by model_type + name + tokenizer), the per-family
defaults of both protocols, the channel-swap wrapper of `--protocol original`, and the generated docs."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from lovr_hf.backends.base import Embedder
from lovr_hf.backends.embedders.families import DEFAULT_FAMILY, family_for, get_family, render_docs
from lovr_hf.backends.standins.testing import DummyEmbedder
from lovr_hf.evaluation.models import (
    EmbedConfig,
    check_embedder,
    default_interval,
    effective_dtype,
    make_embedder,
    model_payload,
    protocol_slug,
    resolve_backend,
    resolve_family,
    resolved_interval,
)
from lovr_hf.evaluation.protocols import ChannelSwapEmbedder, has_native_video, wrap_channel_swap

ROOT = Path(__file__).resolve().parents[1]

HUB = {  # the paper's model ids -> (family, adapter, interval); no --backend needed
    "openai/clip-vit-base-patch32": ("clip", "transformers", 10),
    "google/siglip-base-patch16-224": ("siglip", "transformers", 30),
    "google/siglip2-base-patch16-224": ("siglip2", "transformers", 30),
    "facebook/metaclip-h14-fullcc2.5b": ("metaclip", "transformers", 30),
    "jinaai/jina-clip-v2": ("jina-clip", "jina", 30),
    "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K": ("open_clip", "open_clip", 30),
}


@pytest.mark.parametrize("model", sorted(HUB))
def test_hub_ids_pick_their_family_and_adapter(model: str) -> None:
    fam, backend, interval = HUB[model]
    assert family_for(model).name == fam
    assert resolve_backend(model) == backend
    assert default_interval(model) == interval == resolved_interval(EmbedConfig(model=model))
    assert resolved_interval(EmbedConfig(model=model, protocol="original")) == interval


def _folder(tmp_path: Path, name: str, model_type: str, tokenizer: str | None = None) -> str:
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": model_type}))
    if tokenizer:
        (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer}))
    return str(d)


def test_local_folders_by_model_type_name_and_tokenizer(tmp_path: Path, tiny: dict[str, str]) -> None:
    assert family_for(tiny["clip"]).name == "clip" and default_interval(tiny["clip"]) == 10
    assert family_for(tiny["siglip"]).name == "siglip"
    # MetaCLIP is a CLIPModel: a local MetaCLIP folder is metaclip like facebook/metaclip-..., not "clip"
    meta = tmp_path / "metaclip-h14-fullcc2.5b"
    shutil.copytree(tiny["clip"], meta)
    assert family_for(str(meta)).name == "metaclip"
    assert default_interval(str(meta)) == default_interval("facebook/metaclip-h14-fullcc2.5b") == 30
    # the HF cache layout: models--org--name/snapshots/<hash>
    snap = _folder(tmp_path, "models--facebook--metaclip-b16-fullcc2.5b/snapshots/0123abcd", "clip")
    assert family_for(snap).name == "metaclip"
    assert family_for(_folder(tmp_path, "plain/weights", "clip")).name == "clip"
    # fixed-resolution SigLIP2 checkpoints are model_type "siglip" with a Gemma tokenizer
    assert family_for(_folder(tmp_path, "a/weights", "siglip", "GemmaTokenizer")).name == "siglip2"
    assert family_for(_folder(tmp_path, "b/weights", "siglip", "SiglipTokenizer")).name == "siglip"
    assert family_for(_folder(tmp_path, "c/my-siglip2-run", "siglip")).name == "siglip2"
    # an explicit family wins over everything; nothing matched: the template default
    cfg = EmbedConfig(model=tiny["clip"], family="metaclip")
    assert resolve_family(cfg).name == "metaclip" and resolved_interval(cfg) == 30
    assert family_for(_folder(tmp_path, "d/weights", "bert")) is None
    assert resolve_family(EmbedConfig(model="some/unknown-model")) is DEFAULT_FAMILY
    assert resolve_family(EmbedConfig(model="dummy")) is DEFAULT_FAMILY
    oc = tmp_path / "siglip-named-open-clip-folder"
    oc.mkdir()
    (oc / "open_clip_config.json").write_text("{}")
    assert family_for(str(oc)).name == "open_clip" and resolve_backend(str(oc)) == "open_clip"
    with pytest.raises(KeyError, match="unknown model family"):
        get_family("nope")


def test_family_rows_record_what_the_original_did() -> None:
    clip = get_family("clip")
    assert (clip.original_interval, clip.original_bgr, clip.original_dtype) == (10, True, "float16")
    assert "run_clip.sh --encode_video --interval 10" in clip.original_source
    for name in ("siglip", "siglip2", "metaclip"):
        fam = get_family(name)
        assert fam.original_interval is None and fam.interval == 30 and fam.original_bgr  # 30: assumed
        assert "00ca611" in fam.original_source and fam.original_text
    assert "NOT lower-cased" in get_family("siglip2").original_text
    assert "padding=True" in get_family("siglip").original_text
    assert get_family("jina-clip").original_interval == 30  # HEAD run_jina-clip-v2.sh --encode_video


def test_protocol_settings_checks_and_fingerprint(tiny: dict[str, str]) -> None:
    lovr = EmbedConfig(model=tiny["clip"])
    orig = EmbedConfig(model=tiny["clip"], protocol="original")
    assert "protocol" not in model_payload(lovr)  # fingerprints of lovr runs are unchanged
    assert model_payload(orig)["protocol"]["bgr_frames"] is True
    assert model_payload(orig) != model_payload(lovr)
    assert model_payload(EmbedConfig(model="x/y", family="clip")) != model_payload(EmbedConfig(model="x/y"))
    with pytest.raises(ValueError, match="text-mode"):
        check_embedder(EmbedConfig(model=tiny["clip"], protocol="original", text_mode="chunk-mean"))
    with pytest.raises(ValueError, match="num-frames"):
        check_embedder(EmbedConfig(model=tiny["clip"], protocol="original", num_frames=8))
    with pytest.raises(ValueError, match="protocol must be"):
        check_embedder(EmbedConfig(model=tiny["clip"], protocol="paper"))
    check_embedder(EmbedConfig(model=tiny["clip"], protocol="original", interval=5))  # the original had --interval
    assert effective_dtype(EmbedConfig(model=tiny["clip"], protocol="original", device="cpu")) == "auto"
    assert protocol_slug("m", "lovr") == "m" and protocol_slug("m", "original") == "m--original"


def test_original_wraps_the_embedder_and_swaps_channels(tiny: dict[str, str], scene_frames: np.ndarray) -> None:
    plain = make_embedder(EmbedConfig(model=tiny["clip"], device="cpu", dtype="float32"))
    swapped = make_embedder(EmbedConfig(model=tiny["clip"], device="cpu", dtype="float32", protocol="original"))
    assert not isinstance(plain, ChannelSwapEmbedder) and isinstance(swapped, ChannelSwapEmbedder)
    frames = np.ascontiguousarray(scene_frames)
    np.testing.assert_allclose(swapped.embed_frames(frames),
                               plain.embed_frames(np.ascontiguousarray(frames[..., ::-1])), atol=1e-6)
    assert not np.allclose(swapped.embed_frames(frames), plain.embed_frames(frames), atol=1e-3)
    texts = ["a red car", "a dog " * 60]
    np.testing.assert_allclose(swapped.embed_text(texts), plain.embed_text(texts), atol=1e-6)  # text untouched
    # the stage reads the wrapped embedder's interface: limits, helpers, model id, no fake video tower
    assert swapped.max_text_tokens == plain.max_text_tokens == 77
    assert swapped.text_chunk_ids(texts[1]) == plain.text_chunk_ids(texts[1])
    assert swapped.model_id() == plain.model_id() and swapped.video_input == "frames"
    assert not has_native_video(swapped)
    assert wrap_channel_swap(swapped) is swapped  # never swapped twice
    restored = pickle.loads(pickle.dumps(swapped))
    np.testing.assert_allclose(restored.embed_frames(frames), swapped.embed_frames(frames), atol=1e-6)


class _Tower(DummyEmbedder):
    seen: list[np.ndarray] = []

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        _Tower.seen.append(np.array(frames))
        return self.embed_frames(frames).mean(axis=0)


def test_native_video_towers_get_swapped_frames_too(scene_frames: np.ndarray) -> None:
    wrapped = wrap_channel_swap(_Tower())
    assert has_native_video(wrapped) and not has_native_video(wrap_channel_swap(DummyEmbedder()))
    wrapped.embed_video(scene_frames)
    np.testing.assert_array_equal(_Tower.seen[-1], scene_frames[..., ::-1])
    assert isinstance(wrapped, Embedder)
    # the dummy has no family row: the original's template (BGR) applies under --protocol original
    assert isinstance(make_embedder(EmbedConfig(model="dummy", protocol="original")), ChannelSwapEmbedder)
    assert not isinstance(make_embedder(EmbedConfig(model="dummy")), ChannelSwapEmbedder)


class _Declares(DummyEmbedder):
    requires_remote_code = True
    original_oracle_frame = True
    original_revision = 7
    decode_size = (32, 24)


def test_the_wrapper_reports_every_capability_the_embedder_declares() -> None:
    """The capabilities are class attributes of the Embedder ABC, so the wrapper's own defaults (False, None)
    would hide the wrapped embedder's values unless it delegates each one."""
    wrapped = wrap_channel_swap(_Declares())
    assert (wrapped.requires_remote_code, wrapped.original_oracle_frame, wrapped.original_revision,
            wrapped.decode_size) == (True, True, 7, (32, 24))
    plain = wrap_channel_swap(DummyEmbedder())
    assert (plain.requires_remote_code, plain.original_oracle_frame, plain.original_revision,
            plain.decode_size) == (False, False, None, None)
    # every value the ABC declares (not a method) is delegated, so a capability added later cannot be hidden
    declared = {n for k in Embedder.__mro__ if k is not object for n, v in vars(k).items()
                if not n.startswith("_") and (isinstance(v, property) or not callable(v))}
    assert {"name", "decode_size", "requires_remote_code", "video_input"} <= declared
    assert all(isinstance(vars(ChannelSwapEmbedder).get(n), property) for n in declared), declared


def test_docs_families_md_is_generated_from_the_table() -> None:
    assert (ROOT / "docs" / "families.md").read_text() == render_docs()


def test_every_familys_reproduce_command_parses_and_picks_that_family() -> None:
    """The "reproduce (GPU)" command of docs/families.md is a real `lovr eval` command line: it parses, asks for
    the original protocol, brings the consent its family needs, and its model resolves to that family and
    adapter (placeholders filled in with a name the family's own rule matches)."""
    import shlex

    from lovr_hf.backends.embedders import families as fam_mod
    from lovr_hf.cli.app import build_parser
    from lovr_hf.cli.common import config_from_args
    from lovr_hf.evaluation.scoring import EvalConfig

    fill = {"<model>": "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "<mteb model name>": "some-org/video-embedder",
            "<checkout>": "/opt/VideoCLIP-XL"}
    checked = []
    for fam in [*fam_mod.families(), DEFAULT_FAMILY]:
        cmd = fam.command().split(" && ")[-1]
        for k, v in fill.items():
            cmd = cmd.replace(k, v)
        argv = shlex.split(cmd)
        assert argv[:2] == ["lovr", "eval"], cmd
        args = build_parser("eval").parse_args(argv[1:])
        cfg = config_from_args(EvalConfig, args, model=args.models[0])
        assert cfg.protocol == "original" and cfg.device == "cuda"
        assert cfg.trust_remote_code == fam.remote_code, fam.name
        if fam is DEFAULT_FAMILY:
            continue
        got = resolve_family(cfg)
        assert got.name == fam.name and resolve_backend(cfg.model, cfg.backend) == fam.backend, \
            (fam.name, got.name)
        checked.append(fam.name)
    assert {"clip", "siglip2", "videoclip_xl", "languagebind", "gme", "mm_embed", "internvideo2"} <= set(checked)
