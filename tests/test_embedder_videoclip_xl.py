"""The ``videoclip_xl`` adapter (VideoCLIP-XL / -v2) against a local stand-in of the model's GitHub repository
(tests/remote_code/videoclip_xl_standin/: ``modeling.VideoCLIP_XL``, ``utils.text_encoder.text_encoder.tokenize``,
``text_model.encode_text``, ``vision_model.get_vid_features`` on a tiny random network), weights in a ``.bin``
state dict: refused without --trust-remote-code, texts and videos equal the documented pipeline of the
repository's demo, the demo's 8-frame rule, BGR under --protocol original, module isolation, both families,
and ``lovr eval`` end to end. The real VideoCLIP-XL code and weights are not on PyPI and not run here."""

from __future__ import annotations

import importlib
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from _embedder_helpers import eval_args, eval_repo, run_eval
from test_embedder_transformers import LONG

from lovr_hf.backends.embedders.families import NATIVE_VIDEO, family_for
from lovr_hf.backends.embedders.videoclip_xl import VideoCLIPXLEmbedder, demo_frame_indices
from lovr_hf.cli.app import main as cli_main
from lovr_hf.evaluation.models import EmbedConfig, make_embedder

STANDIN = Path(__file__).parent / "remote_code" / "videoclip_xl_standin"


def standin_modules(code: Path) -> tuple:
    """The stand-in's modules imported plainly (the reference side), then taken out of sys.modules."""
    names = ("modeling", "utils")
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}
    sys.path.insert(0, str(code))
    try:
        modeling = importlib.import_module("modeling")
        te = importlib.import_module("utils.text_encoder.text_encoder")
        return modeling, te
    finally:
        sys.path.remove(str(code))
        for k in [k for k in sys.modules if k.split(".")[0] in names]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch

    out = tmp_path_factory.mktemp("models") / "VideoCLIP-XL-standin"  # the name is what `auto` keys on
    shutil.copytree(STANDIN, out, dirs_exist_ok=True)
    modeling, _ = standin_modules(out)
    torch.manual_seed(0)
    torch.save(modeling.VideoCLIP_XL().state_dict(), out / "VideoCLIP-XL.bin")
    return str(out)


class Reference:
    """The repository demo's pipeline on the stand-in: tokenize(truncate=True) -> encode_text; 8 frames
    frames[::n // 8][:8] -> cv2.resize 224 -> ImageNet normalise -> [1, 8, 3, 224, 224] -> get_vid_features."""

    def __init__(self, path: str) -> None:
        import torch

        modeling, self.te = standin_modules(Path(path))
        self.model = modeling.VideoCLIP_XL()
        self.model.load_state_dict(torch.load(f"{path}/VideoCLIP-XL.bin", weights_only=True))
        self.model.eval()
        self.torch = torch

    def text(self, texts: list[str]) -> np.ndarray:
        with self.torch.no_grad():
            t = self.model.text_model.encode_text(self.te.tokenize(texts, truncate=True)).numpy()
        return t / np.linalg.norm(t, axis=1, keepdims=True)

    def video(self, frames: np.ndarray, bgr: bool = False) -> np.ndarray:
        import cv2

        step = len(frames) // 8
        picked = frames[::step][:8]
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        tube = np.stack([(cv2.resize(np.ascontiguousarray(f[:, :, ::-1] if bgr else f), (224, 224)) / 255.0 - mean)
                         / std for f in picked])[None].transpose(0, 1, 4, 2, 3)
        with self.torch.no_grad():
            v = self.model.vision_model.get_vid_features(self.torch.from_numpy(tube).float()).numpy()[0]
        return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    import tempfile

    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec
    from lovr_hf.video.reader import read_frames

    d = tempfile.mkdtemp()
    make_video(f"{d}/v.mp4", [SceneSpec(12), SceneSpec(12)], 96, 64, 10, seed=3)
    return read_frames(f"{d}/v.mp4", list(range(24)))


def test_videoclip_refused_without_trust_remote_code(xl_dir: str) -> None:
    with pytest.raises(ValueError, match="--trust-remote-code"):
        VideoCLIPXLEmbedder(xl_dir)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        make_embedder(EmbedConfig(model=xl_dir, backend="videoclip_xl"))


def test_videoclip_text_and_video_equal_the_repository_pipeline(xl_dir: str, frames: np.ndarray) -> None:
    sys.modules["utils"] = sentinel = types.ModuleType("utils")  # someone else's top-level `utils`
    try:
        emb = VideoCLIPXLEmbedder(xl_dir, trust_remote_code=True, device="cpu", batch_size=2)
        texts = ["a red car", "two dogs play in the park", LONG]
        t = emb.embed_text(texts)
        assert sys.modules["utils"] is sentinel and "modeling" not in sys.modules  # the repo's modules stay private
    finally:
        del sys.modules["utils"]
    ref = Reference(xl_dir)
    assert t.shape == (3, 16) and t.dtype == np.float32
    np.testing.assert_allclose(t, ref.text(texts), atol=1e-5)
    assert emb.max_text_tokens == 248 and emb.video_frames == 8

    clips = [frames[:12], frames[12:], frames]  # 12 frames: demo step 1; 24 frames: step 3
    v = np.stack([emb.embed_video(c) for c in clips])
    np.testing.assert_allclose(v, np.stack([ref.video(c) for c in clips]), atol=1e-5)
    np.testing.assert_allclose(emb.embed_videos(clips), v, atol=1e-5)  # batched == one by one
    assert not np.allclose(v[0], v[1], atol=1e-3)
    # the visual stage hands a native tower exactly its 8 frames: taken as they are
    eight = frames[[0, 3, 6, 9, 12, 15, 18, 21]]
    np.testing.assert_allclose(emb.embed_video(eight), ref.video(eight), atol=1e-5)
    assert demo_frame_indices(24) == [0, 3, 6, 9, 12, 15, 18, 21] and demo_frame_indices(3) == [0, 0, 0, 1, 1, 1, 2, 2]

    # chunk-mean sees past 248 tokens, truncate does not
    long2 = " ".join([LONG] * 3)
    cut = emb.embed_text([long2, long2 + " And then it rains."])
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)
    mean = emb.embed_text([long2, long2 + " And then it rains."], text_mode="chunk-mean")
    assert not np.allclose(mean[0], mean[1], atol=1e-4)

    blob = pickle.dumps(emb)
    assert len(blob) < 10_000
    np.testing.assert_allclose(pickle.loads(blob).embed_video(clips[0]), v[0], atol=1e-6)


