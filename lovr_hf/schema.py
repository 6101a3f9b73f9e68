"""Column names and ``datasets.Features`` of every table of a benchmark repo.

One place for the data model, so that every stage, the builder and the card agree on it.
Times are seconds; frame ranges are half-open ``[start_frame, end_frame)`` in the source video.
"""

from __future__ import annotations

from datasets import Features, Sequence, Value, Video

# ---- status values (every table has ``status`` + ``error``) -------------------------------------------
OK = "ok"
ERROR = "error"  # bad input (corrupt video, unreadable file): will not get better by retrying
FAILED = "failed"  # a model/backend call failed: ``--retry-failed`` re-processes these rows
SKIPPED = "skipped"  # deliberately not processed (e.g. clip too short to caption)
NEEDS_REVIEW = "needs_review"  # processed but below the quality threshold after all attempts
STATUSES = (OK, ERROR, FAILED, SKIPPED, NEEDS_REVIEW)

# ---- config (table) names -------------------------------------------------------------------------------
VIDEOS = "videos"
CLIPS = "clips"
CLIP_CAPTIONS = "clip_captions"
CLUSTERS = "clusters"
VIDEO_CAPTIONS = "video_captions"
THEME_CAPTIONS = "theme_captions"
RESULTS = "results"
SPLITS = "splits"  # official release train/test assignment of clips
EMBEDDINGS_PREFIX = "embeddings"  # per-model configs are named ``embeddings-<model_slug>``
RANKINGS_PREFIX = "rankings"  # per-model configs ``rankings-<model_slug>``: the per-query evidence of ``results``

# ---- shared column names --------------------------------------------------------------------------------
VIDEO_ID = "video_id"
CLIP_ID = "clip_id"
SLICE_NUM = "slice_num"
CLUSTER_ID = "cluster_id"
CAPTION = "caption"
STATUS = "status"
ERROR_COL = "error"
VIDEO = "video"  # clips: the clip file as a datasets.Video (see CLIPS_FEATURES)

_status = {STATUS: Value("string"), ERROR_COL: Value("string")}

VIDEOS_FEATURES = Features(
    {
        VIDEO_ID: Value("string"),
        "source_name": Value("string"),  # file name relative to the input folder (the id mapping)
        "path": Value("string"),  # absolute path of the source video
        "duration_s": Value("float64"),
        "fps": Value("float64"),
        "num_frames": Value("int64"),
        "width": Value("int32"),
        "height": Value("int32"),
        "rotation": Value("int32"),
        "threshold": Value("float64"),  # detector threshold used (the one settled on with --adaptive)
        "size_bytes": Value("int64"),  # source file size: with sha256, identifies the file for index-only repos
        "sha256": Value("string"),  # of the source file's bytes (null until computed)
        "downscale": Value("float64"),  # factor the detector shrank frames by ("auto" resolved: max(w, h) / 256)
        **_status,
    }
)

CLIPS_FEATURES = Features(
    {
        VIDEO_ID: Value("string"),
        CLIP_ID: Value("string"),
        SLICE_NUM: Value("int32"),  # 1-based, in time order
        "start_time": Value("float64"),
        "end_time": Value("float64"),
        "start_frame": Value("int64"),  # in the source video, inclusive
        "end_frame": Value("int64"),  # in the source video, exclusive
        "num_frames": Value("int64"),
        "fps": Value("float64"),
        # Reader contract: decode frames [frame_offset, frame_offset + num_frames) of ``path`` in
        # presentation order. exact: clip file, offset 0; copy: clip file, offset = pre-roll frames;
        # virtual: the source video, offset = start_frame. Relative paths are relative to the repo root.
        "path": Value("string"),
        "frame_offset": Value("int64"),
        "clip_mode": Value("string"),
        # the clip file's identity (exact/copy; null for virtual clips): downstream work keys on it, and a
        # published file that no longer matches its row is reported instead of read
        "file_size": Value("int64"),
        "file_sha256": Value("string"),
        **_status,
        # the clip file as a ``datasets.Video`` ({"bytes": None, "path": ...}), so ``load_dataset(...)["video"]``
        # decodes it: derived from ``path`` on every write (lovr_hf.clip_video), never by a stage. Local
        # shards: the file's absolute path (the repo root of that write); published shards:
        # ``hf://datasets/<repo_id>@<revision>/<path>``. Null for virtual clips, rows that are not ok and
        # clips with no file. A copy clip's file begins ``frame_offset`` frames (pre-roll) before the clip.
        VIDEO: Video(),
    }
)

