"""Video VLM families beyond Qwen through the transformers captioner, on tiny random instances built from their
transformers configs: SmolVLM2 and LLaVA-OneVision. Each is checked against the model's own ``generate`` on the
same processed inputs, batched against single, and through the caption stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from lovr_hf import schema
from lovr_hf.backends.base import GenerationParams
from lovr_hf.backends.captioners.transformers import TransformersCaptioner
from lovr_hf.caption.config import CaptionConfig
from lovr_hf.caption.stage import caption
from lovr_hf.demo.samples import make_video
from lovr_hf.demo.scenes import SceneSpec
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.tiny import build_tiny_llava_onevision, build_tiny_smolvlm2
from lovr_hf.video.frames import caption_frame_plan
from lovr_hf.video.reader import read_frames

PROMPT = {"system": "You are a video analysis assistant.", "user": "Describe the video in detail."}
GREEDY = GenerationParams(do_sample=False, max_new_tokens=8)
FAMILIES = {"smolvlm": build_tiny_smolvlm2, "llava_onevision": build_tiny_llava_onevision}
MODEL_CLASSES = {"smolvlm": "SmolVLMForConditionalGeneration", "llava_onevision": "LlavaOnevisionForConditionalGeneration"}

pytest.importorskip("num2words")  # SmolVLM's processor spells the frame count (extra "video-vlms")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.getbasetemp() / "tiny_models"
    return {name: build(root / name) for name, build in FAMILIES.items()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[np.ndarray]:
    """Three real clips (decoded H.264) by the LoVR frame rule: two of 8 frames and one of 2."""
    path = tmp_path_factory.mktemp("families") / "v.mp4"
    make_video(path, [SceneSpec(30), SceneSpec(7), SceneSpec(26)], width=80, height=48, fps=24, seed=6)
    out, start = [], 0
    for n in (30, 7, 26):
        plan = caption_frame_plan(n, n / 24)
        out.append(read_frames(path, [start + i for i in plan.indices]))
        start += n
    assert [len(c) for c in out] == [len(caption_frame_plan(n, n / 24).indices) for n in (30, 7, 26)]
    assert len({len(c) for c in out}) == 2  # two frame counts in one batch
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_captions_match_the_models_own_generate(models, clips, family: str) -> None:
    path = models[family]
    cap = TransformersCaptioner(path, device="cpu", dtype="float32")
    params = GenerationParams(do_sample=False, max_new_tokens=8, extra={"video_fps": [1.0, 1.0, 1.0]})
    batch = cap.caption(clips, PROMPT, params)
    model, processor = cap.load()
    assert type(model).__name__ == MODEL_CLASSES[family]
    # the model's own generate, on inputs its processor makes from the same frames and prompt, one clip at a time
    reference = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    ref_processor = AutoProcessor.from_pretrained(path)
    messages = [{"role": "system", "content": [{"type": "text", "text": PROMPT["system"]}]},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT["user"]}]}]
    text = ref_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == cap.last_prompt_text
    expected = []
    for frames in clips:
        metadata = [{"fps": 1.0, "total_num_frames": len(frames), "frames_indices": list(range(len(frames)))}]
        inputs = ref_processor(text=[text], videos=[frames], return_tensors="pt",
                               videos_kwargs={"do_sample_frames": False, "video_metadata": metadata})
        with torch.inference_mode():
            out = reference.generate(**inputs, max_new_tokens=8, do_sample=False, repetition_penalty=1.05)
        expected.append(ref_processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:],
                                                       skip_special_tokens=True).strip())
        if family == "smolvlm":  # its prompt states the clip's own frame count, one timestamped image per frame
            prompt = ref_processor.tokenizer.decode(inputs["input_ids"][0])
            assert prompt.count("<global-img>") == len(frames) and "Frame from 00:00:" in prompt
        else:  # 2x2 pooled features per frame, plus one newline token
            n_video = int((inputs["input_ids"] == reference.config.video_token_index).sum())
            assert n_video == len(frames) * 4 + 1
    assert batch == expected and all(batch)
    # batched (grouped by frame count) equals one clip at a time
    assert cap.frame_groups(clips, processor) == [[0, 2], [1]]
    assert [cap.caption([c], PROMPT, GREEDY)[0] for c in clips] == batch
    assert cap.last_stats["clips"] == 1 and cap.last_stats["tokens_out"] > 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_through_the_caption_stage(models, tmp_path, family: str) -> None:
    src = tmp_path / "v.mp4"
    make_video(src, [SceneSpec(80), SceneSpec(20)], 64, 48, 8, seed=7)
    rows, start = [], 0
    for k, n in enumerate((80, 20), start=1):
        rows.append({"video_id": "v", "clip_id": schema.clip_id_for("v", k), "slice_num": k, "start_time": start / 8,
                     "end_time": (start + n) / 8, "start_frame": start, "end_frame": start + n, "num_frames": n,
                     "fps": 8.0, "path": str(src), "frame_offset": start, "clip_mode": "virtual", "status": "ok",
                     "error": None})
        start += n
    repo = BenchmarkRepo(tmp_path / "lovr")
    repo.write(schema.CLIPS, rows)
    caption(repo, CaptionConfig(backend="transformers", model_path=models[family], do_sample=False, max_new_tokens=6,
                                batch_size=2, dtype="float32", device="cpu"))
    out = repo.read(schema.CLIP_CAPTIONS)
    assert out["status"] == [schema.OK, schema.OK] and all(out["caption"])
    assert out["num_frames_used"] == [len(caption_frame_plan(n, n / 8).indices) for n in (80, 20)]


def test_qwen_pixel_options_are_refused_for_other_families(models, clips) -> None:
    cap = TransformersCaptioner(models["llava_onevision"], device="cpu", max_pixels=28 * 28 * 4)
    with pytest.raises(ValueError, match="Qwen-VL pixel budgets"):
        cap.caption(clips[:1], PROMPT, GREEDY)
