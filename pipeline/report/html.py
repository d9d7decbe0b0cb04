"""Render the report as one self-contained HTML page.

Everything that comes from the data (AltTexts are untrusted web text, but so are URLs, error
messages, captions and the manifest) goes through :func:`esc`. The page has no script at all and
a Content-Security-Policy that forbids scripts and any resource that is not inline, so even a
missed escape could not run code or fetch anything.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.report.figures import Bar, LengthSummary, StageTotal, Throughput
from pipeline.report.thumbnails import Thumbnail

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_TIME_KEY = re.compile(r"(^|_)(time|at|start|end|started|finished|ended|created|timestamp)$", re.I)
# Manifest keys worth showing first; matched on whole words of snake_case keys, so
# ``caption_model`` and ``model_name`` count but ``max_model_len`` does not.
_HIGHLIGHTS = (
    ("Models", re.compile(r"^((\w+_)?models?|models?_(name|id|path))$", re.I)),
    ("Prompts", re.compile(r"^((\w+_)?prompts?|prompts?_(id|text|file|template)|system)$", re.I)),
    ("Versions", re.compile(r"(^|_)versions?$", re.I)),
    ("Timings", re.compile(_TIME_KEY.pattern + r"|(^|_)(duration|seconds|elapsed)$", re.I)),
)
_MAX_SHARD_ROWS = 200  # the shard table lists at most this many; the figure shows all


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True)
class GalleryItem:
    uid: str
    url: str | None
    status: str
    alt_text: str | None
    visual_caption: str | None
    fused_caption: str | None
    fusion_source: str | None
    fusion_reason: str | None
    ethics_flagged: bool | None
    ethics_reason: str | None
    width: int | None
    height: int | None
    caption_model: str | None
    fusion_model: str | None
    thumbnail: Thumbnail


@dataclass(frozen=True)
class FailureExample:
    uid: str
    url: str | None
    error: str | None
    alt_text: str | None


@dataclass(frozen=True)
class FailureGroup:
    status: str
    count: int
    share: float  # of all rows
    messages: list[tuple[str, int]]  # most frequent error messages
    other_messages: int  # rows whose message was not among those counted one by one
    examples: list[FailureExample]


@dataclass(frozen=True)
class ShardRow:
    shard_id: int
    rows: int
    ok: int
    seconds: float
    rows_per_s: float
    finished_at: float
    note: str = ""


@dataclass
class ReportContent:
    title: str
    output_dir: str
    generated_at: float
    finished_shards: int = 0
    in_progress: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    ethics_flagged: int = 0
    dedup: dict[str, int] = field(default_factory=dict)  # summed ShardStats.dedup_counts
    status: list[Bar] = field(default_factory=list)
    fusion: list[Bar] = field(default_factory=list)
    lengths: list[LengthSummary] = field(default_factory=list)
    throughput: Throughput | None = None
    stages: list[StageTotal] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # title -> inline SVG (trusted)
    gallery: list[GalleryItem] = field(default_factory=list)
    sample_requested: int = 0
    sample_eligible: int = 0  # ok rows the sample was drawn from
    seed: int = 0
    failures: list[FailureGroup] = field(default_factory=list)
    shards: list[ShardRow] = field(default_factory=list)
    manifest: Mapping[str, Any] | None = None
    manifest_error: str | None = None


def render_html(c: ReportContent) -> str:
    parts = [_head(c.title), "<body>", _header(c), '<main class="page">']
    if c.problems:
        parts.append(_problems(c.problems))
    if c.finished_shards == 0:
        parts.append(_nothing_yet(c))
    else:
        parts += [_sample(c), _failures(c), _figures(c), _shards(c)]
    parts.append(_manifest(c.manifest, c.manifest_error))
    parts.append(f"<footer>vecap report · generated {esc(_iso(c.generated_at))}</footer>")
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts)


# ---------------------------------------------------------------- page frame


_STYLE = """
:root{--fg:#1d1d1f;--muted:#5f6368;--line:#e3e3e3;--bg:#fafafa;--ok:#2e7d32;--bad:#c62828;--warn:#b26a00;--accent:#1565c0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header.top{background:#fff;border-bottom:1px solid var(--line);padding:16px 0}
header.top .wrap{max-width:1240px;margin:0 auto;padding:0 24px}
header.top h1{margin:0 0 2px;font-size:20px}
header.top .where{color:var(--muted);font-size:13px;word-break:break-all}
nav{margin-top:8px;font-size:13px}
nav a{color:var(--accent);margin-right:14px;text-decoration:none}
.page{max-width:1240px;margin:0 auto;padding:8px 24px 32px}
h2{font-size:17px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:16px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:12px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:130px}
.card .v{font-size:19px;font-weight:600}
.card .k{color:var(--muted);font-size:12px}
.note{color:var(--muted);font-size:13px}
.problems{background:#fff4e5;border:1px solid #f0c27b;border-radius:8px;padding:8px 16px}
.problems li{margin:2px 0}
.empty{background:#fff;border:1px dashed #bbb;border-radius:8px;padding:28px;text-align:center;font-size:16px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:12px}
.item{display:flex;gap:12px;background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px}
.thumb{flex:0 0 192px;height:192px;display:flex;align-items:center;justify-content:center;background:#f0f0f0;border-radius:4px;overflow:hidden}
.thumb img{max-width:192px;max-height:192px;display:block}
.thumb .noimg{color:var(--bad);font-size:12px;padding:8px;text-align:center}
.texts{flex:1;min-width:0}
.meta{font-size:12px;color:var(--muted);margin-bottom:4px;word-break:break-all}
.texts dl{margin:0}
.texts dt{font-size:11px;font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;margin-top:4px}
.texts dd{margin:0 0 2px;overflow-wrap:anywhere}
.badge{display:inline-block;font-size:11px;border-radius:10px;padding:0 8px;margin-right:4px;border:1px solid currentColor}
.b-ok{color:var(--ok)}.b-bad{color:var(--bad)}.b-src{color:var(--accent)}.b-flag{color:#fff;background:var(--bad);border-color:var(--bad)}
.missing{color:#999;font-style:italic}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
.fig{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
svg.figure{width:100%;height:auto;display:block}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{overflow-wrap:anywhere;max-width:520px}
.fail{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 14px;margin-bottom:10px}
.fail h3{margin-top:4px}
.fail table{width:100%}
.highlight{background:#eef4fc;border:1px solid #bcd3f0;border-radius:8px;padding:8px 14px;margin-bottom:10px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;border:1px solid var(--line);border-radius:4px;padding:6px 8px;margin:2px 0;font-size:12px}
table.kv th{width:1%;white-space:nowrap}
details>summary{cursor:pointer;color:var(--accent);margin:6px 0}
code{font-size:12px}
footer{color:var(--muted);font-size:12px;margin-top:32px}
"""


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>"
    )


def _header(c: ReportContent) -> str:
    ok = next((b for b in c.status if b.label == "ok"), None)
    cards = [
        ("finished shards", f"{c.finished_shards:,}"),
        ("shards in progress", f"{len(c.in_progress):,}"),
        ("rows", f"{c.rows:,}"),
        ("ok rows", f"{ok.count:,} ({ok.share:.1%})" if ok else "0"),
        ("ethics-flagged", f"{c.ethics_flagged:,}"),
    ]
    # `vecap run --dedup`: what the duplicates and the caption cache saved
    for key, label in (
        ("url_duplicates", "downloads saved (repeated URLs)"),
        ("image_duplicates", "repeated images (other URLs)"),
        ("caption_calls_saved", "caption calls saved"),
        ("fusion_calls_saved", "fusion calls saved"),
        ("caption_cache_hits", "caption cache hits"),
    ):
        if c.dedup:
            cards.append((label, f"{c.dedup.get(key, 0):,}"))
    run_status = (c.manifest or {}).get("status")
    if isinstance(run_status, str):
        cards.insert(0, ("run status (manifest)", run_status))
    if c.throughput and c.throughput.wall_seconds > 0:
        cards.append(("rows/s (whole run)", f"{c.throughput.rows_per_s:,.1f}"))
        cards.append(("wall time", _duration(c.throughput.wall_seconds)))
    card_html = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in cards
    )
    sections = (
        [
            ("sample", "Sample"),
            ("failures", "Failures"),
            ("figures", "Figures"),
            ("shards", "Shards"),
        ]
        if c.finished_shards
        else []
    )
    if c.problems:
        sections.insert(0, ("problems", "Problems"))
    sections.append(("manifest", "Manifest"))
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in sections)
    return (
        f'<header class="top"><div class="wrap"><h1>{esc(c.title)}</h1>'
        f'<div class="where">{esc(c.output_dir)}</div>'
        f'<div class="cards">{card_html}</div><nav>{nav}</nav></div></header>'
    )


def _problems(problems: Sequence[str]) -> str:
    items = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return f'<h2 id="problems">Problems</h2><div class="problems"><ul>{items}</ul></div>'


def _nothing_yet(c: ReportContent) -> str:
    extra = (
        f" {len(c.in_progress):,} shard(s) are being written and will appear once finished."
        if c.in_progress
        else ""
    )
    return (
        '<h2 id="sample">Nothing finished yet</h2>'
        f'<div class="empty">No shard of this output has finished yet: a shard counts once its '
        f"stats file is written.{esc(extra)}</div>"
    )


# ---------------------------------------------------------------- sample


def _text(value: str | None) -> str:
    return esc(value) if value else '<span class="missing">none</span>'


def _url(url: str | None) -> str:
    if not url:
        return '<span class="missing">no url</span>'
    # Only web links are made clickable; anything else (javascript:, data:) stays plain text.
    if url.lower().startswith(("http://", "https://")):
        return f'<a href="{esc(url)}" rel="noopener noreferrer nofollow">{esc(url)}</a>'
    return esc(url)


def _status_badge(status: str) -> str:
    cls = "b-ok" if status == "ok" else "b-bad"
    return f'<span class="badge {cls}">{esc(status)}</span>'


def _gallery_item(g: GalleryItem) -> str:
    if g.thumbnail.data_uri:
        alt = f"image {g.uid}"
        thumb = (
            f'<img src="{g.thumbnail.data_uri}" width="{g.thumbnail.width}" '
            f'height="{g.thumbnail.height}" alt="{esc(alt)}">'
        )
    else:
        thumb = f'<div class="noimg">{esc(g.thumbnail.error or "no image")}</div>'
    badges = [_status_badge(g.status)]
    if g.fusion_source:
        badges.append(f'<span class="badge b-src">VeC from {esc(g.fusion_source)}</span>')
    if g.ethics_flagged:
        badges.append('<span class="badge b-flag">ethics flagged</span>')
    size = f" · {g.width}×{g.height}" if g.width and g.height else ""
    models = f"caption model: {g.caption_model or '-'}; fusion model: {g.fusion_model or '-'}"
    rows = [
        ("AltText", _text(g.alt_text)),
        ("Visual caption (VC)", _text(g.visual_caption)),
        ("Fused caption (VeC)", _text(g.fused_caption)),
    ]
    if g.fusion_reason:
        rows.append(("Why not from the LLM", esc(g.fusion_reason)))
    if g.ethics_flagged and g.ethics_reason:
        rows.append(("Ethics check", esc(g.ethics_reason)))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        f'<article class="item"><div class="thumb">{thumb}</div><div class="texts">'
        f'<div class="meta">{"".join(badges)} <code title="{esc(models)}">{esc(g.uid)}</code>'
        f"{esc(size)}</div>"
        f'<div class="meta">{_url(g.url)}</div><dl>{dl}</dl></div></article>'
    )


def _sample(c: ReportContent) -> str:
    head = (
        f'<h2 id="sample">Random sample</h2><p class="note">{len(c.gallery):,} of '
        f"{c.sample_eligible:,} ok rows, drawn uniformly with seed {c.seed} "
        f"(asked for {c.sample_requested:,}); shown in uid order.</p>"
    )
    if not c.gallery:
        return head + '<div class="empty">No ok row to show.</div>'
    return head + '<div class="gallery">' + "".join(map(_gallery_item, c.gallery)) + "</div>"


# ---------------------------------------------------------------- failures


def _failures(c: ReportContent) -> str:
    out = ['<h2 id="failures">Failures by status</h2>']
    if not c.failures:
        return out[0] + '<p class="note">No failed row.</p>'
    for f in c.failures:
        out.append(
            f'<section class="fail"><h3>{_status_badge(f.status)} {_rows(f.count)} '
            f"({f.share:.2%} of all rows)</h3>"
        )
        if f.messages:
            rows = "".join(
                f'<tr><td class="wrap">{esc(m)}</td><td class="num">{n:,}</td></tr>'
                for m, n in f.messages
            )
            if f.other_messages:
                rows += (
                    f'<tr><td class="missing">other messages</td>'
                    f'<td class="num">{f.other_messages:,}</td></tr>'
                )
            out.append(
                f'<table><tr><th>error message (URLs and long numbers masked)</th><th class="num">rows</th></tr>{rows}</table>'
            )
        if f.examples:
            ex = "".join(
                f'<tr><td><code>{esc(e.uid)}</code></td><td class="wrap">{_url(e.url)}</td>'
                f'<td class="wrap">{_text(e.error)}</td><td class="wrap">{_text(e.alt_text)}</td></tr>'
                for e in f.examples
            )
            out.append(
                f"<h3>Random examples</h3><table><tr><th>uid</th><th>url</th><th>error</th>"
                f"<th>AltText</th></tr>{ex}</table>"
            )
        out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------- figures and shards


def _figures(c: ReportContent) -> str:
    figs = "".join(f'<div class="fig">{svg}</div>' for svg in c.figures.values())
    rows = "".join(
        f'<tr><td>{esc(s.kind)}</td><td class="num">{s.n:,}</td><td class="num">{s.missing:,}</td>'
        f'<td class="num">{s.mean:.1f}</td><td class="num">{s.median}</td>'
        f'<td class="num">{s.p90}</td><td class="num">{s.capped:,}</td></tr>'
        for s in c.lengths
    )
    cap = c.lengths[0].cap if c.lengths else 0
    table = (
        '<h3>Caption lengths (words, ok rows)</h3><table><tr><th>caption</th><th class="num">rows</th>'
        '<th class="num">missing</th><th class="num">mean</th><th class="num">median</th>'
        f'<th class="num">p90</th><th class="num">≥ {cap}</th></tr>{rows}</table>'
    )
    return f'<h2 id="figures">Figures</h2><div class="figs">{figs}</div>{table}'


def _shards(c: ReportContent) -> str:
    out = ['<h2 id="shards">Shards</h2>']
    if c.stages:
        rows = "".join(
            f'<tr><td>{esc(s.stage)}</td><td class="num">{_duration(s.seconds)}</td>'
            f'<td class="num">{s.share:.1%}</td></tr>'
            for s in c.stages
        )
        out.append(
            "<h3>Time per stage, summed over shards</h3><table><tr><th>stage</th>"
            f'<th class="num">time</th><th class="num">share</th></tr>{rows}</table>'
        )
    title = "Finished shards"
    shown = c.shards
    if len(c.shards) > _MAX_SHARD_ROWS:
        # Too many to list: the ones worth a look, those with a note and then the slowest.
        shown = sorted(c.shards, key=lambda s: (not s.note, s.rows_per_s, s.shard_id))
        shown = shown[:_MAX_SHARD_ROWS]
        title = f"Finished shards: {len(shown)} of {len(c.shards):,}, noted and slowest first"
    rows = "".join(
        f'<tr><td class="num">{esc(s.shard_id)}</td><td class="num">{s.rows:,}</td>'
        f'<td class="num">{s.ok:,}</td><td class="num">{s.seconds:,.1f}</td>'
        f'<td class="num">{s.rows_per_s:,.2f}</td><td>{esc(_iso(s.finished_at))}</td>'
        f"<td>{esc(s.note)}</td></tr>"
        for s in shown
    )
    out.append(
        f'<h3>{esc(title)}</h3><table><tr><th class="num">shard</th><th class="num">rows</th>'
        '<th class="num">ok</th><th class="num">seconds</th><th class="num">rows/s</th>'
        f"<th>finished</th><th>note</th></tr>{rows}</table>"
    )
    if c.in_progress:
        ids = ", ".join(str(i) for i in c.in_progress[:50])
        more = f" and {len(c.in_progress) - 50:,} more" if len(c.in_progress) > 50 else ""
        out.append(
            f'<p class="note">In progress (parquet without stats, not read): {esc(ids)}{esc(more)}</p>'
        )
    return "".join(out)


# ---------------------------------------------------------------- manifest


def _manifest(manifest: Mapping[str, Any] | None, error: str | None) -> str:
    out = ['<h2 id="manifest">Run manifest</h2>']
    if manifest is None:
        return out[0] + f'<p class="note">{esc(error or "no manifest")}</p>'
    highlights = [(title, _leaves(manifest, key.search)) for title, key in _HIGHLIGHTS]
    for title, leaves in highlights:
        leaves = [(path, value) for path, value in leaves if value is not None]  # unset: noise
        if leaves:
            rows = "".join(
                f"<tr><th>{esc(path)}</th><td>{_value(value, path.rsplit('.', 1)[-1])}</td></tr>"
                for path, value in leaves
            )
            out.append(
                f'<div class="highlight"><h3>{esc(title)}</h3><table class="kv">{rows}</table></div>'
            )
    out.append(f"<details><summary>Full manifest</summary>{_value(manifest, '')}</details>")
    return "".join(out)


def _leaves(obj: Any, match, path: str = "", inside: bool = False) -> list[tuple[str, Any]]:
    """(dotted path, value) of the scalar (or scalar-list) values whose key ``match``es.

    A flat mapping under a matching key counts whole (``prompts: {id: text}``,
    ``versions: {pkg: version}``); a nested one does not, so ``models: {caption: {...}}`` lends
    its name to ``models.caption.model`` but not to ``models.caption.backend``.
    """
    found: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping):
        flat = all(_is_scalar(v) for v in obj.values())
        for k, v in obj.items():
            sub = f"{path}.{k}" if path else str(k)
            found += _leaves(v, match, sub, match(str(k)) or (inside and flat))
    elif isinstance(obj, list) and not all(_is_scalar(x) for x in obj):
        for i, v in enumerate(obj):
            found += _leaves(v, match, f"{path}[{i}]", False)
    elif inside:
        found.append((path, obj))
    return found


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _value(v: Any, key: str) -> str:
    if isinstance(v, Mapping):
        if not v:
            return "<code>{}</code>"
        rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{_value(x, str(k))}</td></tr>" for k, x in v.items()
        )
        return f'<table class="kv">{rows}</table>'
    if isinstance(v, list):
        if not v:
            return "<code>[]</code>"
        if all(_is_scalar(x) for x in v):
            return ", ".join(_value(x, key) for x in v)
        if all(isinstance(x, Mapping) for x in v):
            keys = list(dict.fromkeys(k for x in v for k in x))
            if len(keys) <= 8:
                head = "".join(f"<th>{esc(k)}</th>" for k in keys)
                body = "".join(
                    "<tr>" + "".join(f"<td>{_value(x.get(k), str(k))}</td>" for k in keys) + "</tr>"
                    for x in v
                )
                return f"<table><tr>{head}</tr>{body}</table>"
        return "<ol>" + "".join(f"<li>{_value(x, key)}</li>" for x in v) + "</ol>"
    if isinstance(v, str):
        if "\n" in v or len(v) > 100:
            return f"<pre>{esc(v)}</pre>"
        return esc(v)
    if isinstance(v, bool) or v is None:
        return f"<code>{esc(json.dumps(v))}</code>"
    if isinstance(v, (int, float)) and _TIME_KEY.search(key) and 1e9 <= v < 1e10:
        return f"{esc(_iso(v))} <code>{esc(v)}</code>"  # a unix time: show it readable
    return f"<code>{esc(v)}</code>"


# ---------------------------------------------------------------- formatting


def _iso(ts: float) -> str:
    if not ts:
        return ""
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