CLIP_CAPTIONS_FEATURES = Features(
    {
        CLIP_ID: Value("string"),
        VIDEO_ID: Value("string"),
        SLICE_NUM: Value("int32"),
        CAPTION: Value("string"),
        "model": Value("string"),
        "prompt_hash": Value("string"),
        "quality_score": Value("float32"),  # null when no scorer ran
        "attempts": Value("int32"),
        "num_frames_used": Value("int32"),
        "settings": Value("string"),  # JSON of the generation settings of the kept attempt
        **_status,
    }
)

CLUSTERS_FEATURES = Features(
    {
        VIDEO_ID: Value("string"),
        CLUSTER_ID: Value("string"),  # <video_id>_<k>, k from 0
        "start_slice_num": Value("int32"),
        "end_slice_num": Value("int32"),
        "clip_count": Value("int32"),
        CAPTION: Value("string"),
        "merged_paragraphs": Value("int32"),
        "llm_calls": Value("int32"),  # joins asked of the LLM
        "failed_calls": Value("int32"),  # joins that kept the original text: a failed call or a rejected reply
        "rejected_replies": Value("int32"),  # of those, replies rejected by a guard (null: older rows)
        "model": Value("string"),
        "prompt_hash": Value("string"),
        **_status,
    }
)

VIDEO_CAPTIONS_FEATURES = Features(
    {
        VIDEO_ID: Value("string"),
        CAPTION: Value("string"),
        "cluster_ids": Sequence(Value("string")),
        "clip_ids": Sequence(Value("string")),
        "strategy": Value("string"),
        "llm_calls": Value("int32"),  # integration steps asked of the LLM (across clusters)
        "failed_calls": Value("int32"),  # integration steps that kept the original text
        "join_calls": Value("int32"),  # joins inside this video's clusters asked of the LLM (null: older rows)
        "join_failed_calls": Value("int32"),  # of those, joins that kept the original text
        "rejected_replies": Value("int32"),  # fallbacks of joins and integrations that were rejected replies
        "model": Value("string"),
        "prompt_hash": Value("string"),
        **_status,
    }
)

THEME_CAPTIONS_FEATURES = Features(
    {
        VIDEO_ID: Value("string"),
        CLIP_ID: Value("string"),  # empty for a video-level theme
        CAPTION: Value("string"),
        "model": Value("string"),
        "prompt_hash": Value("string"),
        **_status,
    }
)

EMBEDDINGS_FEATURES = Features(
    {
        "model": Value("string"),
        "kind": Value("string"),  # clip_caption | video_caption | theme_caption | clip | video
        "item_id": Value("string"),  # clip_id or video_id
        VIDEO_ID: Value("string"),
        "embedding": Sequence(Value("float32")),
        "num_frames": Value("int32"),  # frames pooled (visual) or text chunks averaged (text)
        "text_mode": Value("string"),
        "interval": Value("int32"),  # frame interval (visual rows); null with --num-frames
        "uniform_frames": Value("int32"),  # --num-frames N (visual rows); null with --interval
        "frame_rule": Value("string"),  # visual rows: interval:K | uniform:N | native:N | files
        "protocol": Value("string"),  # lovr | original (the evaluation protocol the row was made under)
        "input_digest": Value("string"),  # digest of the inputs the row was made from (its caption, its clips)
        **_status,
    }
)

