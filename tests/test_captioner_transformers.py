"""Captioning backends on real decoded frames: the transformers VLM backend (tiny Qwen2-VL / Qwen2.5-VL /
Qwen3-VL, real forward passes), the original LoVR frame-count/skip rules, and the deterministic dummy backends."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lovr_hf.backends.base import CAPTIONERS, LLMS, GenerationParams
from lovr_hf.backends.captioners.common import OutOfMemory
from lovr_hf.backends.captioners.transformers import TransformersCaptioner, downscale_frames
from lovr_hf.backends.devices import resolve_device, resolve_dtype
from lovr_hf.backends.standins.testing import DummyCaptioner, DummyChatLLM
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.tiny import build_tiny_qwen2vl, build_tiny_qwen3vl, build_tiny_qwen25vl
from lovr_hf.video.frames import caption_frame_plan, caption_num_frames, uniform_indices
from lovr_hf.video.reader import probe, read_frames

PROMPT = {"system": "You are a video analysis assistant.", "user": "Describe the video in detail."}
GREEDY = GenerationParams(do_sample=False, max_new_tokens=8)
BUILDERS = {"qwen2_5_vl": build_tiny_qwen25vl, "qwen2_vl": build_tiny_qwen2vl}


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.getbasetemp() / "tiny_models"  # shared with the other tiny-model tests
    return {arch: build(root / arch) for arch, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def two_clips(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Frames of two real clips (decoded from an H.264 file) chosen by the LoVR captioning rule."""
    path = tmp_path_factory.mktemp("captioner_video") / "two_scenes.mp4"
    make_video(path, [SceneSpec(30), SceneSpec(7)], width=160, height=96, fps=24, seed=1)
    info = probe(path)
    assert info.num_frames == 37
    clips = []
    for start, n in ((0, 30), (30, 7)):
        plan = caption_frame_plan(n, n / info.fps)
        clips.append(read_frames(path, plan.indices, frame_offset=start, num_frames=n))
    assert [len(c) for c in clips] == [8, 2]  # >= 8 frames: max(8, 1 s) = 8; a 7-frame clip gets 2 frames
    return clips


# ------------------------------------------------------------------------------------ frame rules


def test_caption_frame_count_rule() -> None:
    fps = 25.0
    assert caption_num_frames(4, 4 / fps) == 0  # < 5 frames: skipped
    assert caption_num_frames(5, 5 / fps) == 2  # 5..7 frames: 2 frames
    assert caption_num_frames(7, 7 / fps) == 2
    assert caption_num_frames(8, 8 / fps) == 8  # short clip: at least 8
    assert caption_num_frames(25 * 12, 12.0) == 12  # one frame per whole second
    assert caption_num_frames(int(25 * 12.9), 12.9) == 12  # whole seconds, not rounded
    assert caption_num_frames(25 * 300, 300.0) == 64  # capped at 64
    assert caption_num_frames(25 * 300, 300.0, max_frames=16) == 16  # retry with fewer frames
    assert caption_num_frames(10, 20.0) == 10  # < 1 fps: never more frames than the clip has


def test_caption_frame_plan_indices_and_skip_reason() -> None:
    skipped = caption_frame_plan(3, 0.1)
    assert skipped.skipped and skipped.indices == () and "3 < 5" in skipped.skip_reason
    short = caption_frame_plan(6, 0.25)
    assert short.indices == (0, 5) and not short.skipped
    plan = caption_frame_plan(250, 10.0)
    assert len(plan.indices) == 10 and plan.indices[0] == 0 and plan.indices[-1] == 249
    assert list(plan.indices) == sorted(set(plan.indices))
    steps = np.diff(plan.indices)
    assert steps.max() - steps.min() <= 1  # uniform
    assert uniform_indices(10, 3) == [0, 4, 9]
    assert uniform_indices(5, 9) == [0, 1, 2, 3, 4]
    assert uniform_indices(0, 3) == [] and uniform_indices(5, 0) == []


