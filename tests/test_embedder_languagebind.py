"""The ``languagebind`` adapter on a tiny random LanguageBind-Video built from the ``languagebind`` package's own
classes (lovr_hf.tiny.languagebind): text and video embeddings equal the package model's own forward on the
package's own processing (its tokenizer settings, its decord loader and video transform), a full video is its
clip files concatenated and sampled by the processor's rule, clips given as frame ranges, the seeded random flip
of ``--protocol original``, the family row, and ``lovr eval`` end to end. Nothing is downloaded."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from lovr_hf.backends.extras import missing_modules  # noqa: E402

if missing_modules("languagebind", "pytorchvideo", "einops", "peft", "iopath", "torchaudio", "decord"):
    pytest.skip("the languagebind extra is not installed (see lovr_hf/backends/embedders/languagebind.py)",
                allow_module_level=True)

from _embedder_helpers import eval_repo, run_eval  # noqa: E402
from test_embedder_transformers import LONG  # noqa: E402

from lovr_hf.backends.embedders.families import FILES, family_for  # noqa: E402
from lovr_hf.backends.embedders.languagebind import LanguageBindEmbedder, import_languagebind  # noqa: E402


@pytest.fixture(scope="module")
def lb_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from lovr_hf.tiny.languagebind import build_tiny_languagebind

    return build_tiny_languagebind(tmp_path_factory.getbasetemp() / "tiny_models" / "languagebind-video-tiny")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec

    root = tmp_path_factory.mktemp("lb_videos")
    out = []
    for i, scenes in enumerate([[20, 20], [15, 25], [30]]):
        p = root / f"clip{i}.mp4"
        make_video(p, [SceneSpec(n) for n in scenes], 96, 64, 10, seed=10 + i)
        out.append(str(p))
    return out


class Reference:
    """The package's model and processing, assembled by hand: the model built by its constructor and loaded
    from safetensors (not through the adapter's loader), texts tokenized as its processor does, videos by its
    own ``load_and_transform_video`` / transform (flip removed, as the adapter's default)."""

    def __init__(self, path: str) -> None:
        import torch
        from safetensors.torch import load_file
        from torchvision.transforms import Compose

        lb = import_languagebind()
        from languagebind.video import processing_video as pv

        cfg = lb.LanguageBindVideoConfig.from_pretrained(path)
        self.model = lb.LanguageBindVideo(cfg).eval()
        missing, unexpected = self.model.load_state_dict(load_file(f"{path}/model.safetensors"), strict=False)
        assert not unexpected and all("position_ids" in k for k in missing)
        self.tok = lb.LanguageBindVideoTokenizer.from_pretrained(path)
        self.transform = Compose([t for t in pv.get_video_transform(cfg).transforms
                                  if "Flip" not in type(t).__name__])
        self.pv, self.torch, self.n = pv, torch, cfg.vision_config.num_frames

    def _fwd(self, ids, mask, pixels):
        with self.torch.no_grad():
            return self.model(input_ids=ids, attention_mask=mask, pixel_values=pixels)

    def text(self, texts: list[str]) -> np.ndarray:
        enc = self.tok(texts, max_length=77, padding="max_length", truncation=True, return_tensors="pt")
        dummy = self.torch.zeros(1, 3, self.n, 224, 224)
        return self._fwd(enc["input_ids"], enc["attention_mask"], dummy).text_embeds.numpy()

    def pixels_of_file(self, path: str):
        import decord

        out = self.pv.load_and_transform_video(path, self.transform, video_decode_backend="decord", num_frames=self.n)
        decord.bridge.set_bridge("native")
        return out

    def pixels_of_frames(self, frames: np.ndarray):
        idx = np.linspace(0, len(frames) - 1, self.n, dtype=int)
        return self.transform(self.torch.from_numpy(frames[idx]).permute(3, 0, 1, 2))

    def video(self, pixels: list) -> np.ndarray:
        enc = self.tok(["x"], max_length=77, padding="max_length", truncation=True, return_tensors="pt")
        return self._fwd(enc["input_ids"], enc["attention_mask"], self.torch.stack(pixels)).image_embeds.numpy()


def all_frames(path: str) -> np.ndarray:
    import decord

    decord.bridge.set_bridge("native")
    vr = decord.VideoReader(path)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def test_languagebind_text_and_video_equal_the_package_forward(lb_dir: str, videos: list[str]) -> None:
    emb = LanguageBindEmbedder(lb_dir, device="cpu", batch_size=2)
    ref = Reference(lb_dir)
    assert emb.video_input == FILES
    texts = ["a red car", "two dogs play in the park", LONG]
    t = emb.embed_text(texts)
    assert t.shape == (3, 16) and t.dtype == np.float32
    np.testing.assert_allclose(t, ref.text(texts), atol=1e-5)
    assert emb.max_text_tokens == 77 and emb.video_frames == 8

    # a clip = its one file through the package's processor; a full video = its clips concatenated
    groups = [[videos[0]], [videos[1]], videos, [{"path": videos[2], "frame_offset": 5, "num_frames": 20}]]
    v = emb.embed_video_files(groups)
    assert v.shape == (4, 16) and v.dtype == np.float32
    merged = np.concatenate([all_frames(p) for p in videos])
    expected = ref.video([ref.pixels_of_file(videos[0]), ref.pixels_of_file(videos[1]),
                          ref.pixels_of_frames(merged), ref.pixels_of_frames(all_frames(videos[2])[5:25])])
    np.testing.assert_allclose(v, expected, atol=1e-5)
    assert not np.allclose(v[0], v[1], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # decoded frames through embed_video: the same processor rule and transform
    np.testing.assert_allclose(emb.embed_video(merged), expected[2], atol=1e-5)

    import decord.bridge

    assert decord.bridge._CURRENT_BRIDGE.type == "native"  # the package's torch bridge does not leak out

    blob = pickle.dumps(emb)
    assert len(blob) < 10_000
    np.testing.assert_allclose(pickle.loads(blob).embed_video_files([[videos[0]]]), v[:1], atol=1e-6)


def test_languagebind_random_flip_is_seeded(lb_dir: str, videos: list[str]) -> None:
    import torch

    plain = LanguageBindEmbedder(lb_dir, device="cpu")
    flip = LanguageBindEmbedder(lb_dir, device="cpu", protocol="original")
    assert flip.random_flip and "random flip" in flip.model_id()
    ref = Reference(lb_dir)
    groups = [[p] for p in videos] + [videos]
    a, b = flip.embed_video_files(groups), flip.embed_video_files(groups)
    np.testing.assert_allclose(a, b, atol=1e-6)  # seeded per item: reruns agree
    base = plain.embed_video_files(groups)
    flipped = []
    for g in groups:
        frames = np.concatenate([all_frames(p) for p in g])
        flipped.append(ref.pixels_of_frames(frames).flip(-1))
    mirror = ref.video(flipped)
    kinds = []
    for i in range(len(groups)):  # each item is either the plain or the mirrored video, as RandomHorizontalFlip
        assert not np.allclose(base[i], mirror[i], atol=1e-5)
        kinds.append("plain" if np.allclose(a[i], base[i], atol=1e-5) else "mirror")
        assert kinds[-1] == "plain" or np.allclose(a[i], mirror[i], atol=1e-5)
    rng = random.getstate()
    flip.embed_video_files(groups[:1])
    assert random.getstate() == rng  # the global random state is left as it was
    assert torch.is_tensor(torch.zeros(1))


def test_languagebind_family_and_missing_extra(lb_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    fam = family_for(lb_dir)  # a local folder: config.json model_type
    assert fam.name == "languagebind" and fam.backend == "languagebind" and fam.video_input == FILES
    assert family_for("LanguageBind/LanguageBind_Video_FT").name == "languagebind"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "languagebind" else real(n, *a))
    with pytest.raises(ImportError, match=r"lovr_hf\[languagebind\].*--no-deps languagebind"):
        LanguageBindEmbedder(lb_dir)


def test_lovr_eval_with_languagebind(lb_dir: str, eval_source: Path, tmp_path: Path) -> None:
    run_eval(eval_repo(tmp_path, eval_source), lb_dir, "--backend", "languagebind", dim=16)


def test_languagebind_dtype_text_batches_and_modes(lb_dir: str, videos: list[str], monkeypatch) -> None:
    """--dtype reaches the adapter (auto = fp32 as the original; bfloat16 casts weights and pixels), texts go
    ``batch_size`` at a time, an unknown text mode is refused, one load per process for one model."""
    import torch

    from lovr_hf.evaluation.models import EmbedConfig, make_embedder

    ref = LanguageBindEmbedder(lb_dir, device="cpu", batch_size=2)
    assert next(ref.load().parameters()).dtype == torch.float32
    low = make_embedder(EmbedConfig(model=lb_dir, backend="languagebind", device="cpu", dtype="bfloat16"))
    assert next(low.load().parameters()).dtype == torch.bfloat16
    texts = ["a red car", "two dogs play in the park", LONG]
    assert (np.sum(low.embed_text(texts) * ref.embed_text(texts), axis=1) > 0.97).all()
    v, v16 = ref.embed_video_files([[videos[0]]]), low.embed_video_files([[videos[0]]])
    assert np.sum(v * v16) > 0.97

    assert LanguageBindEmbedder(lb_dir, device="cpu").load() is ref.load()
    sizes: list[int] = []
    model = ref.load()
    forward = model.get_text_features
    monkeypatch.setattr(model, "get_text_features", lambda **kw: sizes.append(len(kw["input_ids"])) or forward(**kw))
    ref.embed_text(texts)
    assert sizes == [2, 1]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="text_mode"):
        ref.embed_text(["a"], text_mode="average")


def test_languagebind_seeded_flip_is_thread_safe(lb_dir: str) -> None:
    """The seeded flip borrows the process-wide random generators: two threads flipping at once must each get
    their own item's draw (they used to interleave seeds, so an item's flip depended on the other thread)."""
    import threading
    import time

    import torch

    emb = LanguageBindEmbedder(lb_dir, device="cpu", protocol="original")

    class Draw:  # the processor's transform reduced to its random draw, slowed so two calls overlap
        def __call__(self, video):
            time.sleep(0.05)
            return random.random()

    emb._processor = type("P", (), {"transform": Draw()})()
    keys = [f"clip-{i}" for i in range(4)]
    expected = {k: random.Random(emb._flip_seed(k)).random() for k in keys}
    got: dict[str, float] = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, emb._transform(torch.zeros(1), k)))
               for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
