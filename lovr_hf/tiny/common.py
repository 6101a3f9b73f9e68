"""What every tiny-model builder shares: the fixed tokenizer corpus, BPE training, seeding, the tiny tower
sizes and the atomic, idempotent build into a folder (see :mod:`lovr_hf.tiny` for why the models exist).
The family builders import from here, never from the package, so the package can list them without a circle.
"""


from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARKER = "lovr_tiny.json"
#: bump when the builders change what they save, so stale cached folders are rebuilt
BUILD_VERSION = 1

# Fixed training corpus for the tiny tokenizers: words a captioner and a retrieval model meet.
_CORPUS = [
    "The video shows a person walking along a busy street in the city at night.",
    "A man in a red jacket talks to a woman near a car; the camera pans slowly to the left.",
    "Scene: a kitchen with bright lights, someone is cooking pasta and chopping vegetables.",
    "The overall style is cinematic, with warm colors and a calm, emotional atmosphere.",
    "Children play football in a green park while dogs run across the grass.",
    "A drone flies over mountains and a blue lake; clouds move quickly in the sky.",
    "In the first scene, the character opens a door; in the second, she reads a letter.",
    "Noteworthy details include a clock on the wall, a black cat, and rain on the window.",
    "The narrative follows a journey from the beginning to the end of the day.",
    "Events: a meeting, a conversation, an argument, a celebration with music and dancing.",
    "Text on screen reads 2024, 10:30, 42 km, 3 people, 100%.",
    "Close-up of hands typing on a keyboard, then a wide shot of an office with many desks.",
    "The sun sets over the ocean, waves crash on the rocks and birds fly away.",
    "A white dog, a brown horse and a small yellow bird appear in the frame.",
    "Overall, the video presents a detailed and structured description of everyday life.",
    "You are a video analysis assistant. Describe events, scenes, actions, style and mood.",
]

TINY_IMAGE_SIZE = 32
#: the size of every tiny transformer tower (text or vision): 2 layers, 2 heads, width 32, MLP 64
TINY_TOWER: dict[str, int] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 2}


def tiny_tower(**fields: Any) -> dict[str, Any]:
    """A tower config of :data:`TINY_TOWER` size plus the family's own ``fields``."""
    return {**TINY_TOWER, **fields}


def _seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _train_bpe(
    *,
    vocab_size: int,
    special_tokens: list[str],
    configure: Callable[[Any], None],
    end_of_word_suffix: str | None = None,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE on the built-in corpus; return (vocab, merges) for a transformers tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    model = models.BPE(end_of_word_suffix=end_of_word_suffix) if end_of_word_suffix else models.BPE()
    tok = Tokenizer(model)
    configure(tok)
    if end_of_word_suffix:
        return _suffix_bpe(_word_counts(tok), vocab_size, special_tokens, pre_tokenizers.ByteLevel.alphabet(),
                           end_of_word_suffix)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        **({"end_of_word_suffix": end_of_word_suffix} if end_of_word_suffix else {}),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in data["model"]["merges"]]
    return vocab, merges  # type: ignore[return-value]


def _word_counts(tok: Any) -> Counter[str]:
    """The corpus's words as ``tok`` normalises and pre-tokenizes them (what a BPE trainer counts)."""
    counts: Counter[str] = Counter()
    for line in _CORPUS * 4:
        text = tok.normalizer.normalize_str(line) if tok.normalizer is not None else line
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(text))
    return counts


def _suffix_bpe(words: Counter[str], vocab_size: int, special_tokens: list[str], alphabet: list[str],
                suffix: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE with an end-of-word suffix (CLIP's ``</w>``) whose vocabulary depends on the corpus only.

    ``tokenizers``' BpeTrainer numbers the suffixed symbols (``a</w>``...) in hash order and breaks ties
    between equally frequent pairs by those numbers, so the same corpus gave another vocabulary on every
    call: the tiny CLIP, its label and the demo's results changed from run to run. Here the initial symbols
    are numbered in sorted order and the trainer's own rule is applied (:func:`_learn_merges`).
    """
    seqs = {w: (*w[:-1], w[-1] + suffix) for w in words if w}
    initial = [*special_tokens, *sorted({*alphabet, *(c for s in seqs.values() for c in s[:-1])}),
               *sorted({s[-1] for s in seqs.values()})]
    return _learn_merges({seqs[w]: n for w, n in words.items() if w}, list(dict.fromkeys(initial)), vocab_size)


def _learn_merges(seqs: dict[tuple[str, ...], int], tokens: list[str],
                  vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Greedy BPE as ``tokenizers``' BpeTrainer does it: merge the most frequent adjacent pair (a pair counts
    once per occurrence, times its word's count), ties to the pair of lowest ids, new tokens numbered in
    order, until ``vocab_size`` tokens. ``tokens``: the initial symbols in id order."""
    ids = {t: i for i, t in enumerate(tokens)}
    merges: list[tuple[str, str]] = []
    while len(tokens) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for s, n in seqs.items():
            for pair in zip(s, s[1:]):
                pairs[pair] += n
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], ids[p[0]], ids[p[1]]))
        merges.append((a, b))
        if a + b not in ids:
            ids[a + b] = len(tokens)
            tokens.append(a + b)
        merged: Counter[tuple[str, ...]] = Counter()
        for s, n in seqs.items():
            out, i = [], 0
            while i < len(s):
                take = i + 1 < len(s) and s[i] == a and s[i + 1] == b
                out.append(a + b if take else s[i])
                i += 2 if take else 1
            merged[tuple(out)] += n
        seqs = dict(merged)
    return ids, merges


# files a (possibly interrupted) build writes: only folders made of these are ever replaced
_BUILD_FILES = {
    MARKER, "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja",
    "chat_template.json", "processor_config.json", "preprocessor_config.json",
    "video_preprocessor_config.json", "added_tokens.json", "open_clip_config.json",
    "open_clip_model.safetensors",
}  # fmt: skip


def _check_replaceable(out: Path) -> None:
    """Refuse to delete a folder that is not an (old or interrupted) tiny-model build."""
    foreign = [p.name for p in out.iterdir() if p.name not in _BUILD_FILES] if out.is_dir() else [out.name]
    if foreign:
        raise FileExistsError(
            f"{out} exists and is not a tiny-model folder (has {foreign[:3]}); not replacing it"
        )


def _build_once(out_dir: str | os.PathLike[str], kind: str, seed: int, build: Callable[[Path], None]) -> str:
    """Run ``build(tmp)`` unless ``out_dir`` already holds a complete build; publish atomically."""
    out = Path(out_dir)
    marker = out / MARKER
    want = {"kind": kind, "seed": seed, "version": BUILD_VERSION}
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == want:
                return str(out)
        except (OSError, ValueError):
            pass
        logger.info("rebuilding tiny model in %s (stale or different build)", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(want))
        if out.exists():
            if (out / MARKER).exists() and json.loads((out / MARKER).read_text()) == want:
                return str(out)  # another process won the race
            _check_replaceable(out)
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:  # lost a race to another builder: its (identical) folder stands
            if not (out / MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built tiny %s model in %s", kind, out)
    return str(out)
