"""A stand-in for jina-clip's remote code, loaded through ``trust_remote_code`` from a local folder.

It implements the documented jina-clip API that lovr_hf's ``jina`` adapter calls (``encode_text`` /
``encode_image`` with ``batch_size`` and Matryoshka ``truncate_dim``; L2-normalised numpy by default; texts
tokenized with jina's defaults ``padding=True, truncation=True, max_length=512`` unless the tokenizer keyword
arguments say otherwise) on a tiny random network, so the adapter's side of the contract is tested offline.
Not jina's model.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel


class JinaStandInConfig(PretrainedConfig):
    model_type = "lovr_jina_standin"

    def __init__(self, vocab_size: int = 512, dim: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.dim = vocab_size, dim


class JinaStandInModel(PreTrainedModel):
    config_class = JinaStandInConfig
    calls: list[dict] = []  # what the adapter passed, for the test to inspect

    def __init__(self, config: JinaStandInConfig) -> None:
        super().__init__(config)
        self.tok = torch.nn.Embedding(config.vocab_size, config.dim)
        self.pix = torch.nn.Linear(3 * 4 * 4, config.dim)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if isinstance(module, torch.nn.Embedding | torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=1.0)
            if getattr(module, "bias", None) is not None:
                torch.nn.init.zeros_(module.bias)

    def _out(self, x: torch.Tensor, truncate_dim: int | None, normalize: bool) -> np.ndarray:
        if truncate_dim:
            x = x[:, :truncate_dim]
        if normalize:
            x = torch.nn.functional.normalize(x, dim=-1)
        return x.detach().float().cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, sentences, task=None, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
                    convert_to_tensor=False, device=None, normalize_embeddings=True, truncate_dim=None,
                    **tokenizer_kwargs):
        JinaStandInModel.calls.append({"fn": "encode_text", "n": len(sentences), "batch_size": batch_size,
                                       "truncate_dim": truncate_dim, "task": task,
                                       "max_length": tokenizer_kwargs.get("max_length")})
        if getattr(self, "_tokenizer", None) is None:  # the model's own code loads its tokenizer, as jina's does
            self._tokenizer = AutoTokenizer.from_pretrained(self.config._name_or_path, trust_remote_code=True)
        # jina-clip's defaults: padding, truncation, max_length 512 unless the caller says otherwise
        tokenizer_kwargs = {"padding": True, "max_length": 512, "truncation": True, **tokenizer_kwargs}
        out = []
        for i in range(0, len(sentences), batch_size):
            enc = self._tokenizer(list(sentences[i : i + batch_size]), return_tensors="pt", **tokenizer_kwargs)
            ids = enc["input_ids"].to(self.tok.weight.device) % self.config.vocab_size
            mask = enc["attention_mask"].to(self.tok.weight.device).unsqueeze(-1).float()
            out.append((self.tok(ids) * mask).sum(1) / mask.sum(1).clamp(min=1))  # mean over real tokens
        return self._out(torch.cat(out), truncate_dim, normalize_embeddings)

    @torch.inference_mode()
    def encode_image(self, images, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
                     convert_to_tensor=False, device=None, normalize_embeddings=True, truncate_dim=None):
        JinaStandInModel.calls.append({"fn": "encode_image", "n": len(images), "batch_size": batch_size,
                                       "truncate_dim": truncate_dim})
        arrs = [np.asarray(im.convert("RGB").resize((4, 4)), np.float32).reshape(-1) / 255.0 for im in images]
        x = torch.tensor(np.stack(arrs), device=self.pix.weight.device, dtype=self.pix.weight.dtype)
        return self._out(self.pix(x), truncate_dim, normalize_embeddings)
