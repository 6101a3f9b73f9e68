"""Stand-in text side: CLIP BPE tokenizer (open_clip's bundled vocabulary) with a 248-token context and a tiny
causal text transformer pooled at the end-of-text token (the highest id), Long-CLIP style positions."""

import torch
import torch.nn as nn
from open_clip.tokenizer import SimpleTokenizer

CONTEXT = 248
_tokenizer = SimpleTokenizer()


def tokenize(texts, context_length=CONTEXT, truncate=False):
    if isinstance(texts, str):
        texts = [texts]
    sot, eot = _tokenizer.encoder["<start_of_text>"], _tokenizer.encoder["<end_of_text>"]
    out = torch.zeros(len(texts), context_length, dtype=torch.int)
    for i, text in enumerate(texts):
        ids = [sot, *_tokenizer.encode(text), eot]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(f"text too long for context length {context_length}")
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids)
    return out


class TextModel(nn.Module):
    def __init__(self, width=16, dim=16, vocab=49408, heads=2):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(CONTEXT, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, 1)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, dim) * width**-0.5)
        self.register_buffer("attn_mask", torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1), persistent=False)

    def encode_text(self, text):
        x = self.token_embedding(text.long()) + self.positional_embedding
        x = self.ln_final(self.transformer(x, mask=self.attn_mask))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def load():
    return TextModel().eval()
