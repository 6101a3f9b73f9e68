"""What a Chat Completions server accepts, per server kind, for the stand-in server's request checks.

``openai`` follows the official API reference for ``POST /v1/chat/completions``: request fields outside
the documented set are refused with HTTP 400 ``Unrecognized request argument supplied: <name>``, content
parts must be one of the documented types for their role, and images must be base64 data URLs of a
supported format (the stand-in cannot fetch http URLs, being offline). ``vllm`` follows vLLM's
OpenAI-compatible server: the official fields plus its sampling and multimodal extensions, ``video_url``
parts (``data:video/jpeg;base64,<frame>,<frame>...`` is a video of JPEG frames), and unknown fields
ignored with a warning rather than refused. Errors use each server's error body shape.

The checks are deliberately about what breaks requests in practice (unknown fields, wrong part types,
bad ranges, undecodable images), not a full JSON-schema validation.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: request fields of the official Chat Completions API (``stream`` included; the SDK sets it itself)
OPENAI_FIELDS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "messages", "metadata", "modalities", "model", "moderation", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})  # fmt: skip
#: vLLM's extra request fields (sampling extensions and chat/multimodal options)
VLLM_EXTRA_FIELDS = frozenset({
    "best_of", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids",
    "bad_words", "echo", "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents",
    "chat_template", "chat_template_kwargs", "mm_processor_kwargs", "guided_json", "guided_regex",
    "guided_choice", "guided_grammar", "structured_outputs", "priority", "request_id", "return_tokens_as_token_ids",
    "cache_salt", "kv_transfer_params", "vllm_xargs",
})  # fmt: skip
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
OPENAI_PARTS = {
    "user": ("text", "image_url", "input_audio", "file"),
    "system": ("text",),
    "developer": ("text",),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
VLLM_PARTS = ("text", "image_url", "video_url", "input_audio", "audio_url", "image_embeds", "image_pil")
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
#: (field, minimum, maximum) of the numeric sampling fields
RANGES = (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("presence_penalty", -2.0, 2.0),
          ("frequency_penalty", -2.0, 2.0), ("n", 1, 128), ("max_tokens", 1, None),
          ("max_completion_tokens", 1, None), ("top_logprobs", 0, 20))
API_KINDS = ("openai", "vllm", "any")


@dataclass
class Rejection:
    """Why a request is refused, as the server would answer it."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def body(self, api: str) -> dict[str, Any]:
        if api == "vllm":  # vLLM's ErrorResponse: the exception name as type, the status as code
            return {"error": {"message": self.message, "type": "BadRequestError", "param": self.param,
                              "code": self.status}}
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Checked:
    """The outcome of checking one request: a rejection, or fields a vLLM server ignored."""

    rejection: Rejection | None = None
    ignored_fields: tuple[str, ...] = ()


