"""Dataset card body and plots, generated from what the repo holds (never hand-edited)."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from lovr_hf import __version__, schema

if TYPE_CHECKING:
    from lovr_hf.repo import BenchmarkRepo

logger = logging.getLogger(__name__)

CLIP_HIST = "assets/clip_lengths.png"


def _column(repo: BenchmarkRepo, files: dict[str, list[str]], config: str, column: str) -> list[Any]:
    out: list[Any] = []
    for f in files.get(config, []):
        path = repo.root / f
        if path.exists():
            out.extend(pq.read_table(path, columns=[column]).column(column).to_pylist())
    return out


def stats(repo: BenchmarkRepo, files: dict[str, list[str]]) -> dict[str, Any]:
    """Headline numbers of the benchmark (also printed by ``lovr info``)."""
    s: dict[str, Any] = {"configs": {c: _count(repo, fs) for c, fs in files.items()}}
    if schema.VIDEOS in files:
        status = _column(repo, files, schema.VIDEOS, schema.STATUS)
        dur = [d for d, st in zip(_column(repo, files, schema.VIDEOS, "duration_s"), status) if st == schema.OK]
        s["videos"] = len(status)
        s["videos_ok"] = sum(st == schema.OK for st in status)
        s["hours"] = sum(d or 0.0 for d in dur) / 3600
    if schema.CLIPS in files:
        starts = _column(repo, files, schema.CLIPS, "start_time")
        ends = _column(repo, files, schema.CLIPS, "end_time")
        lengths = [e - b for b, e in zip(starts, ends) if b is not None and e is not None]
        s["clips"] = len(starts)
        if lengths:
            s["clip_length_mean_s"] = statistics.fmean(lengths)
            s["clip_length_median_s"] = statistics.median(lengths)
        s["_clip_lengths"] = lengths
    for cfg in (schema.CLIP_CAPTIONS, schema.CLUSTERS, schema.VIDEO_CAPTIONS):
        if cfg in files:
            caps = _column(repo, files, cfg, schema.CAPTION)
            status = _column(repo, files, cfg, schema.STATUS)
            words = [len((c or "").split()) for c in caps]
            s[f"{cfg}_words_mean"] = statistics.fmean(words) if words else 0.0
            s[f"{cfg}_status"] = {k: status.count(k) for k in sorted(set(status))}
    return s


def _count(repo: BenchmarkRepo, files: list[str]) -> int:
    return sum(pq.ParquetFile(repo.root / f).metadata.num_rows for f in files if (repo.root / f).exists())


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(repo: BenchmarkRepo, fig: Any, rel: str) -> str:
    """Render ``fig`` as PNG, close it, and write it atomically at ``rel`` inside the repo."""
    import io

    from lovr_hf.repo import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    atomic_write_bytes(repo.root / rel, buf.getvalue())
    return rel


def write_clip_histogram(repo: BenchmarkRepo, lengths: list[float]) -> str | None:
    if not lengths:
        return None
    fig, ax = pyplot().subplots(figsize=(6, 3.2), dpi=100)
    # visible bar edges: two equal adjacent bars must not read as one wide block
    ax.hist(lengths, bins=min(40, max(5, len(lengths) // 3)), color="#4C72B0", edgecolor="white", linewidth=0.8)
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("clips")
    ax.set_title(f"Clip lengths ({len(lengths)} clips)")
    fig.tight_layout()
    return save_png(repo, fig, CLIP_HIST)


def _origin(run: dict[str, Any]) -> list[str]:
    """Where the data came from: an imported release was neither captioned nor merged by lovr_hf."""
    imported = run.get("import_release")
    if isinstance(imported, dict):
        gen = imported.get("generation")
        return [f"Imported with lovr_hf {__version__} from the published LoVR release (arXiv 2505.13928)"
                + (f", {gen} generation" if gen else "") + ": its clip and video captions are the release's own, "
                "loaded as published; lovr_hf did not segment, caption or merge them (the release has no "
                "clusters). Retrieval models are scored with pass@k (Recall@k) in both directions."]
    return ["Built with lovr_hf "
            f"{__version__}, following LoVR (arXiv 2505.13928): long videos are cut into scene clips, every clip",
            "is captioned by a vision-language model, and clip captions are merged into cluster and full-video",
            "captions by an LLM. Retrieval models are scored with pass@k (Recall@k) in both directions."]


def render_card_body(repo: BenchmarkRepo, files: dict[str, list[str]]) -> str:
    s = stats(repo, files)
    run = repo.run_config()
    lines = [f"# {repo.root.name}: a LoVR-style long-video retrieval benchmark", "", *_origin(run), ""]
    demo = run.get("demo")
    if demo:
        lines += ["> **Demo data** (`lovr demo`" + (" --hub" if isinstance(demo, dict) and demo.get("mode") == "hub"
                                                  else "") + "). The videos are synthetic. Models:", ">"]
        for m in (demo.get("models", []) if isinstance(demo, dict) else []):
            lines.append(f"> - {m['stage']}: `{Path(str(m['model'])).name or m['model']}` — {m['kind']}")
        lines += ["", "Scores of stand-ins and random weights say nothing about any model; only the pipeline is "
                  "the one a real run uses.", ""]
    if run.get("partial"):
        lines += [f"> **Partial data.** Gathered with `--allow-partial` while chunks were missing: "
                  f"`{run['partial']}`.", ""]
    lines += ["## Statistics", "", "| | |", "|---|---|"]
    for key, label in [
        ("videos", "videos"),
        ("videos_ok", "videos segmented"),
        ("hours", "hours of video"),
        ("clips", "clips"),
        ("clip_length_mean_s", "mean clip length (s)"),
        ("clip_length_median_s", "median clip length (s)"),
        ("clip_captions_words_mean", "mean clip caption length (words)"),
        ("clusters_words_mean", "mean cluster caption length (words)"),
        ("video_captions_words_mean", "mean video caption length (words)"),
    ]:
        if key in s:
            v = s[key]
            lines.append(f"| {label} | {v:.2f} |" if isinstance(v, float) else f"| {label} | {v} |")
    lines.append("")
    plot = write_clip_histogram(repo, s.get("_clip_lengths", []))
    if plot:
        lines += [f"![clip length histogram]({plot})", ""]
    for cfg in (schema.CLIP_CAPTIONS, schema.CLUSTERS, schema.VIDEO_CAPTIONS):
        st = s.get(f"{cfg}_status")
        if st:
            lines.append(f"- `{cfg}` status: " + ", ".join(f"{k}: {v}" for k, v in st.items()))
    lines += ["", "## Configs", "", "| config | rows |", "|---|---|"]
    lines += [f"| `{c}` | {n} |" for c, n in s["configs"].items()]
    lines += [
        "",
        "```python",
        "from datasets import load_dataset",
        f'clips = load_dataset("{repo.root.name}", "clips", split="train")  # or the Hub id after `lovr push`',
        'clips[0]["video"]  # on the Hub a torchcodec VideoDecoder of the clip file; locally the stored cell',
        "```",
        "",
        "`clips.video` is each clip file as a `datasets.Video` (decoded by `load_dataset`, also streaming): on "
        "the Hub an `hf://datasets/<id>@<revision>/<path>` URL of the uploaded file; in a local copy its `path` "
        "relative to the repo root, stored undecoded (`lovr_hf.clip_video.clips_with_video(repo)` decodes it from "
        "any folder). It is null for `virtual` clips (frame ranges of the source video, `path` from `frame_offset`) and "
        "rows without a clip file. A `copy` clip's file starts at the keyframe before the cut: the clip is frames "
        "`[frame_offset, frame_offset + num_frames)` of the decoder.",
        "",
    ]
    results_md = Path(repo.root / "results.md")
    if results_md.exists():
        from lovr_hf.evaluation.results import stale_results

        lines += ["## Retrieval results", ""]
        stale = stale_results(repo)
        if stale:
            lines += [f"> ⚠ **Out of date:** {', '.join(stale)} were scored on an earlier version of this dataset "
                      "(its captions, clips or videos changed since): run `lovr eval` again for these models; "
                      "`lovr eval --verify` names the difference.", ""]
        lines += [results_md.read_text(encoding="utf-8").strip(), ""]
    if run:
        lines += [
            "## How it was built",
            "",
            "The exact configuration of the last run (`run_config.json`):",
            "",
            "```json",
            json.dumps(run, indent=2, sort_keys=True),
            "```",
            "",
        ]
    return "<!-- lovr_hf:card -->\n" + "\n".join(lines)


def write_card(repo: BenchmarkRepo) -> None:
    """Render the card's body from what ``repo`` holds now and write it below the card's index.

    Storage never renders (a write only updates the YAML index): the ``lovr`` commands call this once when they
    end, for every repo they changed (:func:`write_changed_cards`); a library caller of a stage function
    (``segment(...)``, ``evaluate_model(...)``...) calls it when it wants the card current.
    """
    with repo.lock():  # the card shows the configs listed at this moment, not a half-switched index
        repo.write_card_body(render_card_body(repo, repo.config_files()))


def write_changed_cards() -> list[Path]:
    """:func:`write_card` for every repo this process changed since its card was last written (folders gone
    since, such as a push's staging folder, are skipped). Returns the roots rendered."""
    from lovr_hf.repo import BenchmarkRepo, changed_roots, forget_changes

    done = []
    for root in changed_roots():
        if (root / "README.md").is_file():
            write_card(BenchmarkRepo(root))
            done.append(root)
    forget_changes()
    return done
