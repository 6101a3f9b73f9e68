"""The ``jina`` adapter against a local model with remote code (tests/remote_code/modeling_jina_standin.py,
which implements jina-clip's documented ``encode_text`` / ``encode_image`` API on a tiny random network):
refused without ``--trust-remote-code``, loaded through ``AutoModel(trust_remote_code=True)`` with it,
batch size and Matryoshka ``truncate_dim`` passed through, both text modes, and ``lovr eval`` end to end.
jina-clip-v2 itself needs the Hub and is not run here."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from _embedder_helpers import check_eval, eval_args, eval_repo, save_standin, standin_calls
from test_embedder_transformers import LONG

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.jina import JinaClipEmbedder
from lovr_hf.cli.app import main as cli_main
from lovr_hf.evaluation.models import EmbedConfig, make_embedder, resolve_backend


@pytest.fixture(scope="module")
def jina_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("models") / "jina-clip-standin"  # the name is what `auto` keys on
    return save_standin("modeling_jina_standin.py", "JinaStandInConfig", "JinaStandInModel", out)


def calls() -> list[dict]:
    """What the adapter passed to the model loaded by transformers' remote-code loader."""
    return standin_calls("modeling_jina_standin", "JinaStandInModel")


def test_refused_without_trust_remote_code(jina_dir: str) -> None:
    assert resolve_backend(jina_dir) == "jina"
    with pytest.raises(ValueError, match="--trust-remote-code"):
        EMBEDDERS.create("jina", model_path=jina_dir)
    with pytest.raises(ValueError, match="--trust-remote-code"):
        make_embedder(EmbedConfig(model=jina_dir))


def test_remote_code_model_through_the_adapter(jina_dir: str, scene_frames: np.ndarray) -> None:
    emb = make_embedder(EmbedConfig(model=jina_dir, trust_remote_code=True, device="cpu", batch_size=4))
    assert isinstance(emb, JinaClipEmbedder)
    texts = ["a red car", "two dogs play in the park", LONG]
    t, f = emb.embed_text(texts), emb.embed_frames(scene_frames)
    assert t.shape == (3, 32) and f.shape == (6, 32) and t.dtype == f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(np.vstack([t, f]), axis=1), 1.0, atol=1e-5)
    assert not np.allclose(f[0], f[3], atol=1e-3)  # two different scenes
    log = calls()
    assert {c["fn"] for c in log} == {"encode_text", "encode_image"}
    assert all(c["batch_size"] == 4 and c["truncate_dim"] is None for c in log)
    assert emb.embed_text([]).shape[0] == 0 and emb.embed_frames(scene_frames[:0]).shape[0] == 0

    # Matryoshka width: passed through to the model, rows stay unit length
    small = JinaClipEmbedder(jina_dir, trust_remote_code=True, device="cpu", truncate_dim=8)
    s = small.embed_text(texts[:1])
    assert s.shape == (1, 8) and calls()[-1]["truncate_dim"] == 8
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)

    # text modes: a 24-token limit is given to encode_text (max_length); chunk-mean in 24-token pieces sees it all
    cm = JinaClipEmbedder(jina_dir, trust_remote_code=True, device="cpu", max_text_tokens=24)
    trunc = cm.embed_text([LONG, LONG + " And then it rains."], text_mode="truncate")
    mean = cm.embed_text([LONG, LONG + " And then it rains."], text_mode="chunk-mean")
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)
    assert not np.allclose(mean[0], mean[1], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)

    blob = pickle.dumps(emb)
    assert len(blob) < 10_000  # the model is never pickled into workers
    np.testing.assert_allclose(pickle.loads(blob).embed_frames(scene_frames[:2]), f[:2], atol=1e-6)


