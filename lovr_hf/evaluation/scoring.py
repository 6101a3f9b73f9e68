"""Scoring: stored embeddings -> result rows of every LoVR direction (the original ``calc_pass``), with
intervals, slices, availability, the text-limit rows, provenance, and the per-query rankings behind them.

``EvalConfig`` (embedding settings plus the scoring protocol) lives here because scoring is what the
protocol decides; :mod:`lovr_hf.evaluation.run` runs embedding then scoring, :mod:`lovr_hf.evaluation.results` renders.

Query sets and availability (docs/statistics.md). The queries a direction *defines* come from the caption
tables, never from which embeddings happen to exist: text->clip draws ``--clip-queries`` captions (with
``--seed``) from the clip captions whose status is ``ok`` or ``needs_review`` (the latter left out with
``--exclude-needs-review``); on a repo imported from the official release (marker file
:data:`lovr_hf.hub.release.MARKER`) the default is the released list, every clip caption. A query is *available* when
its own embedding and its gold's are ``ok``. ``--protocol lovr`` scores the available queries only and
records how many were left out and why; ``--protocol original`` keeps them as misses (rank = candidates + 1),
as the original did, and logs it. Both record available vs total on the rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lovr_hf import schema
from lovr_hf.evaluation import provenance
from lovr_hf.evaluation.embed_stage import TEXT_KINDS
from lovr_hf.evaluation.models import EmbedConfig, model_payload, model_slug, protocol_slug, resolve_backend
from lovr_hf.evaluation.release_marker import read_release_marker
from lovr_hf.evaluation.truncation import token_counter, truncation_rows
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.stats.bootstrap import Bootstrap
from lovr_hf.stats.directions import (
    DirectionRanking,
    EmbeddingSet,
    rank_direction,
    rank_directions,
    select_clip_queries,
)
from lovr_hf.stats.rankings import TOP_N, metric_rows, ranking_rows, scored_direction
from lovr_hf.stats.retrieval import parse_ks

logger = logging.getLogger(__name__)

_THEME_DIRECTIONS = ("theme_to_clip", "clip_to_theme")
ELIGIBLE = (schema.OK, schema.NEEDS_REVIEW)


@dataclasses.dataclass
class EvalConfig(EmbedConfig):
    """Embedding settings plus the scoring protocol (the protocol is not part of any fingerprint)."""

    model_name: str | None = None  # label in results (default: the model string); also names the slug
    #: text->clip query captions: a count drawn with --seed, "all", or "auto" (the released list on an imported
    #: release, else 1000)
    clip_queries: str = "auto"
    seed: int = 0
    topk: str | None = None  # "1,5,10"; None = 1..20 (original default)
    exclude_needs_review: bool = False  # leave ``needs_review`` captions out of the query sets (default: in, flagged)
    bootstrap: int = 1000  # bootstrap resamples for the 95% intervals (0 = no intervals)
    bootstrap_seed: int = 0

    def label(self) -> str:
        """How results, rankings, cards, assets and logs name this model: ``--model-name``, else
        :func:`lovr_hf.model_labels.model_label` (a Hub id as it is; a local folder ``<folder>-<content hash>``,
        never its absolute path, which means nothing on another machine and leaks the local layout)."""
        return self.model_name or model_label(self.model)

    def slug(self) -> str:
        """The embeddings config name part: per model label and protocol (both protocols side by side)."""
        return protocol_slug(model_slug(self.label()), self.protocol)


@dataclasses.dataclass
class KindRows:
    """The ``ok`` embedding rows of one kind."""

    ids: list[str]
    video_ids: list[str]
    vectors: np.ndarray


@dataclasses.dataclass
class Scored:
    """Everything one scoring run produces: ``results`` rows and ``rankings`` rows."""

    rows: list[dict[str, Any]]
    rankings: list[dict[str, Any]]


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        raise ValueError(f"embeddings of different widths: {sorted(set(lengths.tolist()))}")
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(arr), int(lengths[0]))


def _read_embeddings(repo: BenchmarkRepo, slug: str) -> pa.Table:
    config = schema.embeddings_config(slug)
    if not repo.has(config):
        raise FileNotFoundError(
            f"{repo.root} has no {config!r}: embed first (lovr eval --encode_text / --encode_video)"
        )
    return repo.read_table(config)


def _split_kinds(t: pa.Table, config: str) -> tuple[dict[str, KindRows], dict[str, Any]]:
    bad = t.filter(pc.not_equal(t[schema.STATUS], schema.OK))
    if bad.num_rows:
        counts: dict[str, int] = {}
        for kind in bad.column("kind").to_pylist():
            counts[kind] = counts.get(kind, 0) + 1
        logger.warning("%s: rows not ok (not available for scoring): %s", config, counts)
    t = t.filter(pc.equal(t[schema.STATUS], schema.OK))
    out: dict[str, KindRows] = {}
    for kind in sorted(set(t.column("kind").to_pylist())):
        k = t.filter(pc.equal(t["kind"], kind))
        out[kind] = KindRows(k.column("item_id").to_pylist(), k.column(schema.VIDEO_ID).to_pylist(),
                             _vectors(k.column("embedding")))

    def uniq(kinds: Sequence[str], col: str) -> Any:
        vals = t.filter(pc.is_in(t["kind"], value_set=pa.array(list(kinds)))).column(col).to_pylist()
        vals = sorted({v for v in vals if v is not None}, key=str)
        if len(vals) > 1:
            logger.warning("%s: mixed %s values %s", config, col, vals)
        return ",".join(map(str, vals)) if col == "text_mode" else (vals[0] if vals else None)

    settings = {"text_mode": uniq(list(TEXT_KINDS), "text_mode"),
                "interval": uniq(["clip", "video"], "interval"),
                "uniform_frames": uniq(["clip", "video"], "uniform_frames")}
    return out, settings


def load_embeddings(repo: BenchmarkRepo, slug: str) -> tuple[dict[str, KindRows], dict[str, Any]]:
    """Embedding rows per kind (status ok only) and the settings they were made with."""
    return _split_kinds(_read_embeddings(repo, slug), schema.embeddings_config(slug))


# ---------------------------------------------------------------------------------------------------------
# what the repo defines (independent of any model)
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Catalog:
    clip_video: dict[str, str]  # every clip row: clip id -> video id
    clip_duration: dict[str, float | None]
    video_duration: dict[str, float | None]
    captions: dict[str, dict[str, tuple[str, str]]]  # kind -> item id -> (status, caption); clip/video kinds

    @classmethod
    def read(cls, repo: BenchmarkRepo) -> Catalog:
        clip_video: dict[str, str] = {}
        clip_duration: dict[str, float | None] = {}
        if repo.has(schema.CLIPS):
            for r in repo.read_table(schema.CLIPS).select(
                    [schema.CLIP_ID, schema.VIDEO_ID, "start_time", "end_time"]).to_pylist():
                clip_video[r[schema.CLIP_ID]] = r[schema.VIDEO_ID]
                b, e = r["start_time"], r["end_time"]
                clip_duration[r[schema.CLIP_ID]] = None if b is None or e is None else float(e - b)
        video_duration: dict[str, float | None] = {}
        for cid, vid in clip_video.items():  # sum of clip durations, unless the videos table knows better
            d = clip_duration[cid]
            prev = video_duration.get(vid, 0.0)
            video_duration[vid] = None if d is None or prev is None else prev + d
        if repo.has(schema.VIDEOS):
            for r in repo.read_table(schema.VIDEOS).select([schema.VIDEO_ID, "duration_s"]).to_pylist():
                if r["duration_s"] is not None or r[schema.VIDEO_ID] not in video_duration:
                    video_duration[r[schema.VIDEO_ID]] = r["duration_s"]
        captions: dict[str, dict[str, tuple[str, str]]] = {}
        for kind, config, key in (("clip_caption", schema.CLIP_CAPTIONS, schema.CLIP_ID),
                                  ("video_caption", schema.VIDEO_CAPTIONS, schema.VIDEO_ID)):
            if repo.has(config):
                t = repo.read_table(config).select([key, schema.CAPTION, schema.STATUS]).to_pylist()
                captions[kind] = {r[key]: (r[schema.STATUS], r[schema.CAPTION] or "") for r in t}
        return cls(clip_video, clip_duration, video_duration, captions)


def release_marker(repo: BenchmarkRepo) -> dict[str, Any] | None:
    """The marker ``lovr import-release`` writes at the repo root (:data:`lovr_hf.evaluation.release_marker.MARKER`),
    or None when the repo is not an imported release; its ``query_set.ids`` are the released text->clip queries."""
    return read_release_marker(repo)


def clip_query_spec(repo: BenchmarkRepo, config: EvalConfig) -> tuple[int | str | list[str], str]:
    """(what to select the text->clip queries with, the ``query_set`` label on the rows)."""
    spec = str(config.clip_queries).strip().lower()
    if spec == "auto":
        marker = release_marker(repo)
        if marker is None:
            return 1000, "1000"
        return [str(i) for i in marker["query_set"]["ids"]], "release"
    if spec == "all":
        return "all", "all"
    n = int(spec)
    return n, str(n)


def _pool(captions: dict[str, tuple[str, str]], exclude_needs_review: bool) -> tuple[list[str], dict[str, int]]:
    """Caption ids eligible as queries, and {"caption <status>": n} of those that are not."""
    allowed = (schema.OK,) if exclude_needs_review else ELIGIBLE
    pool, left = [], {}
    for item, (status, _) in captions.items():
        if status in allowed:
            pool.append(item)
        else:
            left[f"caption {status}"] = left.get(f"caption {status}", 0) + 1
    if left:
        logger.info("captions left out of the queries (by status): %s", left)
    return sorted(pool), left


def _words(text: str | None) -> int | None:
    return None if text is None else len(text.split())


@dataclasses.dataclass
class _Direction:
    ranking: DirectionRanking
    attrs: list[dict[str, Any]]
    extra: dict[str, Any]  # availability columns of the slice "all" rows


def _score_pair(protocol: str, to_visual: str, to_text: str, query_ids: list[str], pool_left: dict[str, int],
                text: KindRows | None, visual: KindRows | None, visual_total: int,
                attr: Any) -> list[_Direction]:
    """Text->visual and visual->text between one caption kind and one visual kind, with availability."""
    if text is None or visual is None:
        return []
    text_set = EmbeddingSet(text.ids, text.vectors)
    text_ok, visual_ok = set(text.ids), set(visual.ids)
    caption_set = EmbeddingSet(*text_set.rows_for([i for i in query_ids if i in text_ok]))
    visual_set = EmbeddingSet(visual.ids, visual.vectors)
    out = []
    for direction, own_ok, gold_ok, own_name, gold_name, queries, cands, n_total in (
            (to_visual, text_ok, visual_ok, "caption", "visual", text_set, visual_set, visual_total),
            (to_text, visual_ok, text_ok, "visual", "caption", visual_set, caption_set, len(query_ids))):
        no_own = [i for i in query_ids if i not in own_ok]
        no_gold = [i for i in query_ids if i in own_ok and i not in gold_ok]
        left = dict(pool_left)
        if protocol == "original":
            scored = list(query_ids)
            if no_own or no_gold:
                logger.info("%s: %d queries without an own and %d without a gold embedding: misses (original)",
                            direction, len(no_own), len(no_gold))
        else:
            bad = set(no_own) | set(no_gold)
            scored = [i for i in query_ids if i not in bad]
            if no_own:
                left[f"no {own_name} embedding"] = len(no_own)
            if no_gold:
                left[f"no gold {gold_name} embedding"] = len(no_gold)
            if bad:
                logger.warning("%s: %d of %d queries left out (unavailable): %s", direction, len(bad),
                               len(query_ids), {k: v for k, v in left.items() if k.startswith("no ")})
        ranking = rank_direction(direction, queries, scored, scored, cands, top=TOP_N)
        extra = {"num_queries_total": len(query_ids), "num_unavailable": len(no_own) + len(no_gold),
                 "num_candidates_total": n_total, "left_out": json.dumps(left, sort_keys=True)}
        out.append(_Direction(ranking, [attr(q) for q in ranking.query_ids], extra))
    return out


def _theme_sets(sets: dict[str, KindRows]) -> dict[str, EmbeddingSet] | None:
    """Theme captions vs clips. Clip-level themes: gold = their clip. Video-level themes (what ``lovr merge``
    writes): gold = every clip of their video (clips are relabelled by video id, so a hit is any clip of the
    video in the top k; clip->theme asks each clip for its video's theme)."""
    theme, clips = sets.get("theme_caption"), sets.get("clip")
    if theme is None or clips is None or not theme.ids:
        return None
    video_level = np.array([i == v for i, v in zip(theme.ids, theme.video_ids)])
    if video_level.all():
        return {"theme_caption": EmbeddingSet(list(theme.video_ids), theme.vectors),
                "clip": EmbeddingSet(list(clips.video_ids), clips.vectors)}
    if video_level.any():
        logger.warning("theme captions: %d video-level themes left out (mixed with clip-level themes)",
                       int(video_level.sum()))
    keep = ~video_level
    return {"theme_caption": EmbeddingSet([i for i, k in zip(theme.ids, keep) if k], theme.vectors[keep]),
            "clip": EmbeddingSet(list(clips.ids), clips.vectors)}


def _directions(repo: BenchmarkRepo, config: EvalConfig, sets: dict[str, KindRows], catalog: Catalog,
                ) -> tuple[list[_Direction], str]:
    spec, query_set = clip_query_spec(repo, config)
    protocol = config.protocol
    out: list[_Direction] = []
    # clip captions <-> clips
    caps = catalog.captions.get("clip_caption")
    if caps is None:  # no caption table (embeddings given directly): the embedded captions define the pool
        caps = {i: (schema.OK, "") for i in (sets["clip_caption"].ids if "clip_caption" in sets else [])}
    pool, left = _pool(caps, config.exclude_needs_review)
    if isinstance(spec, list):  # the released list, as far as the repo has those captions
        selected = sorted(set(spec) & set(pool))
    else:
        selected = select_clip_queries(pool, spec, config.seed) if pool else []
    clip_video = dict(catalog.clip_video)
    if "clip" in sets:
        for i, v in zip(sets["clip"].ids, sets["clip"].video_ids):
            clip_video.setdefault(i, v)

    def clip_attr(q: str) -> dict[str, Any]:
        status, text = caps.get(q, (None, None))
        return {schema.VIDEO_ID: clip_video.get(q), "duration_s": catalog.clip_duration.get(q),
                "caption_words": _words(text) if text else None, "needs_review": status == schema.NEEDS_REVIEW}

    n_clips = len(catalog.clip_video) or len(set(sets["clip"].ids) if "clip" in sets else ())
    out += _score_pair(protocol, "text_to_clip", "clip_to_text", selected, left, sets.get("clip_caption"),
                       sets.get("clip"), n_clips, clip_attr)
    # video captions <-> videos
    vcaps = catalog.captions.get("video_caption")
    if vcaps is None:
        vcaps = {i: (schema.OK, "") for i in (sets["video_caption"].ids if "video_caption" in sets else [])}
    vpool, vleft = _pool(vcaps, config.exclude_needs_review)

    def video_attr(q: str) -> dict[str, Any]:
        status, text = vcaps.get(q, (None, None))
        return {schema.VIDEO_ID: q, "duration_s": catalog.video_duration.get(q),
                "caption_words": _words(text) if text else None, "needs_review": status == schema.NEEDS_REVIEW}

    videos = set(catalog.video_duration) | set(sets["video"].ids if "video" in sets else ())
    out += _score_pair(protocol, "text_to_video", "video_to_text", vpool, vleft, sets.get("video_caption"),
                       sets.get("video"), len(videos), video_attr)
    theme = _theme_sets(sets)
    if theme is not None:
        for ranking in rank_directions(theme, directions=_THEME_DIRECTIONS, top=TOP_N):
            n = len(ranking.query_ids)
            out.append(_Direction(ranking, [{} for _ in range(n)],
                                  {"num_queries_total": n, "num_unavailable": int((ranking.ranks
                                   > ranking.num_candidates).sum()), "num_candidates_total": ranking.num_candidates,
                                   "left_out": "{}"}))
    return out, query_set


def truncation_texts(sets: dict[str, KindRows], repo: BenchmarkRepo, catalog: Catalog) -> dict[str, list[str]]:
    """Per caption kind, the texts of the captions that have an ``ok`` embedding (what the model read)."""
    texts: dict[str, list[str]] = {}
    for kind in ("clip_caption", "video_caption"):
        caps = catalog.captions.get(kind, {})
        if kind in sets and caps:
            texts[kind] = [caps[i][1] for i in dict.fromkeys(sets[kind].ids) if i in caps]
    if "theme_caption" in sets and repo.has(schema.THEME_CAPTIONS):
        ok = set(sets["theme_caption"].ids)
        rows = repo.read_table(schema.THEME_CAPTIONS).to_pylist()
        texts["theme_caption"] = [r[schema.CAPTION] or "" for r in rows
                                  if (r[schema.CLIP_ID] or r[schema.VIDEO_ID]) in ok and r[schema.STATUS] == schema.OK]
    return {k: v for k, v in texts.items() if v}


def _truncation(config: EvalConfig, sets: dict[str, KindRows], repo: BenchmarkRepo,
                catalog: Catalog) -> list[dict[str, Any]]:
    texts = truncation_texts(sets, repo, catalog)
    if not texts:
        return []
    counter = token_counter(config)
    return truncation_rows(counter, texts) if counter is not None else []


def embed_settings(config: EmbedConfig) -> str:
    """JSON of the embedding settings besides model/backend/text mode/frames that a rerun needs (secrets out)."""
    return json.dumps({"dtype": config.dtype, "revision": config.revision, "max_text_tokens": config.max_text_tokens,
                       "backend_options": model_payload(config)["backend_options"]}, sort_keys=True, default=str)


def score(repo: BenchmarkRepo, config: EvalConfig) -> Scored:
    """Result rows and rankings rows of every direction the stored embeddings allow, under ``config.protocol``."""
    slug = config.slug()
    table = _read_embeddings(repo, slug)
    made_under = {p for p in table.column("protocol").to_pylist() if p} if "protocol" in table.column_names else set()
    if made_under - {config.protocol}:
        logger.warning("%s: scoring protocol %r on embeddings made under %s: re-embed with --protocol %s for a "
                       "faithful %s score", slug, config.protocol, sorted(made_under), config.protocol,
                       config.protocol)
    sets, settings = _split_kinds(table, schema.embeddings_config(slug))
    catalog = Catalog.read(repo)
    ks = parse_ks(config.topk)
    boot = Bootstrap(int(config.bootstrap), int(config.bootstrap_seed))
    directions, query_set = _directions(repo, config, sets, catalog)
    label, backend = config.label(), resolve_backend(config.model, config.backend)
    ref = model_label(config.model)  # a local folder: its label; the absolute path never reaches a row
    common = {"model": label, "protocol": config.protocol, "text_mode": settings["text_mode"],
              "interval": settings["interval"], "uniform_frames": settings["uniform_frames"],
              "query_seed": config.seed, "query_set": query_set,
              "needs_review_excluded": bool(config.exclude_needs_review),
              "oracle": provenance.uses_oracle_frames(table), "model_ref": ref, "backend": backend,
              "embed_settings": embed_settings(config),
              "model_revision": provenance.model_revision(config.model, backend, config.revision, repo),
              "dataset_fingerprint": provenance.dataset_fingerprint(repo),
              "embeddings_fingerprint": provenance.embeddings_fingerprint(table), **provenance.versions()}
    rows: list[dict[str, Any]] = []
    rankings: list[dict[str, Any]] = []
    for d in directions:
        for r in metric_rows(scored_direction(d.ranking, d.attrs), ks, boot):
            rows.append({**common, **r, **(d.extra if r["slice"] == "all" else {})})
        rankings += ranking_rows(label, config.protocol, d.ranking, d.attrs)
    for r in _truncation(config, sets, repo, catalog):
        rows.append({**common, "slice": "all", "bootstrap_resamples": 0, "bootstrap_seed": boot.seed, **r})
    return Scored(rows, rankings)


def config_from_rows(rows: Sequence[dict[str, Any]]) -> EvalConfig:
    """The settings one (model, protocol)'s ``results`` rows were scored with: the inverse of the columns
    :func:`score` writes (``lovr eval --verify`` rescores with it; the card prints it as a command)."""
    r0 = next((r for r in rows if r["metric"] == "pass@k" and r["slice"] == "all"), rows[0])
    ref = r0.get("model_ref") or r0["model"]
    extra = json.loads(r0.get("embed_settings") or "{}")
    ks = sorted({r["k"] for r in rows if r["metric"] == "pass@k"})
    return EvalConfig(
        model=ref, model_name=r0["model"] if r0["model"] != ref else None, backend=r0.get("backend") or "auto",
        revision=extra.get("revision"), dtype=extra.get("dtype") or "auto",
        max_text_tokens=extra.get("max_text_tokens"), backend_options=dict(extra.get("backend_options") or {}),
        text_mode=r0.get("text_mode") or "truncate", interval=r0.get("interval"), num_frames=r0.get("uniform_frames"),
        protocol=r0["protocol"], clip_queries="auto" if r0.get("query_set") in (None, "release") else r0["query_set"],
        seed=int(r0.get("query_seed") or 0), topk=",".join(map(str, ks)) if ks else None,
        exclude_needs_review=bool(r0.get("needs_review_excluded")),
        bootstrap=int(r0.get("bootstrap_resamples") or 0), bootstrap_seed=int(r0.get("bootstrap_seed") or 0))


def calc_pass(repo: BenchmarkRepo, config: EvalConfig) -> list[dict[str, Any]]:
    """Result rows of every direction the stored embeddings allow (the original ``calc_pass``)."""
    return score(repo, config).rows
