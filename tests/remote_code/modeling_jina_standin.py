"""A stand-in for jina-clip's remote code, loaded through ``trust_remote_code`` from a local folder.

It implements the documented jina-clip API that lovr_hf's ``jina`` adapter calls (``encode_text`` /
``encode_image`` with ``batch_size`` and Matryoshka ``truncate_dim``; L2-normalised numpy by default) on a
tiny random network, so the adapter's side of the contract is tested offline. Not jina's model.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel


class JinaStandInConfig(PretrainedConfig):
    model_type = "lovr_jina_standin"

    def __init__(self, vocab_size: int = 512, dim: int = 32, max_tokens: int = 24, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.max_tokens = vocab_size, dim, max_tokens


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
                                       "truncate_dim": truncate_dim, "task": task})
        if getattr(self, "_tokenizer", None) is None:  # the model's own code loads its tokenizer, as jina's does
            self._tokenizer = AutoTokenizer.from_pretrained(self.config._name_or_path, trust_remote_code=True)
        tokenizer = self._tokenizer
        out = []
        for i in range(0, len(sentences), batch_size):
            for s in sentences[i : i + batch_size]:
                ids = tokenizer(s, add_special_tokens=False).input_ids[: self.config.max_tokens] or [0]
                ids = torch.tensor(ids, device=self.tok.weight.device) % self.config.vocab_size
                out.append(self.tok(ids).mean(0))
        return self._out(torch.stack(out), truncate_dim, normalize_embeddings)

    @torch.inference_mode()
    def encode_image(self, images, batch_size=32, show_progress_bar=None, convert_to_numpy=True,
                     convert_to_tensor=False, device=None, normalize_embeddings=True, truncate_dim=None):
        JinaStandInModel.calls.append({"fn": "encode_image", "n": len(images), "batch_size": batch_size,
                                       "truncate_dim": truncate_dim})
        arrs = [np.asarray(im.convert("RGB").resize((4, 4)), np.float32).reshape(-1) / 255.0 for im in images]
        x = torch.tensor(np.stack(arrs), device=self.pix.weight.device, dtype=self.pix.weight.dtype)
        return self._out(self.pix(x), truncate_dim, normalize_embeddings)
