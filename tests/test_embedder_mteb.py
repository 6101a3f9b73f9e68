"""The MTEB bridge (``--backend mteb``) on a tiny video+text model registered in mteb's own model registry
(lovr_hf.tiny.mteb_video: an mteb encoder over a tiny random CLIP using mteb's VideoCollator and prompts):
texts equal the model called through mteb directly (mteb.get_model + mteb's create_dataloader + encode, with
the task's query prompt), videos equal the model's frames chosen by mteb's frame rule and decoded
independently (decord), for one clip file, a full video of several files and a frame-range clip; refusals
(unknown name, a text-only model, remote code without --trust-remote-code, missing extra), the InternVideo2
family, and ``lovr eval --backend mteb`` end to end. Nothing is downloaded."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from lovr_hf.backends.extras import missing_modules

if missing_modules("mteb"):
    pytest.skip("the mteb extra is not installed", allow_module_level=True)

from _embedder_helpers import eval_repo, run_eval  # noqa: E402

from lovr_hf.backends.embedders.families import FILES, family_for  # noqa: E402
from lovr_hf.backends.embedders.mteb import MtebEmbedder, video_text_model_names  # noqa: E402
from lovr_hf.tiny.mteb_video import QUERY_PROMPT, TINY_MTEB_NAME, register_tiny_mteb_video  # noqa: E402


@pytest.fixture(scope="module")
def tiny_name(tiny: dict[str, str]) -> str:
    register_tiny_mteb_video(tiny["clip"])
    return TINY_MTEB_NAME


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from lovr_hf.demo.samples import make_video
    from lovr_hf.demo.scenes import SceneSpec

    root = tmp_path_factory.mktemp("mteb_videos")
    out = []
    for i, scenes in enumerate([[20, 20], [15, 25]]):
        p = root / f"clip{i}.mp4"
        make_video(p, [SceneSpec(n) for n in scenes], 96, 64, 10, seed=20 + i)
        out.append(str(p))
    return out


def decord_frames(path: str) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_mteb_text_equals_mteb_direct_call(tiny_name: str, tiny: dict[str, str]) -> None:
    import datasets
    import mteb
    import torch
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType
    from transformers import CLIPModel, CLIPProcessor

    assert tiny_name in video_text_model_names()
    emb = MtebEmbedder(tiny_name, device="cpu", batch_size=2)
    texts = ["a red car", "two dogs play in the park", "rain"]
    t = emb.embed_text(texts)
    assert t.shape == (3, 16) and t.dtype == np.float32

    model = mteb.get_model(tiny_name)
    tm = mteb.get_task("ActivityNetCaptionsT2VRetrieval").metadata
    dl = create_dataloader(datasets.Dataset.from_dict({"text": texts}), task_metadata=tm,
                           prompt_type=PromptType.query, batch_size=2)
    direct = model.encode(dl, task_metadata=tm, hf_split="test", hf_subset="default", prompt_type=PromptType.query)
    np.testing.assert_allclose(t, unit(np.asarray(direct)), atol=1e-5)
    # the model's own prompt for queries went in (mteb's get_prompt), checked on the bare CLIP
    clip, proc = CLIPModel.from_pretrained(tiny["clip"]).eval(), CLIPProcessor.from_pretrained(tiny["clip"])
    with torch.no_grad():
        out = clip.get_text_features(**proc(text=[QUERY_PROMPT + x for x in texts], padding=True,
                                            return_tensors="pt"))
    bare = out if torch.is_tensor(out) else out.pooler_output
    np.testing.assert_allclose(t, unit(bare.numpy()), atol=1e-5)
    calls = emb.load().calls
    assert calls[-1] == {"task": "ActivityNetCaptionsT2VRetrieval", "prompt_type": PromptType.query,
                         "modalities": ["text"]}
    assert emb.max_text_tokens == 77 and emb.video_input == FILES


def test_mteb_video_through_the_models_collator(tiny_name: str, videos: list[str]) -> None:
    from mteb.models.modality_collators import frame_indices
    from mteb.types import PromptType

    emb = MtebEmbedder(tiny_name, device="cpu", batch_size=2)
    groups = [[videos[0]], videos, [{"path": videos[1], "frame_offset": 5, "num_frames": 12}]]
    v = emb.embed_video_files(groups)
    assert v.shape == (3, 16) and v.dtype == np.float32
    model = emb.load()
    assert model.calls[-1]["prompt_type"] == PromptType.document and model.calls[-1]["modalities"] == ["video"]
    import torch

    sources = [decord_frames(videos[0]), np.concatenate([decord_frames(p) for p in videos]),
               decord_frames(videos[1])[5:17]]
    expected = []
    for frames in sources:  # mteb's frame rule (4 frames), frames decoded independently with decord
        pick = frames[frame_indices(len(frames), 4)]
        expected.append(model._video(torch.from_numpy(pick).permute(0, 3, 1, 2)))
    np.testing.assert_allclose(v, unit(np.stack(expected)), atol=1e-4)
    assert not np.allclose(v[0], v[1], atol=1e-3)
    # decoded frames (the frame stage's path until the files path is wired): the same collator on them
    np.testing.assert_allclose(emb.embed_video(sources[2]), v[2], atol=1e-4)
    assert emb.embed_frames(sources[0][:2]).shape == (2, 16)

    blob = pickle.dumps(emb)
    assert len(blob) < 20_000
    np.testing.assert_allclose(pickle.loads(blob).embed_video_files(groups[:1]), v[:1], atol=1e-5)


def test_mteb_refusals(tiny_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import mteb

    with pytest.raises(KeyError, match="not a model registered in mteb"):
        MtebEmbedder("no-such-org/no-such-model")
    text_only = next(m.name for m in mteb.get_model_metas() if m.modalities == ["text"])
    with pytest.raises(ValueError, match="not video and text"):
        MtebEmbedder(text_only)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        MtebEmbedder("OpenGVLab/InternVideo2-CLIP-1B-224p-f8")
    MtebEmbedder("mteb:OpenGVLab/InternVideo2-CLIP-1B-224p-f8", trust_remote_code=True)  # constructs, loads lazily
    assert MtebEmbedder("mteb/baseline-random-encoder").max_text_tokens is None  # mteb's max_tokens = inf
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mteb" else real(n, *a))
    with pytest.raises(ImportError, match=r"lovr_hf\[mteb\]"):
        MtebEmbedder(tiny_name)


def test_mteb_internvideo2_family() -> None:
    import mteb

    fam = family_for("OpenGVLab/InternVideo2-CLIP-1B-224p-f8")
    assert fam.name == "internvideo2" and fam.backend == "mteb" and fam.video_input == FILES
    meta = mteb.get_model_meta(fam.hub_ids[0])
    assert set(meta.modalities) >= {"video", "text"}
    assert meta.loader_kwargs["num_frames"] == fam.video_frames == 8  # the family's frame rule is mteb's


def test_lovr_eval_with_mteb_backend(tiny_name: str, eval_source: Path, tmp_path: Path) -> None:
    run_eval(eval_repo(tmp_path, eval_source), tiny_name, "--backend", "mteb", dim=16)


def test_mteb_internvideo2_stops_at_mtebs_requirement_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """InternVideo2 through mteb is tested up to mteb's own boundary here: mteb's ``internvideo2`` extra pins
    transformers<5, which lovr_hf (transformers 5) cannot meet, and mteb refuses before any download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MTEB_AUTO_INSTALL_EXTRAS", raising=False)
    emb = MtebEmbedder("OpenGVLab/InternVideo2-CLIP-1B-224p-f8", trust_remote_code=True, device="cpu")
    assert emb.model_id().startswith("mteb:OpenGVLab/InternVideo2-CLIP-1B-224p-f8@")
    with pytest.raises(ImportError, match=r"internvideo2"):
        emb.load()