def test_lovr_eval_with_remote_code_model(jina_dir: str, eval_source: Path, tmp_path: Path, capsys) -> None:
    repo = eval_repo(tmp_path, eval_source)
    args = eval_args(repo, jina_dir, "--interval", "10")
    assert cli_main(args) == 2 and "--trust-remote-code" in capsys.readouterr().err
    assert cli_main([*args, "--trust-remote-code"]) == 0
    check_eval(repo, jina_dir, dim=32)

    # an option of the backend class without a flag of its own: Matryoshka width through --backend-option
    narrow = ["--model-name", "jina-8", "--backend-option", "truncate_dim=8", "--trust-remote-code"]
    assert cli_main([*args, *narrow]) == 0
    check_eval(repo, "jina-8", dim=8)
    with pytest.raises(SystemExit) as bad:
        cli_main([*args, "--backend-option", "truncate_dim"])
    assert bad.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_jina_clip_matches_own_encode(jina_dir: str, scene_frames: np.ndarray) -> None:
    """jina-clip-v2's own API is its forward for retrieval: the adapter returns exactly what the loaded
    model's ``encode_text`` / ``encode_image`` return for the same inputs (PIL RGB frames), unit length."""
    from PIL import Image
    from transformers import AutoModel

    model = AutoModel.from_pretrained(jina_dir, trust_remote_code=True).eval()
    texts = ["A Man in a red jacket", "two dogs play in the park", LONG]
    ref_t = model.encode_text(texts, batch_size=2)
    ref_f = model.encode_image([Image.fromarray(f) for f in scene_frames], batch_size=2)
    emb = JinaClipEmbedder(jina_dir, trust_remote_code=True, device="cpu", batch_size=2)
    np.testing.assert_allclose(emb.embed_text(texts), ref_t, atol=1e-6)
    np.testing.assert_allclose(emb.embed_frames(scene_frames), ref_f, atol=1e-6)
    narrow = JinaClipEmbedder(jina_dir, trust_remote_code=True, device="cpu", truncate_dim=8)
    ref8 = model.encode_text(texts, truncate_dim=8)
    np.testing.assert_allclose(narrow.embed_text(texts), ref8, atol=1e-6)
    from lovr_hf.backends.embedders.families import family_for

    assert family_for("jinaai/jina-clip-v2").backend == "jina"


def test_jina_text_limit_is_encode_texts_own(jina_dir: str) -> None:
    """jina-clip's ``encode_text`` truncates at ``max_length=512`` unless told otherwise (its cross-modal
    training stopped at 512; the text tower takes 8192): the adapter reports 512 and gives that limit to
    ``encode_text``, so a chunk-mean piece is never cut by the model. With 8190-token pieces (the former
    8192 limit) a caption of a few thousand tokens was one piece, silently cut at 512."""
    from transformers import AutoModel, AutoTokenizer

    emb = JinaClipEmbedder(jina_dir, trust_remote_code=True, device="cpu")
    assert emb.max_text_tokens == 512
    longer = " ".join([LONG] * 2)
    assert len(AutoTokenizer.from_pretrained(jina_dir)(longer).input_ids) > 1000
    tail = longer + " The sun sets over the ocean, waves crash on the rocks and birds fly away." * 5
    trunc = emb.embed_text([longer, tail])
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)  # both cut at 512 tokens
    assert calls()[-1]["max_length"] == 512
    mean = emb.embed_text([longer, tail], text_mode="chunk-mean")
    assert not np.allclose(mean[0], mean[1], atol=1e-4)  # the tail past 512 tokens counts
    model = AutoModel.from_pretrained(jina_dir, trust_remote_code=True).eval()
    np.testing.assert_allclose(trunc, model.encode_text([longer, tail]), atol=1e-6)  # the model's own default
    with pytest.raises(ValueError, match="exceeds the text limit"):
        _ = JinaClipEmbedder(jina_dir, trust_remote_code=True, max_text_tokens=9000).max_text_tokens
    with pytest.raises(ValueError, match="text_mode"):
        emb.embed_text(["a"], text_mode="average")
    # one loaded copy per process for one model, whatever the number of embedders
    assert JinaClipEmbedder(jina_dir, trust_remote_code=True, device="cpu").load() is emb.load()
