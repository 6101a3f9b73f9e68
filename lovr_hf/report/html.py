"""``lovr report --repo R [--model M] --out DIR``: a static HTML page per model (no server needed).

A researcher's first look at a scored model: the results table with its 95% intervals, the plots the
card shows, and a gallery of sampled queries, hits and misses alike, so the numbers can be checked by
eye: for text->clip each query's caption, a thumbnail strip of its gold clip, and the top-5 retrieved
clips with their scores, the gold one marked; for text->video the same at video level (a video's
thumbnail strip is one frame from each of a few of its clips). Thumbnails are decoded from the clip
files through :mod:`lovr_hf.video.reader` (the same reader contract every stage uses) and written as PNG next
to the page. Queries are drawn with a seeded generator from the stored ``rankings`` (no re-scoring).
"""

from __future__ import annotations

import html
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lovr_hf import schema
from lovr_hf.evaluation.models import model_slug, protocol_slug
from lovr_hf.evaluation.results import read_results
from lovr_hf.failures import UnknownName
from lovr_hf.model_labels import model_label
from lovr_hf.repo import BenchmarkRepo
from lovr_hf.report.plots import DIRECTION_NAMES, PLOT, SLICE_PLOT
from lovr_hf.stats.rankings import read_rankings

logger = logging.getLogger(__name__)

