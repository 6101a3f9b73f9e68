"""The MTEB bridge: any model registered in mteb 2.x with video and text modalities, as ``--backend mteb``.

``lovr eval --backend mteb --model <mteb model name>`` loads the model with mteb's own loader
(``mteb.get_model``: its ``ModelMeta`` loader and loader kwargs, e.g. InternVideo2's 8 frames), and calls its
``encode`` exactly as an mteb retrieval task does: texts as the task's *queries* and videos as its *documents*
(``prompt_type``), with the metadata of a real mteb video-text retrieval task (default
``ActivityNetCaptionsT2VRetrieval``, paragraph captions of minutes-long videos, the closest to LoVR; option
``task``), so the model picks its own prompts / instructions for that task. The videos are rows of a
``"video"`` column, and the model's own frame collator (``mteb.models.modality_collators``: its
``num_frames`` / ``fps`` rule) chooses the frames.

mteb hands video rows over as torchcodec ``VideoDecoder`` objects. torchcodec needs FFmpeg shared libraries
that PyAV's wheels do not expose, so the bridge gives each row a :class:`FrameSource`: the same interface
(``metadata.num_frames`` / ``average_fps`` / ``duration_seconds`` / ``end_stream_seconds``,
``get_frames_at(indices).data`` as uint8 [N, C, H, W], ``get_frames_played_at``, indexing) decoded by
lovr_hf's own decoder (:mod:`lovr_hf.video.reader`). ``video_input = "files"``: a clip is its file (or a frame range
of its source video), a full video is its clips in order, one continuous source, so the collator samples the
whole video as it would a merged file.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lovr_hf.backends.base import EMBEDDERS
from lovr_hf.backends.embedders.common import (
    PieceTextEmbedder,
    check_frames,
    check_text_mode,
    device_and_dtype,
    refuse_remote_code,
    to_numpy,
)
from lovr_hf.backends.embedders.families import FILES, Family, register_family
from lovr_hf.backends.extras import require_extra
from lovr_hf.backends.files import segments_of
from lovr_hf.stats.vectors import l2_normalize

logger = logging.getLogger(__name__)

DEFAULT_TASK = "ActivityNetCaptionsT2VRetrieval"


# ---- a torchcodec-compatible frame source over lovr_hf's decoder ----------------------------------------------

@dataclasses.dataclass(frozen=True)
class SourceMetadata:
    """The fields of torchcodec's ``VideoStreamMetadata`` that mteb's collators and wrappers read."""

    num_frames: int
    average_fps: float
    width: int
    height: int

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.average_fps if self.average_fps else 0.0

    @property
    def begin_stream_seconds(self) -> float:
        return 0.0

    @property
    def end_stream_seconds(self) -> float:
        return self.duration_seconds

    @property
    def num_frames_from_header(self) -> int:
        return self.num_frames


@dataclasses.dataclass
class Frames:
    """torchcodec's ``FrameBatch``: ``data`` uint8 [N, C, H, W], presentation times and durations (s)."""

    data: Any
    pts_seconds: Any
    duration_seconds: Any


class FrameSource:
    """One video for mteb: what torchcodec's ``VideoDecoder`` offers its collators, over frames read by ``_read``."""

    metadata: SourceMetadata

    def _read(self, indices: Sequence[int]) -> np.ndarray:  # RGB uint8 [n, H, W, 3]
        raise NotImplementedError

    def __len__(self) -> int:
        return self.metadata.num_frames

    def get_frames_at(self, indices: Sequence[int]) -> Frames:
        import torch

        data = torch.from_numpy(np.ascontiguousarray(self._read(indices))).permute(0, 3, 1, 2).contiguous()
        fps = self.metadata.average_fps
        return Frames(data, torch.tensor([i / fps for i in indices], dtype=torch.float64),
                      torch.full((len(indices),), 1 / fps, dtype=torch.float64))

    def get_frames_played_at(self, seconds: Sequence[float]) -> Frames:
        fps = self.metadata.average_fps
        return self.get_frames_at([min(len(self) - 1, max(0, int(s * fps))) for s in seconds])

    def get_frames_in_range(self, start: int, stop: int, step: int = 1) -> Frames:
        return self.get_frames_at(list(range(start, min(stop, len(self)), step)))

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return self.get_frames_at(list(range(len(self)))[key]).data
        return self.get_frames_at([key if key >= 0 else len(self) + key]).data[0]


class ArrayFrames(FrameSource):
    """Frames already decoded (``embed_video``): the model's collator picks among them."""

    def __init__(self, frames: np.ndarray, fps: float = 1.0) -> None:
        self.frames = np.asarray(frames)
        if self.frames.ndim != 4 or len(self.frames) == 0:
            raise ValueError(f"expected frames [n, H, W, 3] with n > 0, got shape {self.frames.shape}")
        n, h, w = self.frames.shape[:3]
        self.metadata = SourceMetadata(num_frames=n, average_fps=float(fps), width=w, height=h)

    def _read(self, indices: Sequence[int]) -> np.ndarray:
        return self.frames[[int(i) for i in indices]]


