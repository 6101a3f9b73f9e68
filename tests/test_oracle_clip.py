"""``--protocol original`` for the clip family against its oracle: OpenAI's ``clip`` package, the library the
original ``CLIP_test.py`` ran (``clip.load`` / ``clip.tokenize`` / ``preprocess``), on one tiny random CLIP
saved in both formats (tests/_oracle_helpers.py).

Layer by layer: token ids of captions whose cleaning matters, pixel tensors of decoded frames, per-item
embeddings, and finally every pass@k of ``lovr import-release`` + ``lovr eval --protocol original`` on a
release in the original layout against the original's computation with the ``clip`` package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _oracle_helpers import (
    TRICKY,
    build_oracle_release,
    build_tiny_openai_clip,
    import_clip,
    original_clip_run,
)
from _release_helpers import DIRECTION_OF, original_calc_pass

from lovr_hf.backends.embedders.openai_clip_original import clean_caption, openai_clip_pixels
from lovr_hf.backends.embedders.transformers import TransformersEmbedder

KS = tuple(range(1, 21))
LONG = "a red car drives past " * 30  # > 77 tokens: truncated, the last id forced to end-of-text


@pytest.fixture(scope="module")
def clip_pkg():
    return import_clip()


@pytest.fixture(scope="module")
def tiny_openai(tmp_path_factory: pytest.TempPathFactory, clip_pkg) -> tuple[str, str]:
    return build_tiny_openai_clip(tmp_path_factory.getbasetemp() / "tiny_openai_clip")


@pytest.fixture(scope="module")
def oracle_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_oracle_release(tmp_path_factory.getbasetemp() / "oracle_release" / "LoVR")


def _embedder(folder: str, protocol: str) -> TransformersEmbedder:
    return TransformersEmbedder(folder, protocol=protocol, device="cpu", dtype="float32", batch_size=4)


def _frames(release: Path, n: int = 3) -> np.ndarray:
    from decord import VideoReader

    path = sorted((release / "video_data" / "long_video_clip").glob("*/*.mp4"))[1]
    vr = VideoReader(str(path))
    return vr.get_batch(list(range(0, len(vr), 10))[:n]).asnumpy()


def test_caption_cleaning_is_clip_tokenize_s(clip_pkg) -> None:
    """The text that reaches the BPE is the one ``clip``'s own tokenizer cleans it into."""
    from clip.simple_tokenizer import basic_clean, whitespace_clean

    for text in [*TRICKY, LONG]:
        assert clean_caption(text) == whitespace_clean(basic_clean(text)).lower(), text


def test_token_ids_equal_clip_tokenize_on_tricky_captions(clip_pkg, tiny_openai: tuple[str, str]) -> None:
    folder, _ = tiny_openai
    captions = [*TRICKY, LONG]
    want = [[int(x) for x in row if x] for row in clip_pkg.tokenize(captions, truncate=True)]
    got = _embedder(folder, "original")._truncated_ids(captions)
    assert got == want
    assert len(want[-1]) == 77 and want[-1][-1] == 49407  # the long caption: cut, end-of-text kept
    # without the cleaning (lovr's own protocol: the tokenizer as transformers ships it) curly quotes, HTML
    # entities, mojibake and ligatures give other ids: the test above would catch a lost cleaning
    plain = _embedder(folder, "lovr")._truncated_ids(captions)
    differing = {captions[i] for i in range(len(captions)) if plain[i] != want[i]}
    assert {TRICKY[0], TRICKY[2], TRICKY[3], TRICKY[5], TRICKY[7]} <= differing


def test_pixels_equal_clip_load_preprocess_on_decoded_frames(clip_pkg, tiny_openai: tuple[str, str],
                                                             oracle_release: Path) -> None:
    from PIL import Image

    _, ckpt = tiny_openai
    _, preprocess = clip_pkg.load(ckpt, device="cpu", jit=False)
    frames = _frames(oracle_release)
    for swapped in (frames, np.ascontiguousarray(frames[..., ::-1])):
        want = torch.stack([preprocess(Image.fromarray(f)) for f in swapped])
        assert torch.equal(openai_clip_pixels(swapped, want.shape[-1]), want)


def test_embeddings_equal_the_clip_package_s(clip_pkg, tiny_openai: tuple[str, str], oracle_release: Path) -> None:
    """Per-item text and frame embeddings within 1e-5 (fp32 CPU; float sums differ by kernel, not more)."""
    from PIL import Image

    folder, ckpt = tiny_openai
    model, preprocess = clip_pkg.load(ckpt, device="cpu", jit=False)
    captions = [*TRICKY, LONG]
    frames = _frames(oracle_release)
    with torch.no_grad():
        t = model.encode_text(clip_pkg.tokenize(captions, truncate=True)).float()
        f = model.encode_image(torch.stack([preprocess(Image.fromarray(x)) for x in frames])).float()
    want_t = (t / t.norm(dim=-1, keepdim=True)).numpy()
    want_f = (f / f.norm(dim=-1, keepdim=True)).numpy()
    original = _embedder(folder, "original")
    np.testing.assert_allclose(original.embed_text(captions), want_t, atol=1e-5)
    np.testing.assert_allclose(original.embed_frames(frames), want_f, atol=1e-5)
    # lovr's own protocol (transformers' tokenizer and torchvision processor) is measurably elsewhere
    lovr = _embedder(folder, "lovr")
    assert np.abs(lovr.embed_text(captions) - want_t).max() > 1e-3
    assert np.abs(lovr.embed_frames(frames) - want_f).max() > 1e-5


