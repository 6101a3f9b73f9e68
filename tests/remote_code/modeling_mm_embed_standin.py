"""A stand-in for nvidia/MM-Embed's remote code, loaded through ``trust_remote_code`` from a local folder.

It implements the documented API the ``mm_embed`` adapter calls: ``encode(items, is_query, instruction,
max_length)`` on a list of ``{"txt": str}`` / ``{"img": PIL.Image}`` dicts, returning ``{"hidden_states":
tensor [n, d]}`` — NOT normalised (the original script normalised them itself), queries prefixed with
``Instruct: {instruction}\\nQuery: `` and truncated at ``max_length`` tokens. A tiny random network, not
NVIDIA's model.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel


class MMEmbedStandInConfig(PretrainedConfig):
    model_type = "lovr_mm_embed_standin"

    def __init__(self, vocab_size: int = 1024, dim: int = 24, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.dim = vocab_size, dim


class MMEmbedStandInModel(PreTrainedModel):
    config_class = MMEmbedStandInConfig
    calls: list[dict] = []

    def __init__(self, config: MMEmbedStandInConfig) -> None:
        super().__init__(config)
        self.tok = torch.nn.Embedding(config.vocab_size, config.dim)
        self.pos = torch.nn.Embedding(8192, config.dim)
        self.pix = torch.nn.Linear(3 * 4 * 4, config.dim)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if isinstance(module, torch.nn.Embedding | torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=1.0)
            if getattr(module, "bias", None) is not None:
                torch.nn.init.zeros_(module.bias)

    @torch.inference_mode()
    def encode(self, inputs, is_query=False, instruction=None, max_length=512, **kwargs):
        MMEmbedStandInModel.calls.append({"n": len(inputs), "is_query": is_query, "instruction": instruction,
                                          "max_length": max_length, "keys": sorted({k for d in inputs for k in d})})
        if getattr(self, "_tokenizer", None) is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.config._name_or_path, trust_remote_code=True)
        rows = []
        for item in inputs:
            if "txt" in item:
                text = f"Instruct: {instruction}\nQuery: {item['txt']}" if is_query and instruction else item["txt"]
                ids = self._tokenizer(text).input_ids[:max_length] or [0]
                ids = torch.tensor(ids, device=self.tok.weight.device) % self.config.vocab_size
                pos = torch.arange(len(ids), device=ids.device)
                rows.append((self.tok(ids) + 0.1 * self.pos(pos)).mean(0) * 3.0)
            else:
                arr = np.asarray(item["img"].convert("RGB").resize((4, 4)), np.float32).reshape(-1) / 255.0
                rows.append(self.pix(torch.tensor(arr, device=self.pix.weight.device)) * 5.0)
        return {"hidden_states": torch.stack(rows)}