class FileFrames(FrameSource):
    """One video as a list of segments ``(path, first frame, frame count)`` played back to back."""

    def __init__(self, segments: Sequence[tuple[str, int, int | None]]) -> None:
        from lovr_hf.video.reader import probe

        self.segments: list[tuple[str, int, int]] = []
        fps, size = 0.0, (0, 0)
        for path, start, count in segments:
            info = probe(path)
            n = info.num_frames - start if count is None else min(int(count), info.num_frames - start)
            if n > 0:
                self.segments.append((path, int(start), int(n)))
            fps = fps or info.fps
            size = size if size[0] else (info.width, info.height)
        total = sum(n for _, _, n in self.segments)
        self.metadata = SourceMetadata(num_frames=total, average_fps=float(fps or 1.0), width=size[0], height=size[1])
        self._starts = np.cumsum([0, *[n for _, _, n in self.segments]])[:-1]

    def _read(self, indices: Sequence[int]) -> np.ndarray:
        from lovr_hf.video.reader import read_frames

        idx = [int(i) for i in indices]
        if any(i < 0 or i >= len(self) for i in idx):
            raise IndexError(f"frame index out of range [0, {len(self)}): {idx}")
        out: list[np.ndarray | None] = [None] * len(idx)
        for s, (path, start, n) in enumerate(self.segments):
            mine = [(k, i - int(self._starts[s])) for k, i in enumerate(idx)
                    if self._starts[s] <= i < self._starts[s] + n]
            if mine:
                frames = read_frames(path, [j for _, j in mine], frame_offset=start, num_frames=n)
                for (k, _), f in zip(mine, frames):
                    out[k] = f
        return np.stack(out)  # type: ignore[arg-type]


class VideoRows:
    """A map-style dataset of ``{"video": FrameSource}`` rows with the ``features`` mteb's wrappers inspect."""

    def __init__(self, sources: list[FrameSource]) -> None:
        import datasets

        self.sources = sources
        self.features = datasets.Features({"video": datasets.Video()})
        self.column_names = ["video"]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"video": self.sources[i]}


# ---- the bridge ---------------------------------------------------------------------------------------------