def _min_gold_gap(o: dict) -> float:
    """Smallest |gold score - other candidate's score| over the four directions of the original's run."""
    feats, n, src = o["image_feats"], o["clip_num"], o["text_src"]
    clips = [(i, c) for i, c in enumerate(o["clip_src"]) if c]
    fulls = [(i, v) for i, v in enumerate(o["full_src"]) if v]
    clip_feat, clip_ids = feats[[i for i, _ in clips]], [c for _, c in clips]
    full_feat, full_ids = feats[[i for i, _ in fulls]], [v for _, v in fulls]
    queried = [j for j, c in enumerate(clip_ids) if c in src[:n]]
    cases = [(o["text_feat"][:n] @ clip_feat.T, src[:n], clip_ids),
             (o["text_feat"][n:] @ full_feat.T, src[n:], full_ids),
             (clip_feat[queried] @ o["text_feat"][:n].T, [clip_ids[j] for j in queried], src[:n]),
             (full_feat @ o["text_feat"][n:].T, full_ids, src[n:])]
    gaps = []
    for sim, queries, cands in cases:
        for i, q in enumerate(queries):
            gold = [j for j, c in enumerate(cands) if c == q]
            if gold:
                gaps.append(float(np.abs(np.delete(sim[i], gold) - sim[i, gold].max()).min()))
    return min(gaps)


def test_every_pass_at_k_equals_the_original_run_with_the_clip_package(
        clip_pkg, tiny_openai: tuple[str, str], oracle_release: Path, tmp_path: Path) -> None:
    """import-release + eval --protocol original --interval 10 = the original's 80 values (k = 1..20, four
    directions), computed from the ``clip`` package's features by the original's calc_pass."""
    from lovr_hf.evaluation.run import evaluate_model
    from lovr_hf.evaluation.scoring import EvalConfig
    from lovr_hf.hub.release import import_release
    from lovr_hf.repo import BenchmarkRepo

    folder, ckpt = tiny_openai
    o = original_clip_run(oracle_release, ckpt, interval=10)
    # no near tie decides a value: every gold's score is >= 1e-5 away from every other candidate's, 100x the
    # float differences between lovr's and the clip package's embeddings (~1e-7), on any CPU
    assert _min_gold_gap(o) > 1e-5
    want = original_calc_pass(o["text_src"], o["text_feat"], o["clip_num"], o["clip_src"], o["full_src"],
                              o["image_feats"], KS)
    repo = BenchmarkRepo(tmp_path / "lovr")
    import_release(oracle_release, repo.root)
    cfg = EvalConfig(model=folder, protocol="original", interval=10, dtype="float32", device="cpu",
                     batch_size=8, decode_backend="pyav", model_name="tiny-openai-clip", bootstrap=0)
    rows = evaluate_model(repo, cfg)
    got = {(r["direction"], r["k"]): r["value"] for r in rows if r["metric"] == "pass@k" and r["slice"] == "all"}
    pairs = [(DIRECTION_OF[name], k, value) for k in KS for name, value in want[k].items()]
    assert len(pairs) == 80  # every k has >= 20 candidates in every direction
    differing = [(d, k, got.get((d, k)), v) for d, k, v in pairs if got.get((d, k)) != pytest.approx(v, abs=1e-12)]
    assert not differing, differing
    # the values are not trivially equal: some k misses somewhere
    assert min(v for _, _, v in pairs) < 1.0


def test_full_video_frames_follow_the_clip_order(clip_pkg, tiny_openai: tuple[str, str],
                                                 oracle_release: Path) -> None:
    """The one input the original leaves to chance: it walks a video's clip files in ``os.listdir`` order,
    and the full-video stride continues across clips, so another order samples other frames of the video.
    lovr (and the oracle above) take scene order; this shows the order is not a detail."""
    _, ckpt = tiny_openai
    vid = "V01-ab"  # two clips, the first 26 frames long: the second clip's phase depends on the order
    scene = original_clip_run(oracle_release, ckpt, 10, videos=[vid])
    reverse = original_clip_run(oracle_release, ckpt, 10, order=lambda names: sorted(names, reverse=True),
                                videos=[vid])
    at = scene["full_src"].index(vid)
    assert np.abs(scene["image_feats"][at] - reverse["image_feats"][at]).max() > 1e-4
    clips = [i for i, c in enumerate(scene["clip_src"]) if c]
    for i in clips:  # the clips themselves do not change
        j = reverse["clip_src"].index(scene["clip_src"][i])
        np.testing.assert_allclose(scene["image_feats"][i], reverse["image_feats"][j], atol=1e-6)