# ------------------------------------------------------------------------------------ transformers backend


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_batched_left_padded_generation_matches_single(tiny_vlms, two_clips, arch: str) -> None:
    cap = CAPTIONERS.create("transformers", model_path=tiny_vlms[arch], device="auto")
    assert isinstance(cap, TransformersCaptioner) and cap.model_id() == tiny_vlms[arch]
    batch = cap.caption(two_clips, PROMPT, GREEDY)
    stats = cap.last_stats
    singles = [cap.caption([clip], PROMPT, GREEDY)[0] for clip in two_clips]

    assert len(batch) == 2 and all(isinstance(t, str) and t for t in batch)
    assert batch == singles  # left padding: the shorter prompt in the batch generates exactly as alone
    model, processor = cap.load()
    assert processor.tokenizer.padding_side == "left"
    # the two clips really have different prompt lengths, so the batch was padded
    lengths = [
        processor(text=[cap.last_prompt_text], videos=[clip], return_tensors="pt")["input_ids"].shape[1]
        for clip in two_clips
    ]
    assert lengths[0] != lengths[1]
    assert stats["clips"] == 2 and stats["tokens_in"] == sum(lengths)
    assert len(stats["tokens_out_per_clip"]) == 2 and 0 < stats["tokens_out"] <= 2 * GREEDY.max_new_tokens
    assert stats["generate_s"] > 0
    assert "You are a video analysis assistant." in cap.last_prompt_text


def test_qwen3_vl_batched_captions_match_single(tmp_path_factory, two_clips) -> None:
    """Qwen3-VL (deepstack, interleaved M-RoPE, per-frame timestamps) captions through the same backend."""
    path = build_tiny_qwen3vl(tmp_path_factory.getbasetemp() / "tiny_models" / "qwen3_vl")
    cap = TransformersCaptioner(path, device="cpu")
    batch = cap.caption(two_clips, PROMPT, GREEDY)
    singles = [cap.caption([clip], PROMPT, GREEDY)[0] for clip in two_clips]
    assert len(batch) == 2 and all(isinstance(t, str) and t for t in batch)
    assert batch == singles  # left padding
    model, processor = cap.load()
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    # the processor expands the video into timestamped frame groups, from the fps the captioner passed
    inputs = processor(
        text=[cap.last_prompt_text],
        videos=[two_clips[0]],
        return_tensors="pt",
        videos_kwargs=cap._video_kwargs(two_clips[:1], GREEDY, processor),
    )
    prompt = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "<0.5 seconds>" in prompt and "<6.5 seconds>" in prompt  # 8 frames at 1 fps, 2 per group


def test_sampling_is_seeded_and_loads_once(tiny_vlms, two_clips) -> None:
    cap = TransformersCaptioner(tiny_vlms["qwen2_5_vl"], device="cpu", dtype="float32")
    params = GenerationParams(max_new_tokens=6, temperature=1.5, top_p=1.0, do_sample=True, seed=7)
    first = cap.caption(two_clips[:1], PROMPT, params)
    assert cap.caption(two_clips[:1], PROMPT, params) == first
    # a second instance in the same process shares the loaded model (one load per process and device)
    other = TransformersCaptioner(tiny_vlms["qwen2_5_vl"], device="cpu", dtype="float32")
    assert other.load()[0] is cap.load()[0]


def test_pickling_drops_the_model(tiny_vlms, two_clips) -> None:
    cap = TransformersCaptioner(tiny_vlms["qwen2_vl"], device="cpu")
    expected = cap.caption(two_clips[1:], PROMPT, GREEDY)
    blob = pickle.dumps(cap)
    assert len(blob) < 10_000  # no weights inside
    clone = pickle.loads(blob)
    assert clone._model is None
    assert clone.caption(two_clips[1:], PROMPT, GREEDY) == expected


def test_max_pixels_and_downscale_reduce_visual_tokens(tiny_vlms, two_clips) -> None:
    full = TransformersCaptioner(tiny_vlms["qwen2_5_vl"], device="cpu")
    full.caption(two_clips[:1], PROMPT, GREEDY)
    small = TransformersCaptioner(tiny_vlms["qwen2_5_vl"], device="cpu", max_pixels=28 * 28 * 4)
    small.caption(two_clips[:1], PROMPT, GREEDY)
    assert small.last_stats["tokens_in"] < full.last_stats["tokens_in"]

    frames = two_clips[0]
    shrunk = downscale_frames(frames, (80, 40))
    assert shrunk.dtype == np.uint8 and shrunk.shape == (8, 40, 67, 3)  # fits the box, aspect kept
    assert downscale_frames(frames, (426, 240)) is frames  # never upscales
    assert abs(float(shrunk.mean()) - float(frames.mean())) < 3  # same picture, smaller
    boxed = TransformersCaptioner(tiny_vlms["qwen2_5_vl"], device="cpu", downscale=(56, 56))
    boxed.caption(two_clips[:1], PROMPT, GREEDY)
    assert boxed.last_stats["tokens_in"] < full.last_stats["tokens_in"]