def register_mteb_model(meta: Any) -> Any:
    """Add a ``mteb.ModelMeta`` to mteb's model registry (``mteb.models.model_implementations.MODEL_REGISTRY``,
    the table ``mteb.get_model`` / ``get_model_meta`` read; mteb's own models are its entries), so a model of
    one's own is reachable by name through mteb's API and this bridge."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    MODEL_REGISTRY[meta.name] = meta
    return meta


def video_text_model_names() -> list[str]:
    """Every model registered in mteb with both video and text modalities."""
    import mteb

    return sorted(m.name for m in mteb.get_model_metas(modalities=["video", "text"]))


@EMBEDDERS.register("mteb")
class MtebEmbedder(PieceTextEmbedder):
    """A model of mteb's registry, loaded by ``mteb.get_model`` and called through its ``encode``.

    ``dtype``: mteb loads each model at its own precision; only ``auto`` is accepted (pass a loader's own
    option through ``loader_kwargs``), so a ``--dtype`` is never silently dropped.
    """

    name = "mteb"
    video_input = "files"
    _LOADED = ("_model", "_task_metadata", "meta")

    def __init__(
        self,
        model_path: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | None = "auto",
        batch_size: int = 8,
        text_mode: str = "truncate",
        max_text_tokens: int | None = None,
        trust_remote_code: bool = False,
        task: str = DEFAULT_TASK,
        loader_kwargs: dict[str, Any] | None = None,
    ) -> None:
        require_extra("mteb", "mteb", "mteb")
        import mteb

        model_path = model_path.removeprefix("mteb:")
        check_text_mode(text_mode)
        if dtype not in (None, "", "auto"):
            raise ValueError(f"dtype={dtype!r}: the mteb bridge loads {model_path} at mteb's own precision; "
                             "give its loader's option through --backend-option loader_kwargs=... instead")
        try:
            meta = mteb.get_model_meta(model_path, revision)
        except KeyError as exc:
            raise KeyError(f"{model_path!r} is not a model registered in mteb ({exc.args[0]}); "
                           "video+text models: python -c 'from lovr_hf.backends.embedders.mteb import "
                           "video_text_model_names as n; print(n())'") from None
        if not {"video", "text"} <= set(meta.modalities):
            raise ValueError(f"{model_path}: mteb registers it for {meta.modalities}, not video and text")
        self.loader_kwargs = dict(loader_kwargs or {})
        if {**meta.loader_kwargs, **self.loader_kwargs}.get("trust_remote_code"):
            refuse_remote_code(trust_remote_code, model_path,
                               "runs code from its Hub repo (mteb loads it with trust_remote_code)")
        self._settings(model_path, revision=revision, device=device, dtype=dtype, batch_size=batch_size,
                       text_mode=text_mode, max_text_tokens=max_text_tokens)
        self.meta = meta
        self.task = task

    def model_id(self) -> str:
        rev = self.revision or self.meta.revision
        return f"mteb:{self.model_path}" + (f"@{rev}" if rev else "") + (f" [{self.task}]" if self.task != DEFAULT_TASK
                                                                        else "")

    def __setstate__(self, state: dict[str, Any]) -> None:
        import mteb

        self.__dict__.update(state)
        self.meta = mteb.get_model_meta(self.model_path, self.revision)

    def load(self) -> Any:
        if self._model is None:
            import mteb

            device, _ = device_and_dtype(self.device, None)
            self._task_metadata = mteb.get_task(self.task).metadata
            key = (self.model_path, self.revision, device, repr(sorted(self.loader_kwargs.items())))
            self._model = self.shared(key, lambda: mteb.get_model(self.model_path, self.revision, device=device,
                                                                  **self.loader_kwargs))
        return self._model

    @property
    def max_text_tokens(self) -> int | None:
        limit = self.meta.max_tokens  # mteb: a number, np.inf (no limit) or None
        return self._limit or (int(limit) if limit and np.isfinite(limit) else None)

    def _encode(self, loader: Any, prompt_type: Any) -> np.ndarray:
        model = self.load()
        out = model.encode(loader, task_metadata=self._task_metadata, hf_split="test", hf_subset="default",
                           prompt_type=prompt_type, batch_size=self.batch_size, show_progress_bar=False)
        return l2_normalize(to_numpy(out))

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """Truncate: the model's own (mteb gives it the whole text)."""
        import datasets
        from mteb._create_dataloaders import create_dataloader
        from mteb.types import PromptType

        self.load()
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        loader = create_dataloader(datasets.Dataset.from_dict({"text": texts}), task_metadata=self._task_metadata,
                                   prompt_type=PromptType.query, batch_size=self.batch_size)
        return self._encode(loader, PromptType.query)

    def _text_pieces(self, text: str) -> list[str]:
        """No tokenizer behind mteb's interface: pieces of ``max_text_tokens`` words (the whole text when the
        model has no limit)."""
        words = text.split()
        room = max(1, int(self.max_text_tokens or len(words) or 1))
        return [" ".join(words[i : i + room]) for i in range(0, max(1, len(words)), room)] or [""]

    def _encode_sources(self, sources: list[FrameSource]) -> np.ndarray:
        from mteb._create_dataloaders import _custom_collate_fn
        from mteb.types import PromptType
        from torch.utils.data import DataLoader

        self.load()
        if not sources:
            return np.zeros((0, self.dim), np.float32)
        loader = DataLoader(VideoRows(sources), batch_size=self.batch_size, collate_fn=_custom_collate_fn,
                            shuffle=False)  # what mteb's create_dataloader builds for a video column
        return self._encode(loader, PromptType.document)

    def embed_video_files(self, groups: Sequence[Sequence[Any]]) -> np.ndarray:
        return self._encode_sources([FileFrames(segments_of(g)) for g in groups])

    def embed_video(self, frames: np.ndarray) -> np.ndarray:
        """Frames decoded by the caller: the model's collator picks among them (the files path is preferred)."""
        return self._encode_sources([ArrayFrames(frames)])[0]

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Each frame as a one-frame video (the model's collator repeats it to its frame count)."""
        return self._encode_sources([ArrayFrames(f[None]) for f in check_frames(frames)])


register_family(Family(
    name="mteb", backend="mteb", patterns=(r"^mteb:",), priority=3, video_input=FILES,
    text="the mteb model's own (its max_tokens; its prompts for the task, as queries)",
    pooling="the mteb model's own encode on the video (documents of an mteb video-text retrieval task)",
    extra="mteb", hub_ids=(),
    notes="--backend mteb --model <mteb model name>; frames chosen by the model's mteb frame collator over the "
          "clip file / the concatenated clips of a video; task metadata ActivityNetCaptionsT2VRetrieval",
))

# InternVideo2-CLIP: a native video tower (8 frames) whose code is the Hub repo's remote code; mteb registers it
# (SentenceTransformer loader, num_frames=8, trust_remote_code) and this bridge serves it.
register_family(Family(
    name="internvideo2", backend="mteb", patterns=(r"internvideo2",), priority=3, video_input=FILES, video_frames=8,
    text="the model's own (mteb max_tokens 80)",
    pooling="video tower on 8 frames (mteb FramesCollator: np.linspace(0, n - 1, 8).round() over the clip / the "
            "concatenated clips)",
    extra="mteb", hub_ids=("OpenGVLab/InternVideo2-CLIP-1B-224p-f8",), remote_code=True,
    notes="not in the LoVR paper; remote code: needs --trust-remote-code; loaded by mteb.get_model",
))