def test_open_clip_tokenizer_ids_equal_clip_tokenize(clip_pkg, tmp_path_factory: pytest.TempPathFactory) -> None:
    """EVA02-CLIP's original (BAAI's eva_clip) tokenises with OpenAI's SimpleTokenizer; lovr's open_clip
    adapter runs open_clip's tokenizer, which must give clip.tokenize's ids, cleaning and truncation included."""
    pytest.importorskip("open_clip")
    from lovr_hf.backends.embedders.openclip import OpenCLIPEmbedder
    from lovr_hf.tiny import build_tiny_open_clip

    folder = build_tiny_open_clip(tmp_path_factory.getbasetemp() / "tiny_models" / "open_clip")
    emb = OpenCLIPEmbedder(folder, device="cpu")
    emb.load()
    captions = [*TRICKY, LONG]
    assert torch.equal(emb._tokenizer(captions), clip_pkg.tokenize(captions, truncate=True))


def test_open_clip_eva02_preprocessing_equals_the_openai_transform(clip_pkg, tmp_path: Path,
                                                                  oracle_release: Path) -> None:
    """EVA02-CLIP's original (eva_clip's eval transform: Resize shortest side bicubic, CenterCrop, OpenAI
    mean/std) is ``clip.load``'s transform. lovr runs ``EVA02-B-16/merged2b_s8b_b131k`` in open_clip: its
    preprocessing config must be that one, and the adapter's preprocess must make the same pixels from it."""
    pytest.importorskip("open_clip")

    import open_clip
    from PIL import Image

    from lovr_hf.backends.embedders.openclip import parse_spec

    spec, tag = parse_spec("EVA02-CLIP-B-16", None)
    cfg = open_clip.get_pretrained_cfg(spec, tag)
    assert (spec, tag) == ("EVA02-B-16", "merged2b_s8b_b131k")
    assert (cfg["interpolation"], cfg["resize_mode"]) == ("bicubic", "shortest")
    # a tiny open_clip model carrying EVA02's preprocessing config (the weights are beside the point)
    emb, n_px = _tiny_open_clip_with_preprocess(tmp_path / "eva02-like", cfg)
    want = clip_pkg.clip._transform(n_px)
    for f in _frames(oracle_release):
        assert torch.equal(emb._preprocess(Image.fromarray(f)), want(Image.fromarray(f)))


def test_open_clip_pe_core_text_and_pixels_equal_perception_models(clip_pkg, tmp_path: Path,
                                                                   oracle_release: Path) -> None:
    """PE-Core's original ran Meta's perception_models: its SimpleTokenizer is OpenAI's (the same BPE file,
    clean="lower": ftfy, html.unescape twice, white space, lower case; truncation keeps end-of-text) at
    context 32, i.e. ``clip.tokenize(context_length=32, truncate=True)``; its image transform
    (core/vision_encoder/transforms.py get_image_transform, center_crop=False) squashes to the model size
    with bilinear resizing, then mean/std 0.5, restated below with torchvision. lovr's open_clip path
    (PE-Core-B-16/meta) must give both."""
    pytest.importorskip("open_clip")

    import open_clip
    from PIL import Image
    from torchvision import transforms as T

    from lovr_hf.backends.embedders.openclip import parse_spec

    spec, tag = parse_spec("facebook/PE-Core-B16-224", None)
    assert (spec, tag) == ("PE-Core-B-16", "meta")
    captions = [*TRICKY, LONG]
    tokenizer = open_clip.get_tokenizer(spec)  # what the adapter loads for this spec
    assert torch.equal(tokenizer(captions), clip_pkg.tokenize(captions, context_length=32, truncate=True))
    cfg = open_clip.get_pretrained_cfg(spec, tag)
    emb, n_px = _tiny_open_clip_with_preprocess(tmp_path / "pe-core-like", cfg)
    pe = T.Compose([T.Resize((n_px, n_px), interpolation=T.InterpolationMode.BILINEAR),
                    T.Lambda(lambda x: x.convert("RGB")), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    for f in _frames(oracle_release):
        assert torch.equal(emb._preprocess(Image.fromarray(f)), pe(Image.fromarray(f)))


def _tiny_open_clip_with_preprocess(folder: Path, cfg: dict) -> tuple:
    """A tiny open_clip model (loaded) carrying the preprocessing config ``cfg`` of a real pretrained tag
    (the weights are beside the point), and its image size."""
    import json
    import shutil

    from lovr_hf.backends.embedders.openclip import OpenCLIPEmbedder
    from lovr_hf.tiny import build_tiny_open_clip

    shutil.copytree(build_tiny_open_clip(folder.parent / "tiny_open_clip"), folder)
    conf = json.loads((folder / "open_clip_config.json").read_text())
    conf["preprocess_cfg"] = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")}
    (folder / "open_clip_config.json").write_text(json.dumps(conf))
    emb = OpenCLIPEmbedder(str(folder), device="cpu")
    emb.load()
    return emb, conf["model_cfg"]["vision_cfg"]["image_size"]
