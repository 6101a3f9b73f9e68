"""Default prompts, faithful to the original LoVR code, plus the prompts for the stages it left out.

The captioner prompts are the original texts of ``caption_generator.py`` character for character: its
user prompt is a string literal continued over source lines with backslashes, so each sentence break
carries the next line's indentation (33 spaces) into the text the model saw, and so does ours (the
tokens, hence the captions, are the original's). The transition prompt is ``caption_merger.py``'s. The integration, theme and judge
prompts follow the LoVR paper (full-video captions by repeated paragraph integration, theme captions,
caption quality scores) since the released code has no such step.

Templates use ``{name}`` placeholders filled by :func:`render_prompt`, which replaces only the names it
is given: captions containing braces (code, JSON, emoticons) never break formatting the way
``str.format`` would.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

# ---- clip captioning (caption_generator.py) ----------------------------------------------------------
CAPTION_SYSTEM = (
    "You are a video analysis assistant, and your task is to provide a detailed and structured description "
    "of the provided video."
)
#: the gap a backslash line continuation left between the original's sentences: a space, then the
#: 32-space indentation of the next source line
_ORIGINAL_GAP = " " * 33
CAPTION_USER = _ORIGINAL_GAP.join((
    "Please provide a detailed and comprehensive description of the video content.",
    "Your description should cover the events, scenes, character actions, overall style,",
    "emotional atmosphere, narrative elements, and any noteworthy details.",
    "Ensure that your description is clear, coherent, and thorough, with as much detail as possible.",
))

# ---- caption merging (caption_merger.py) -------------------------------------------------------------
MERGE_SYSTEM = "You are a helpful video summarizer."

#: the original transition-smoothing prompt; ``{prev}`` = last paragraph of the text merged so far,
#: ``{next}`` = first paragraph of the next clip caption. The ``\n`` escapes are the original's: the model
#: sees real line breaks there, exactly as with the original script.
TRANSITION_PROMPT = """Strictly follow these requirements for caption connection. Given the last paragraph of the previous caption and the first paragraph of the next caption, optimize the connection between them.:

# Original Content
[Last paragraph of previous caption]:
{prev}

[First paragraph of next paragraph]:
{next}

# Requirements
1. Preserve facts: Keep all key information including names, actions, and objects unchanged
2. Transition optimization:
- Add temporal transition words (e.g., "then", "after that") to connect the two paragraphs
- Slightly adjust sentence order to improve logical flow
3. Conciseness: Remove repetitive content and keep language concise
4. Format specifications:
- There must be a \n between the paragraphs
- Do not include any additional explanations or notes, only output the modified paragraphs

# Output format (must strictly follow, Do not include any additional explanations or notes):
[Optimized end of previous paragraph] \n [Optimized beginning of next paragraph]"""

#: labels the original prompt asks for and that models echo back; stripped from replies
TRANSITION_LABELS = ("[Optimized end of previous paragraph]", "[Optimized beginning of next paragraph]")

# ---- full-video captions (paper: repeated paragraph integration) ---------------------------------------
INTEGRATE_PROMPT = """Please integrate the following two paragraphs of a video description into one coherent description with logical flow and sequential coherence. The second paragraph describes what happens after the first one in the same video.

# First paragraph (earlier in the video)
{first}

# Second paragraph (later in the video)
{second}

# Requirements
1. Preserve facts: keep all key information including names, actions, objects, scenes and their order unchanged; do not invent anything.
2. Keep the chronological order and add temporal transitions where the content moves on.
3. Remove content repeated across the two paragraphs and keep the language concise, but do not summarize: keep the level of detail.
4. Output only the integrated description as plain paragraphs separated by line breaks, with no title, labels, explanations or notes."""

THEME_PROMPT = """Below is a detailed description of a whole video, in chronological order.

{caption}

Write one short paragraph (2-4 sentences) stating the overall theme of the video: what it is about, its main subjects and setting, and its style or mood. Output only the paragraph, with no title, labels or notes."""

# ---- caption quality judge (paper: captions scored, re-generated below a threshold) -------------------
JUDGE_SYSTEM = "You are a strict evaluator of video descriptions."
JUDGE_PROMPT = """Rate the quality of the following description of a short video clip on a scale from 0 to 10.

A good description (8-10) is detailed, specific, coherent and fluent, covers events, scenes, character actions, style and atmosphere, and has no repetition, truncation or meaningless text. A poor description (0-3) is very short, vague, repetitive, truncated, off-topic or degenerate.

# Description
{caption}

Reply with only the score, a number from 0 to 10."""

_SCORE_RE = re.compile(r"(?<![\d.])(10(?:\.0+)?|\d(?:\.\d+)?)(?:\s*/\s*10)?(?![\d])")


def parse_score(reply: str | None) -> float | None:
    """First number in [0, 10] of a judge reply ("7", "Score: 8/10", "**6.5**"); None when there is none."""
    if not reply:
        return None
    m = _SCORE_RE.search(reply)
    if m is None:
        return None
    value = float(m.group(1))
    return value if 0.0 <= value <= 10.0 else None


def render_prompt(template: str, **fields: str) -> str:
    """Fill ``{name}`` placeholders of ``template``; other braces are left untouched."""
    out = template
    for name, value in fields.items():
        out = out.replace("{" + name + "}", value)
    return out


def prompt_fields(template: str, text: str) -> dict[str, str] | None:
    """The ``{name}`` values that :func:`render_prompt` put into ``template`` to give ``text``, or None.

    The inverse of rendering, so a backend can tell which task a message is (a join, a theme) and size
    its reply to the inputs, without the caller passing anything but the chat messages.
    """
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.*?)" for i, p in enumerate(parts))
    m = re.fullmatch(pattern, text, flags=re.S)
    return None if m is None else m.groupdict()


def prompt_hash(*texts: str) -> str:
    """Short stable id of the prompt texts that shaped an output (12 hex chars of sha256)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")  # separator: ("ab", "c") and ("a", "bc") must differ
    return h.hexdigest()[:12]


def load_prompt(path: str | Path) -> str:
    """One prompt from a text file (UTF-8); only the trailing newline(s) an editor adds are dropped."""
    text = Path(path).read_text(encoding="utf-8").rstrip("\n")
    if not text.strip():
        raise ValueError(f"prompt file {path} is empty")
    return text


def load_prompt_set(path: str | Path, defaults: dict[str, str]) -> dict[str, str]:
    """Override several prompts at once from a JSON or YAML mapping (keys must be among ``defaults``).

    A plain text file overrides the ``"user"`` prompt only, the common case for captioning.
    """
    p = Path(path)
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        raw = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            import yaml

            data = yaml.safe_load(raw)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of prompt name -> text")
        unknown = set(data) - set(defaults)
        if unknown:
            raise ValueError(f"{path}: unknown prompt names {sorted(unknown)}; known: {sorted(defaults)}")
        bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(f"{path}: prompts {bad} must be non-empty strings")
        return {**defaults, **data}
    if "user" not in defaults:
        raise ValueError(f"{path}: a text file overrides the 'user' prompt, which this stage does not have")
    return {**defaults, "user": load_prompt(p)}


def caption_prompt() -> dict[str, str]:
    """The original captioner prompt as the ``{"system", "user"}`` dict captioners take."""
    return {"system": CAPTION_SYSTEM, "user": CAPTION_USER}
