"""The helpers every embedder adapter shares (lovr_hf.backends.embedders.common): text-mode refusal, piece
splitting, the explicit text limit, batching with normalisation, frame checks, the remote-code refusal, one
load per process shared across instances and threads, and the text dispatch of ``PieceTextEmbedder``
(truncate, chunk-mean, an explicit lower limit) on a small deterministic encoder."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lovr_hf.backends.embedders.common import (
    PieceTextEmbedder,
    check_frames,
    check_text_mode,
    chunk_mean,
    encode_batches,
    refuse_remote_code,
    text_limit,
    token_pieces,
)
from lovr_hf.backends.extras import require_extra
from lovr_hf.model_labels import model_label
from lovr_hf.stats.vectors import l2_normalize


def test_checks_and_limits() -> None:
    assert check_text_mode("truncate") == "truncate" and check_text_mode("chunk-mean") == "chunk-mean"
    for bad in ("average", None, ""):
        with pytest.raises(ValueError, match="text_mode"):
            check_text_mode(bad)
    assert check_frames(np.zeros((0, 4, 4, 3), np.uint8)).shape == (0, 4, 4, 3)
    with pytest.raises(ValueError, match=r"\[n>0, H, W, 3\]"):
        check_frames(np.zeros((0, 4, 4, 3)), allow_empty=False)
    with pytest.raises(ValueError, match="expected frames"):
        check_frames(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="--trust-remote-code"):
        refuse_remote_code(False, "org/model")
    refuse_remote_code(True, "org/model")
    assert text_limit(None, 77, "m") == 77 and text_limit(20, 77, "m") == 20
    assert text_limit(9000, 512, "m", fixed=False) == 9000
    with pytest.raises(ValueError, match=r"max_text_tokens=100 exceeds the text limit of m \(77 tokens\)"):
        text_limit(100, 77, "m")
    with pytest.raises(ImportError, match=r"needs no_such_mod_xyz: pip install x && y \(why\)"):
        require_extra("b", "e", "no_such_mod_xyz", install="pip install x && y", note="why")


def test_token_pieces_and_batches() -> None:
    decode = lambda ids: " ".join(map(str, ids))  # noqa: E731
    assert token_pieces(range(7), 3, decode) == ["0 1 2", "3 4 5", "6"]
    assert token_pieces([], 3, decode) == [""]  # an empty caption is one (empty) piece
    assert token_pieces([1, 2], 0, decode) == ["1", "2"]  # room below 1 counts as 1

    seen: list[int] = []

    def encode(batch: list[int]) -> np.ndarray:
        seen.append(len(batch))
        return np.array([[float(x), 1.0] for x in batch])

    out = encode_batches(list(range(5)), 2, encode, lambda: 2)
    assert seen == [2, 2, 1] and out.dtype == np.float32
    np.testing.assert_allclose(out, l2_normalize(np.array([[x, 1.0] for x in range(5)])), atol=1e-7)
    assert encode_batches([], 2, encode, lambda: 7).shape == (0, 7)

    mean = chunk_mean(["ab", "c"], list, lambda pieces: np.array([[1.0, 0] if p == "a" else [0, 1.0] for p in pieces]))
    np.testing.assert_allclose(mean, [[2 ** -0.5, 2 ** -0.5], [0, 1]], atol=1e-7)


class WordEmbedder(PieceTextEmbedder):
    """Bag of letters over the first 4 words (its 'model' cuts there); pieces of ``max_text_tokens`` words."""

    name = "words"
    loads = 0

    def __init__(self, text_mode: str = "truncate", max_text_tokens: int | None = None) -> None:
        self.text_mode, self._limit, self._model = check_text_mode(text_mode), max_text_tokens, None

    def load(self) -> str:
        if self._model is None:
            self._model = self.shared(("words",), self._load_uncached)
        return self._model

    def _load_uncached(self) -> str:
        time.sleep(0.05)  # two threads asking at once overlap here
        WordEmbedder.loads += 1
        return "weights"

    @property
    def max_text_tokens(self) -> int:  # type: ignore[override]
        return text_limit(self._limit, 4, "words")

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        self.load()
        out = np.zeros((len(texts), 26), np.float32)
        for i, t in enumerate(texts):
            for ch in "".join(t.split()[:4]):
                out[i, ord(ch) - 97] += 1
        return l2_normalize(out)

    def _text_pieces(self, text: str) -> list[str]:
        words = text.split()
        room = self.max_text_tokens
        return [" ".join(words[i : i + room]) for i in range(0, max(1, len(words)), room)]

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def test_piece_text_dispatch() -> None:
    emb = WordEmbedder()
    text = "a b c d e f"
    t = emb.embed_text([text, "a b c d"])
    np.testing.assert_allclose(t[0], t[1], atol=1e-7)  # truncate: the model's own cut (4 words)
    mean = emb.embed_text([text], text_mode="chunk-mean")[0]
    pieces = emb._encode_texts(["a b c d", "e f"])
    np.testing.assert_allclose(mean, l2_normalize(pieces.sum(0, keepdims=True))[0], atol=1e-7)
    with pytest.raises(ValueError, match="text_mode"):
        emb.embed_text([text], text_mode="average")  # refused at call time too, never run as another mode
    assert emb.embed_text([]).shape == (0, 26) and emb.dim == 26

    # an explicit lower limit cuts under truncate too: the first piece of chunk-mean
    two = WordEmbedder(max_text_tokens=2)
    np.testing.assert_allclose(two.embed_text([text])[0], emb._encode_texts(["a b"])[0], atol=1e-7)
    assert not np.allclose(two.embed_text([text]), emb.embed_text([text]))
    with pytest.raises(ValueError, match="exceeds the text limit"):
        WordEmbedder(max_text_tokens=5).embed_text([text])
    with pytest.raises(ValueError, match="text_mode"):
        WordEmbedder(text_mode="mean")


def test_one_load_per_process_across_instances_and_threads() -> None:
    WordEmbedder.loads = 0
    a, b = WordEmbedder(), WordEmbedder()
    threads = [threading.Thread(target=e.load) for e in (a, b, WordEmbedder())]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert a.load() == b.load() == "weights"
    # at most one load in this process (another test may have loaded it already: the cache is per process)
    assert WordEmbedder.loads <= 1
    state = pickle.loads(pickle.dumps(a)).__dict__
    assert state["_model"] is None  # loaded objects are never pickled into workers


def test_release_forgets_cached_models() -> None:
    from lovr_hf.backends import model_cache

    first = model_cache.load_once(("test-release", 1), lambda: ["weights"])
    assert model_cache.load_once(("test-release", 1), lambda: ["other"]) is first
    assert model_cache.release(lambda k: k[0] == "test-release") == 1
    again = model_cache.load_once(("test-release", 1), lambda: ["reloaded"])
    assert again == ["reloaded"] and again is not first
    assert model_cache.release(lambda k: k[0] == "test-release") == 1
    assert model_cache.release(lambda k: k[0] == "test-release") == 0


def test_several_models_in_one_command_hold_one_model_in_memory_at_a_time(tiny: dict[str, str], eval_source: Path,
                                                                         tmp_path: Path, monkeypatch) -> None:
    """`lovr eval --model A --model B` (and `lovr run --eval-models`) release each model after it is scored:
    the loaded weights of A are garbage once B starts (weak references die), and nothing stays cached."""
    import gc
    import weakref

    from _embedder_helpers import eval_repo

    from lovr_hf.backends import model_cache
    from lovr_hf.evaluation.run import evaluate_models
    from lovr_hf.evaluation.scoring import EvalConfig

    released: list[tuple[str, weakref.ref]] = []
    real_release = model_cache.release

    def recording_release(match=None):  # noqa: ANN001, ANN202
        for key, value in list(model_cache._LOADED.items()):
            if match is None or match(key):
                released.extend((type(v).__name__, weakref.ref(v))
                                for v in (value if isinstance(value, tuple) else (value,))
                                if isinstance(v, torch.nn.Module))
        return real_release(match)

    monkeypatch.setattr(model_cache, "release", recording_release)
    repo = eval_repo(tmp_path, eval_source)
    rows = evaluate_models(repo, [tiny["clip"], tiny["siglip"]], EvalConfig(interval=30, clip_queries="all"))
    assert {r["model"] for r in rows} == {model_label(tiny["clip"]), model_label(tiny["siglip"])}  # folder labels
    gc.collect()
    # both models released (other tests' cached models may go too), and nothing holds any of them any more
    assert {"CLIPModel", "SiglipModel"} <= {name for name, _ in released}
    assert all(ref() is None for _, ref in released)
    assert not [k for k in model_cache._LOADED if k[0] == "embedder"]