def test_videoclip_original_protocol_is_bgr(xl_dir: str, frames: np.ndarray) -> None:
    emb = VideoCLIPXLEmbedder(xl_dir, trust_remote_code=True, device="cpu", protocol="original")
    assert emb.channel_order == "bgr" and "(bgr)" in emb.model_id()
    ref = Reference(xl_dir)
    np.testing.assert_allclose(emb.embed_video(frames), ref.video(frames, bgr=True), atol=1e-5)
    assert not np.allclose(ref.video(frames, bgr=True), ref.video(frames), atol=1e-4)


def test_videoclip_families_and_missing_code(xl_dir: str, tmp_path: Path) -> None:
    xl, v2 = family_for("alibaba-pai/VideoCLIP-XL"), family_for("alibaba-pai/VideoCLIP-XL-v2")
    assert (xl.name, v2.name) == ("videoclip_xl", "videoclip_xl_v2")
    assert xl.backend == v2.backend == "videoclip_xl" and xl.video_input == NATIVE_VIDEO == v2.video_input
    assert (xl.original_interval, v2.original_interval, xl.video_frames) == (10, 30, 8)
    assert family_for(xl_dir).name == "videoclip_xl"
    (tmp_path / "w").mkdir()
    shutil.copy(Path(xl_dir) / "VideoCLIP-XL.bin", tmp_path / "w" / "VideoCLIP-XL.bin")
    with pytest.raises(FileNotFoundError, match="code_dir"):
        VideoCLIPXLEmbedder(str(tmp_path / "w"), trust_remote_code=True, device="cpu").load()
    ok = VideoCLIPXLEmbedder(str(tmp_path / "w"), trust_remote_code=True, device="cpu", code_dir=xl_dir)
    np.testing.assert_allclose(ok.embed_text(["a"]), Reference(xl_dir).text(["a"]), atol=1e-5)


def test_lovr_eval_with_videoclip(xl_dir: str, eval_source: Path, tmp_path: Path, capsys) -> None:
    repo = eval_repo(tmp_path, eval_source)
    assert cli_main(eval_args(repo, xl_dir, "--backend", "videoclip_xl")) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    run_eval(repo, xl_dir, "--backend", "videoclip_xl", "--trust-remote-code", dim=16)


def test_videoclip_dtype_batches_and_text_limit(xl_dir: str, frames: np.ndarray, monkeypatch) -> None:
    """--dtype reaches the adapter (auto = fp32, the original's; bfloat16 casts weights and inputs), texts go
    ``batch_size`` at a time (not at least 64), an explicit max_text_tokens cuts captions under truncate, one
    above Long-CLIP's 248 is refused, an unknown text mode is refused, one load per process."""
    import torch

    ref = VideoCLIPXLEmbedder(xl_dir, trust_remote_code=True, device="cpu")
    assert next(ref.load().parameters()).dtype == torch.float32
    low = make_embedder(EmbedConfig(model=xl_dir, backend="videoclip_xl", trust_remote_code=True, device="cpu",
                                    dtype="bfloat16"))
    assert next(low.load().parameters()).dtype == torch.bfloat16
    texts = ["a red car", "two dogs play in the park", LONG]
    assert (np.sum(low.embed_text(texts) * ref.embed_text(texts), axis=1) > 0.97).all()
    assert np.sum(low.embed_video(frames) * ref.embed_video(frames)) > 0.97

    two = VideoCLIPXLEmbedder(xl_dir, trust_remote_code=True, device="cpu", batch_size=2)
    assert two.load() is ref.load()  # one loaded copy for both embedders
    sizes: list[int] = []
    encode = two.load().text_model.encode_text
    monkeypatch.setattr(two.load().text_model, "encode_text", lambda t: sizes.append(len(t)) or encode(t))
    np.testing.assert_allclose(two.embed_text(texts), ref.embed_text(texts), atol=1e-5)
    assert sizes[:2] == [2, 1]
    monkeypatch.undo()

    short = VideoCLIPXLEmbedder(xl_dir, trust_remote_code=True, device="cpu", max_text_tokens=10)
    from open_clip.tokenizer import SimpleTokenizer  # the stand-in's tokenizer

    tok = SimpleTokenizer()
    piece = tok.decode(tok.encode(LONG)[:8]).strip()  # 10 tokens = start + 8 caption tokens + end
    np.testing.assert_allclose(short.embed_text([LONG]), ref.embed_text([piece]), atol=1e-5)
    assert not np.allclose(short.embed_text([LONG]), ref.embed_text([LONG]), atol=1e-3)
    with pytest.raises(ValueError, match="exceeds the text limit"):
        _ = VideoCLIPXLEmbedder(xl_dir, trust_remote_code=True, max_text_tokens=300).max_text_tokens
    with pytest.raises(ValueError, match="text_mode"):
        ref.embed_text(["a"], text_mode="average")