def _supported(values: Iterable[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _invalid_value(value: Any, allowed: Iterable[str], param: str) -> Rejection:
    return Rejection(400, f"Invalid value: '{value}'. Supported values are: {_supported(allowed)}.", param,
                     "invalid_value")


def decode_data_url(url: str, kinds: tuple[str, ...] = ("image",)) -> tuple[str, bytes] | None:
    """(media type, bytes) of a ``data:<kind>/<fmt>;base64,<payload>`` URL, None when it is not one."""
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        return None
    head, payload = url[5:].split(",", 1)
    media, _, enc = head.partition(";")
    if enc != "base64" or media.split("/", 1)[0] not in kinds:
        return None
    try:
        return media, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def _image_ok(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return True
    except Exception:
        return False


def video_frames_of(url: str) -> list[bytes] | None:
    """JPEG frames of a vLLM ``data:video/jpeg;base64,<frame>,<frame>...`` URL, None when it is not one."""
    if not isinstance(url, str) or not url.lower().startswith("data:video/jpeg;base64,"):
        return None
    try:
        return [base64.b64decode(f, validate=True) for f in url.split(",", 1)[1].split(",")]
    except (binascii.Error, ValueError):
        return None


def _check_part(part: Any, role: str, where: str, api: str) -> Rejection | None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return Rejection(400, f"Invalid type for '{where}': expected an object with a 'type'.", where, "invalid_type")
    kind = part["type"]
    allowed = VLLM_PARTS if api == "vllm" else OPENAI_PARTS.get(role, ("text",))
    if kind not in allowed:
        if api == "vllm":
            return Rejection(400, f"Unknown part type: {kind}", f"{where}.type")
        return _invalid_value(kind, allowed, f"{where}.type")
    if kind == "text" and not isinstance(part.get("text"), str):
        return Rejection(400, f"Missing required parameter: '{where}.text'.", f"{where}.text",
                         "missing_required_parameter")
    if kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            return Rejection(400, f"Missing required parameter: '{where}.image_url.url'.", f"{where}.image_url.url",
                             "missing_required_parameter")
        extra = set(image) - {"url", "detail"}
        if extra and api == "openai":
            return Rejection(400, f"Unrecognized request argument supplied: {sorted(extra)[0]}")
        if "detail" in image and image["detail"] not in ("auto", "low", "high"):
            return _invalid_value(image["detail"], ("auto", "low", "high"), f"{where}.image_url.detail")
        decoded = decode_data_url(image["url"])
        if decoded is None:
            return Rejection(400, "Invalid image URL: this offline stand-in accepts base64 data URLs only "
                                  "(data:image/<format>;base64,...).", f"{where}.image_url.url", "invalid_image_url")
        media, data = decoded
        if media.split("/", 1)[1] not in IMAGE_FORMATS or not _image_ok(data):
            return Rejection(400, "You uploaded an unsupported image. Please make sure your image is below 20 MB in "
                                  f"size and is of one the following formats: {list(IMAGE_FORMATS)}.", None,
                             "invalid_image_format")
    if kind == "video_url":
        video = part.get("video_url")
        url = video.get("url") if isinstance(video, dict) else None
        frames = video_frames_of(url) if url else None
        if frames is None or not all(_image_ok(f) for f in frames):
            return Rejection(400, "video_url must be data:video/jpeg;base64,<frame>,<frame>... for this stand-in",
                             f"{where}.video_url.url")
    return None


def _check_messages(messages: Any, api: str) -> Rejection | None:
    if not isinstance(messages, list) or not messages:
        return Rejection(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                              "empty array instead.", "messages", "empty_array")
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            return Rejection(400, f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        role = msg.get("role")
        if role not in ROLES:
            return _invalid_value(role, ROLES, f"{where}.role")
        content = msg.get("content")
        if content is None and role in ("assistant", "function"):
            continue
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return Rejection(400, f"Invalid type for '{where}.content': expected one of a string or array of "
                                  "objects.", f"{where}.content", "invalid_type")
        for j, part in enumerate(content):
            bad = _check_part(part, role, f"{where}.content[{j}]", api)
            if bad is not None:
                return bad
    return None


def _check_ranges(body: dict[str, Any]) -> Rejection | None:
    for name, low, high in RANGES:
        if name not in body or body[name] is None:
            continue
        value = body[name]
        integral = isinstance(low, int) and not isinstance(low, bool)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and not isinstance(value, int)):
            kind = "an integer" if integral else "a decimal"
            return Rejection(400, f"Invalid type for '{name}': expected {kind}, but got {type(value).__name__} "
                                  "instead.", name, "invalid_type")
        word = "integer" if integral else "decimal"
        if value < low:
            return Rejection(400, f"Invalid '{name}': {word} below minimum value. Expected a value >= {low}, but got "
                                  f"{value} instead.", name, f"{word}_below_min_value")
        if high is not None and value > high:
            return Rejection(400, f"Invalid '{name}': {word} above maximum value. Expected a value <= {high}, but got "
                                  f"{value} instead.", name, f"{word}_above_max_value")
    if "seed" in body and body["seed"] is not None and (isinstance(body["seed"], bool) or
                                                        not isinstance(body["seed"], int)):
        return Rejection(400, "Invalid type for 'seed': expected an integer.", "seed", "invalid_type")
    return None


def check_request(body: Any, api: str) -> Checked:
    """Check one chat-completions request body the way a server of kind ``api`` would."""
    if api not in API_KINDS:
        raise ValueError(f"unknown api kind {api!r}; known: {API_KINDS}")
    if not isinstance(body, dict):
        return Checked(Rejection(400, "We could not parse the JSON body of your request. (HINT: This likely means "
                                      "you aren't using your HTTP library correctly.)"))
    if api == "any":
        if not isinstance(body.get("messages"), list):
            return Checked(Rejection(400, "messages required"))
        return Checked()
    ignored: tuple[str, ...] = ()
    if api == "openai":
        unknown = sorted(set(body) - OPENAI_FIELDS)
        if unknown:
            which = "argument" if len(unknown) == 1 else "arguments"
            return Checked(Rejection(400, f"Unrecognized request {which} supplied: {', '.join(unknown)}"))
    else:
        ignored = tuple(sorted(set(body) - OPENAI_FIELDS - VLLM_EXTRA_FIELDS))
        if "mm_processor_kwargs" in body and not isinstance(body["mm_processor_kwargs"], (dict, type(None))):
            return Checked(Rejection(400, "mm_processor_kwargs must be an object", "mm_processor_kwargs"))
    if "messages" not in body:
        return Checked(Rejection(400, "Missing required parameter: 'messages'.", "messages",
                                 "missing_required_parameter"))
    if not isinstance(body.get("model"), str) or not body["model"]:
        return Checked(Rejection(400, "you must provide a model parameter"))
    if body.get("stream"):
        return Checked(Rejection(400, "this stand-in does not stream; send stream=false", "stream"))
    bad = _check_messages(body.get("messages"), api) or _check_ranges(body)
    return Checked(bad, ignored)