RESULTS_FEATURES = Features(
    {
        "model": Value("string"),
        "protocol": Value("string"),  # lovr | original (docs/evaluation.md)
        # "all", or a slice of the queries: duration:<bin>, caption_words:<bin>, video:<video_id>
        # (bins: lovr_hf.stats.slices, docs/statistics.md)
        "slice": Value("string"),
        # text_to_clip, clip_to_text, text_to_video, video_to_text, ...; for the text-limit rows the caption
        # kind (clip_caption | video_caption | theme_caption)
        "direction": Value("string"),
        # pass@k | median_rank | mean_rank; text-limit rows: truncation_rate (share of caption tokens past the
        # model's text limit) | truncated_captions (share of captions past it)
        "metric": Value("string"),
        "k": Value("int32"),  # 0 for rank metrics
        "value": Value("float64"),
        "num_queries": Value("int64"),  # queries in the score (text-limit rows: captions counted)
        "num_candidates": Value("int64"),
        "text_mode": Value("string"),
        "interval": Value("int32"),  # null when frames were sampled uniformly (--num-frames)
        "uniform_frames": Value("int32"),  # --num-frames N; null when sampled every ``interval`` frames
        "query_seed": Value("int64"),
        "lovr_hf_version": Value("string"),
        # -- uncertainty (lovr_hf.stats.bootstrap): seeded percentile bootstrap over the queries of this row
        "ci_low": Value("float64"),
        "ci_high": Value("float64"),
        "ci_level": Value("float64"),
        "bootstrap_resamples": Value("int32"),  # 0 = no interval
        "bootstrap_seed": Value("int64"),
        # -- query set and availability
        "query_set": Value("string"),  # text->clip queries: a count drawn with query_seed, "all", or "release"
        "needs_review_excluded": Value("bool"),  # --exclude-needs-review
        "num_queries_total": Value("int64"),  # queries the direction defines (scored + left out)
        "num_unavailable": Value("int64"),  # queries whose own or gold embedding is missing (lovr: left out;
        # original: scored as misses)
        "num_needs_review": Value("int64"),  # scored queries whose caption is needs_review (flagged)
        "num_candidates_total": Value("int64"),  # candidates the direction defines (available or not)
        "left_out": Value("string"),  # JSON {reason: count} of queries not in num_queries
        "oracle": Value("bool"),  # visual embeddings used an oracle frame choice (MM-Embed, original protocol)
        "text_limit": Value("int32"),  # text-limit rows: caption tokens that fit the model (special tokens excluded)
        # -- provenance
        "model_ref": Value("string"),  # what --model named (Hub id, spec; a local folder by its label <folder>-<hash>)
        "backend": Value("string"),
        # JSON of the other embedding settings a rerun needs: dtype, revision, max_text_tokens, backend_options
        "embed_settings": Value("string"),
        "model_revision": Value("string"),  # Hub commit hash | sha256:<folder hash> | builtin:... | unresolved:...
        "dataset_fingerprint": Value("string"),  # hash of the data configs' content-hashed shard names
        "embeddings_fingerprint": Value("string"),  # sha256 of the embedding rows scored (ids, status, vectors)
        "torch_version": Value("string"),
        "transformers_version": Value("string"),
        "numpy_version": Value("string"),
    }
)

# ``rankings-<model_slug>``: per scored query the evidence behind its results rows (lovr_hf.stats.rankings)
RANKINGS_FEATURES = Features(
    {
        "model": Value("string"),
        "protocol": Value("string"),
        "direction": Value("string"),
        "query_index": Value("int64"),  # position in the direction's query order (0-based)
        "query_id": Value("string"),  # the caption's clip/video id, or the clip/video id
        "gold_ids": Sequence(Value("string")),
        "gold_rank": Value("int64"),  # 1 = best; the rule of lovr_hf.stats.retrieval (ties: optimistic)
        "gold_score": Value("float32"),  # best gold score (null: no gold embedding)
        "top_ids": Sequence(Value("string")),  # the 20 best candidates, tie-break rule of lovr_hf.stats.retrieval
        "top_scores": Sequence(Value("float32")),
        # slice attributes (lovr_hf.stats.slices): the clip/video the query is about
        VIDEO_ID: Value("string"),
        "duration_s": Value("float64"),
        "caption_words": Value("int32"),
        "needs_review": Value("bool"),  # the query's caption is needs_review
    }
)

SPLITS_FEATURES = Features({CLIP_ID: Value("string"), VIDEO_ID: Value("string"), "split": Value("string")})