THUMB = (96, 54)  # width, height of one thumbnail
STRIP_FRAMES = 4
TOP = 5
GALLERY_DIRECTIONS = ("text_to_clip", "text_to_video")
CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px}th{background:#eee}img{vertical-align:middle}
.q{border:1px solid #ccc;border-radius:4px;padding:.6em;margin:.8em 0}.hit{border-left:6px solid #2a2}
.miss{border-left:6px solid #c22}.cand{display:inline-block;margin:2px 4px;text-align:center;font-size:12px}
.gold{outline:3px solid #e90}.cap{font-size:13px;color:#333;margin:.3em 0}"""
#: counts images that failed to load into ``<body data-images-broken>`` (read by the headless-browser test)
CHECK_SCRIPT = ("<script>window.addEventListener('load',function(){var b=0;for(var i of document.images)"
                "{if(!i.complete||i.naturalWidth===0)b++;}document.body.dataset.imagesBroken=b;});</script>")


class Thumbs:
    """PNG thumbnails of clips and videos under ``out/thumbs``, each decoded once."""

    def __init__(self, repo: BenchmarkRepo, out: Path) -> None:
        self.repo, self.dir = repo, out / "thumbs"
        self.dir.mkdir(parents=True, exist_ok=True)
        clips = repo.read(schema.CLIPS).to_list() if repo.has(schema.CLIPS) else []
        self.clips = {c[schema.CLIP_ID]: c for c in clips if c.get(schema.STATUS, schema.OK) == schema.OK}
        self.by_video: dict[str, list[dict[str, Any]]] = {}
        for c in sorted(self.clips.values(), key=lambda c: (c[schema.VIDEO_ID], c.get("start_frame") or 0)):
            self.by_video.setdefault(c[schema.VIDEO_ID], []).append(c)

    def _frames(self, row: dict[str, Any], k: int) -> list[Any]:
        from lovr_hf.video.reader import evenly_spaced, read_clip_frames

        n = int(row.get("num_frames") or 0)
        return list(read_clip_frames(row, evenly_spaced(n, k), root=self.repo.root, size=THUMB)) if n else []

    def _save(self, name: str, frames: Sequence[Any]) -> str | None:
        import numpy as np
        from PIL import Image

        if not frames:
            return None
        rel = f"thumbs/{name}.png"
        Image.fromarray(np.concatenate(list(frames), axis=1).astype("uint8")).save(self.dir.parent / rel)
        return rel

    def get(self, item: str, level: str, strip: bool) -> str | None:
        """Relative path of the thumbnail (``strip``: several frames side by side), or None if undecodable."""
        from lovr_hf.ids import strict_slug

        name = f"{level}-{strict_slug(item)}-{'s' if strip else '1'}"
        if (self.dir / f"{name}.png").is_file():
            return f"thumbs/{name}.png"
        try:
            if level == "clip":
                row = self.clips.get(item)
                frames = self._frames(row, STRIP_FRAMES if strip else 1) if row else []
            else:
                rows = self.by_video.get(item, [])
                picks = [rows[i] for i in sorted({int(j * len(rows) / STRIP_FRAMES)
                                                  for j in range(STRIP_FRAMES if strip else 1)})] if rows else []
                frames = [f for r in picks for f in self._frames(r, 1)]
        except Exception as exc:  # an unreadable clip leaves a gap in the gallery, never a broken page
            logger.warning("no thumbnail for %s %s: %s", level, item, exc)
            return None
        return self._save(name, frames)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(rel: str | None, alt: str, cls: str = "") -> str:
    if rel is None:
        return f'<span class="{cls}">[no frames: {_esc(alt)}]</span>'
    return f'<img src="{_esc(rel)}" alt="{_esc(alt)}" class="{cls}">'


def results_table(rows: list[dict[str, Any]]) -> str:
    """pass@k with 95% intervals per direction (slice "all"), k as scored."""
    passk = [r for r in rows if r["metric"] == "pass@k" and r.get("slice", "all") == "all"]
    ks = sorted({r["k"] for r in passk})
    dirs = [d for d in DIRECTION_NAMES if any(r["direction"] == d for r in passk)]
    out = ["<table><tr><th>direction</th>" + "".join(f"<th>pass@{k} (%)</th>" for k in ks) + "</tr>"]
    for d in dirs:
        cells = []
        for k in ks:
            r = next((r for r in passk if r["direction"] == d and r["k"] == k), None)
            if r is None:
                cells.append("<td>-</td>")
                continue
            ci = (f" [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]" if r.get("ci_low") is not None else "")
            cells.append(f"<td>{100 * r['value']:.1f}{ci}</td>")
        out.append(f"<tr><td>{_esc(DIRECTION_NAMES.get(d, d))}</td>{''.join(cells)}</tr>")
    return "\n".join(out + ["</table>"])


def sample_queries(rankings: list[dict[str, Any]], direction: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` queries of ``direction``: half hits (gold ranked first), half misses, seeded."""
    rows = sorted((r for r in rankings if r["direction"] == direction), key=lambda r: r["query_index"])
    hits = [r for r in rows if r["gold_rank"] == 1]
    misses = [r for r in rows if r["gold_rank"] != 1]
    rng = random.Random(f"{seed}:{direction}")
    n_miss = min(len(misses), max(n - len(hits), n // 2))
    picked = rng.sample(misses, n_miss) + rng.sample(hits, min(len(hits), n - n_miss))
    return sorted(picked, key=lambda r: r["query_index"])


def _captions(repo: BenchmarkRepo, config: str, key: str) -> dict[str, str]:
    if not repo.has(config):
        return {}
    t = repo.read_table(config)
    return dict(zip(t.column(key).to_pylist(), t.column(schema.CAPTION).to_pylist()))


def gallery(repo: BenchmarkRepo, thumbs: Thumbs, rankings: list[dict[str, Any]], direction: str, n: int,
            seed: int) -> str:
    level = "clip" if direction == "text_to_clip" else "video"
    caps = (_captions(repo, schema.CLIP_CAPTIONS, schema.CLIP_ID) if level == "clip"
            else _captions(repo, schema.VIDEO_CAPTIONS, schema.VIDEO_ID))
    parts = [f"<h2>Gallery: {_esc(DIRECTION_NAMES.get(direction, direction))}</h2>"]
    chosen = sample_queries(rankings, direction, n, seed)
    if not chosen:
        return parts[0] + "<p>No rankings stored for this direction.</p>"
    for r in chosen:
        gold = set(r["gold_ids"])
        hit = r["gold_rank"] == 1
        gold_id = r["gold_ids"][0] if r["gold_ids"] else r["query_id"]
        cands = []
        for cid, score in list(zip(r["top_ids"], r["top_scores"]))[:TOP]:
            mark = cid in gold
            cands.append(f'<div class="cand">{_img(thumbs.get(cid, level, False), cid, "gold" if mark else "")}'
                         f'<br>{_esc(cid)}<br>{score:.3f}{" ★ gold" if mark else ""}</div>')
        parts.append(
            f'<div class="q {"hit" if hit else "miss"}"><b>{"hit" if hit else "miss"}</b>: gold rank '
            f'{r["gold_rank"]} (query {_esc(r["query_id"])})<div class="cap">{_esc(caps.get(r["query_id"], ""))}</div>'
            f'gold {_esc(gold_id)}: {_img(thumbs.get(gold_id, level, True), gold_id)}<br>top {TOP}:<br>'
            + "".join(cands) + "</div>")
    return "\n".join(parts)


def write_report(repo: BenchmarkRepo | str, out: str | Path, models: Sequence[str] | None = None, *,
                 protocol: str = "lovr", samples: int = 6, seed: int = 0) -> list[Path]:
    """Write ``out/<model label>.html`` per model (and ``out/index.html``); returns the pages."""
    repo = repo if isinstance(repo, BenchmarkRepo) else BenchmarkRepo(repo)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_results(repo)
    present = list(dict.fromkeys(r["model"] for r in rows))
    models = [model_label(m) for m in models or []]  # a local folder given by path: its results label
    unknown = [m for m in (models or []) if m not in present]
    if unknown:
        raise UnknownName(f"no results for {unknown}; results hold: {present}")
    plots = []
    for rel in (PLOT, SLICE_PLOT):
        if (repo.root / rel).is_file():
            (out / "assets").mkdir(exist_ok=True)
            shutil.copyfile(repo.root / rel, out / "assets" / Path(rel).name)
            plots.append(f"assets/{Path(rel).name}")
    thumbs = Thumbs(repo, out)
    pages = []
    for m in models or present:
        mine = [r for r in rows if r["model"] == m and r.get("protocol", "lovr") == protocol]
        rankings = read_rankings(repo, protocol_slug(model_slug(m), protocol), protocol)
        label = model_label(m)
        body = [f"<h1>{_esc(repo.root.name)}: {_esc(label)}</h1>",
                f"<p>protocol {_esc(protocol)}; brackets: 95% bootstrap interval. Gallery: {samples} queries per "
                f"direction drawn with seed {seed} among hits (gold ranked first) and misses.</p>",
                results_table(mine)]
        body += [f'<p><img src="{_esc(p)}" alt="{_esc(p)}" style="max-width:100%"></p>' for p in plots]
        body += [gallery(repo, thumbs, rankings, d, samples, seed) for d in GALLERY_DIRECTIONS]
        page = out / f"{model_slug(m)}.html"
        page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>" + _esc(label)
                        + f"</title><style>{CSS}</style>{CHECK_SCRIPT}</head><body>" + "\n".join(body)
                        + "</body></html>\n",
                        encoding="utf-8")
        pages.append(page)
    links = "".join(f'<li><a href="{_esc(p.name)}">{_esc(p.stem)}</a></li>' for p in pages)
    (out / "index.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(repo.root.name)}"
                                    f"</title></head><body><h1>{_esc(repo.root.name)}</h1><ul>{links}</ul>"
                                    "</body></html>\n", encoding="utf-8")
    logger.info("report: %d page(s) in %s", len(pages), out)
    return pages