def test_mteb_options_never_silently_dropped(tiny_name: str) -> None:
    """A --dtype the bridge cannot apply is refused (mteb loads each model at its own precision), remote code
    asked for through the user's own loader_kwargs needs --trust-remote-code too, an explicit max_text_tokens
    cuts captions under truncate (word pieces, as chunk-mean), an unknown text mode is refused."""
    from lovr_hf.evaluation.models import EmbedConfig, make_embedder

    with pytest.raises(ValueError, match="mteb's own precision"):  # through lovr eval's --dtype
        make_embedder(EmbedConfig(model=tiny_name, backend="mteb", dtype="bfloat16"))
    assert MtebEmbedder(tiny_name, dtype="auto").max_text_tokens == 77
    with pytest.raises(ValueError, match="--trust-remote-code"):
        MtebEmbedder(tiny_name, loader_kwargs={"trust_remote_code": True})
    MtebEmbedder(tiny_name, loader_kwargs={"trust_remote_code": True}, trust_remote_code=True)

    ref = MtebEmbedder(tiny_name, device="cpu")
    short = MtebEmbedder(tiny_name, device="cpu", max_text_tokens=3)
    text = "two dogs play in the park at night"
    np.testing.assert_allclose(short.embed_text([text]), ref.embed_text(["two dogs play"]), atol=1e-5)
    mean = short.embed_text([text], text_mode="chunk-mean")
    pieces = ref.embed_text(["two dogs play", "in the park", "at night"])
    np.testing.assert_allclose(mean[0], unit(pieces.sum(0)), atol=1e-5)
    with pytest.raises(ValueError, match="text_mode"):
        ref.embed_text(["a"], text_mode="average")
    assert short.load() is ref.load()  # one loaded copy per process