FEATURES: dict[str, Features] = {
    VIDEOS: VIDEOS_FEATURES,
    CLIPS: CLIPS_FEATURES,
    CLIP_CAPTIONS: CLIP_CAPTIONS_FEATURES,
    CLUSTERS: CLUSTERS_FEATURES,
    VIDEO_CAPTIONS: VIDEO_CAPTIONS_FEATURES,
    THEME_CAPTIONS: THEME_CAPTIONS_FEATURES,
    RESULTS: RESULTS_FEATURES,
    SPLITS: SPLITS_FEATURES,
}

# primary key(s) of each table: a row is unique by these columns
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    VIDEOS: (VIDEO_ID,),
    CLIPS: (CLIP_ID,),
    CLIP_CAPTIONS: (CLIP_ID,),
    CLUSTERS: (CLUSTER_ID,),
    VIDEO_CAPTIONS: (VIDEO_ID,),
    THEME_CAPTIONS: (VIDEO_ID, CLIP_ID),
    RESULTS: ("model", "protocol", "slice", "direction", "metric", "k"),
    SPLITS: (CLIP_ID,),
}

# row order of each table when written (numeric slice order, never string order)
SORT_KEYS: dict[str, tuple[str, ...]] = {
    VIDEOS: (VIDEO_ID,),
    CLIPS: (VIDEO_ID, SLICE_NUM),
    CLIP_CAPTIONS: (VIDEO_ID, SLICE_NUM),
    CLUSTERS: (VIDEO_ID, "start_slice_num"),
    VIDEO_CAPTIONS: (VIDEO_ID,),
    THEME_CAPTIONS: (VIDEO_ID, CLIP_ID),
    RESULTS: ("model", "protocol", "slice", "direction", "metric", "k"),
    SPLITS: ("split", VIDEO_ID, CLIP_ID),
}


def embeddings_config(model_slug: str) -> str:
    """Config name holding one model's embeddings."""
    return f"{EMBEDDINGS_PREFIX}-{model_slug}"


def rankings_config(model_slug: str) -> str:
    """Config name holding one model's per-query rankings."""
    return f"{RANKINGS_PREFIX}-{model_slug}"


def hub_features(config: str) -> Features:
    """Features of a config as written into its shards: what ``load_dataset`` reads (``video`` decodes)."""
    if config.startswith(EMBEDDINGS_PREFIX):
        return EMBEDDINGS_FEATURES
    if config.startswith(RANKINGS_PREFIX + "-"):
        return RANKINGS_FEATURES
    return FEATURES[config]


def features_for(config: str) -> Features:
    """Features of a config for lovr_hf's own in-memory Datasets: as :func:`hub_features`, with media columns
    not decoded (``Video(decode=False)``: a ``{"bytes", "path"}`` dict), so that a stage iterating or
    filtering ``clips`` never opens a video decoder per row. Same Arrow storage as the shards."""
    feats = hub_features(config)
    if not any(isinstance(f, Video) for f in feats.values()):
        return feats
    return Features({k: Video(decode=False) if isinstance(f, Video) else f for k, f in feats.items()})


def primary_key(config: str) -> tuple[str, ...]:
    if config.startswith(EMBEDDINGS_PREFIX):
        return ("kind", "item_id")
    if config.startswith(RANKINGS_PREFIX + "-"):
        return ("protocol", "direction", "query_index")
    return PRIMARY_KEYS[config]


def sort_key(config: str) -> tuple[str, ...]:
    if config.startswith(EMBEDDINGS_PREFIX):
        return ("kind", VIDEO_ID, "item_id")
    if config.startswith(RANKINGS_PREFIX + "-"):
        return ("protocol", "direction", "query_index")
    return SORT_KEYS[config]


def clip_id_for(video_id: str, slice_num: int) -> str:
    """LoVR release naming: ``<video_id>-Scene-NNN`` (3 digits, 1-based; more digits past 999)."""
    if slice_num < 1:
        raise ValueError(f"slice_num is 1-based, got {slice_num}")
    return f"{video_id}-Scene-{slice_num:03d}"


def cluster_id_for(video_id: str, k: int) -> str:
    """Original merger naming: ``<video_id>_<k>`` with k from 0."""
    return f"{video_id}_{k}"