def test_out_of_memory_is_reported_as_specific_exception(tiny_vlms, two_clips, monkeypatch) -> None:
    cap = TransformersCaptioner(tiny_vlms["qwen2_5_vl"], device="cpu")
    model, _ = cap.load()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model, "generate", oom)
    with pytest.raises(OutOfMemory) as info:
        cap.caption(two_clips, PROMPT, GREEDY)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert "(8, 96, 160, 3)" in str(info.value)
    monkeypatch.undo()
    with pytest.raises(ValueError):  # bad input is not mistaken for OOM
        cap.caption([np.zeros((0, 8, 8, 3), np.uint8)], PROMPT, GREEDY)


def test_device_and_dtype_resolution(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    expected = "cuda:" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").startswith(expected)
    assert resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("float7", "cpu")


def test_vllm_backend_is_registered_and_builds_engine_args() -> None:
    cls = CAPTIONERS.get("vllm")
    cap = cls("Qwen/Qwen2.5-VL-7B-Instruct", tensor_parallel_size=4, max_pixels=640 * 28 * 28)
    args = cap.engine_args()
    assert args["tensor_parallel_size"] == 4 and args["limit_mm_per_prompt"]["video"] == 1
    assert args["mm_processor_kwargs"] == {"max_pixels": 640 * 28 * 28} and args["trust_remote_code"] is False
    sampling = cls.sampling_kwargs(GenerationParams())
    assert sampling == {
        "max_tokens": 1024,
        "repetition_penalty": 1.05,
        "temperature": 0.9,
        "top_p": 0.001,
        "top_k": -1,
        "stop_token_ids": [],
    }
    assert cls.sampling_kwargs(GenerationParams(do_sample=False))["temperature"] == 0.0


# ------------------------------------------------------------------------------------ dummy backends


def test_dummy_captioner_describes_real_frames(two_clips) -> None:
    cap = CAPTIONERS.create("dummy")
    assert isinstance(cap, DummyCaptioner)
    texts = cap.caption(two_clips, PROMPT, GenerationParams())
    assert texts == cap.caption(two_clips, PROMPT, GenerationParams())  # deterministic
    assert texts[0] != texts[1]
    assert texts[0].startswith("The clip shows 8 frames of 160x96") and "2 frames" in texts[1]
    assert len(texts[0].split("\n\n")) == 3  # multi-paragraph, like a real caption
    assert cap.last_stats["tokens_out"] == sum(len(t.split()) for t in texts)
    # the caption names the dominant colour of what was decoded
    red = np.zeros((4, 16, 16, 3), np.uint8)
    red[..., 0] = 220
    assert "dominated by red tones" in cap.caption([red], PROMPT, GenerationParams())[0]


def test_dummy_captioner_failure_knobs(two_clips) -> None:
    cap = DummyCaptioner(fail_frame_counts=[2], oom_above_frames=4, empty_frame_counts=[3])
    with pytest.raises(RuntimeError, match="2 frames"):
        cap.caption(two_clips[1:], PROMPT, GenerationParams())
    with pytest.raises(OutOfMemory):
        cap.caption(two_clips[:1], PROMPT, GenerationParams())
    assert cap.caption([two_clips[0][:3]], PROMPT, GenerationParams()) == [""]
    assert cap.caption([two_clips[0][:4]], PROMPT, GenerationParams())[0]


def test_dummy_llm_rewrites_two_paragraphs() -> None:
    llm = LLMS.create("dummy")
    assert isinstance(llm, DummyChatLLM)
    messages = [
        {"role": "system", "content": "You are a helpful video summarizer."},
        {
            "role": "user",
            "content": "Rewrite the join between these paragraphs. Answer with two paragraphs separated by a "
            "newline.\n\nParagraph 1: The man walks\ninto the room.\n\nParagraph 2: He sits down.",
        },
    ]
    reply = llm.chat(messages, GenerationParams())
    assert reply == "The man walks into the room.\n[merged] He sits down."
    assert reply.split("\n") == ["The man walks into the room.", "[merged] He sits down."]
    assert llm.chat(messages, GenerationParams()) == reply
    judge = [{"role": "user", "content": "Give this caption a quality score from 0 to 10: a dog."}]
    assert float(llm.chat(judge, GenerationParams())) == 8.0

    flaky = DummyChatLLM(fail_first=2)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            flaky.chat(messages, GenerationParams())
    assert flaky.chat(messages, GenerationParams()) == reply
    assert DummyChatLLM(reply="%%garbage%%").chat(messages, GenerationParams()) == "%%garbage%%"
