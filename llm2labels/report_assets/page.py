"""The HTML of `report.html`, from plain data (see llm2labels/report.py for where the data comes from).

Everything that came from a model or a file system (labels, paths, config text) goes through `_e`, so a label
such as `<script>` is shown, never run. The CSS and script beside this module are inlined; thumbnails are in
one JSON array that label rows index into.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

OPEN_TREE_NODES = 200  # a hierarchy this small starts expanded


@dataclass(frozen=True)
class Evidence:
    image: int  # index into Page.pictures
    score: float  # the label's image score there
    kept: bool  # False: only in the unfiltered labels of that image


@dataclass(frozen=True)
class Picture:
    rel: str  # the image's path in the dataset
    src: str | None  # data URI or relative file; None -> placeholder
    size: tuple[int, int]  # thumbnail (width, height) in pixels
    note: str  # why there is no thumbnail
    link: str | None  # file:// URI of the full image


@dataclass
class Page:
    title: str
    summary: dict[str, Any]
    labels: list[dict[str, str]]  # labels.csv rows, rank order
    evidence: dict[str, list[Evidence]]  # label -> best first
    pictures: list[Picture]
    vocabulary: dict[str, Any]
    metrics: dict[str, Any] | None
    pr_curve: str | None  # data URI
    config: str | None
    overrides: str | None
    thumb_px: int


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    """3 significant digits for a number, the escaped text otherwise."""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return _e(value)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _chips(items: dict[str, Any]) -> str:
    return " ".join(f'<span class="chip">{_e(k)}=<b>{_e(v)}</b></span>' for k, v in items.items())


def _figures(pairs: list[tuple[str, Any]]) -> str:
    cells = "".join(f'<div class="fig"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in pairs if v != "")
    return f'<div class="figs">{cells}</div>'


def _run(page: Page) -> str:
    s, vocab = page.summary, page.vocabulary
    seconds = s.get("seconds") or {}
    pairs = [("images", s.get("images", "?")), ("skipped", len(s.get("skipped") or [])),
             ("labels", len(page.labels)), ("synsets", len(vocab.get("synsets") or [])),
             ("crops", s.get("crops", "?")), ("generations", s.get("generations", "?")),
             ("cache hits", s.get("cache_hits", "?")), ("seconds", f"{sum(map(_float, seconds.values())):.1f}")]
    stages = " ".join(f'<span class="chip">{_e(k)} <b>{_float(v):.2f} s</b></span>' for k, v in seconds.items())
    rows = [("proposer", _chips(s.get("proposer") or {})), ("grid", _e(s.get("grid", ""))),
            ("filter", _e(s.get("filter", ""))), ("grouper", _chips(vocab.get("grouper") or {})),
            ("seconds per stage", stages), ("sample store", _e(s.get("store", "")))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<section id="run"><h2>Run</h2>{_figures(pairs)}<dl>{dl}</dl></section>'


def _metrics(page: Page) -> str:
    m = page.metrics
    if m is None:
        return ""
    cols = ["num_classes", "P", "P_class", "R", "AUC"]
    head = "".join(f"<th>{c}</th>" for c in ["classes", *cols])  # rows: seen classes, the full class list
    body = "".join(f"<tr><th>{name}</th>" + "".join(f"<td>{_num(m[name].get(c, ''))}</td>" for c in cols)
                   + "</tr>" for name in ("seen", "full") if isinstance(m.get(name), dict))
    image = m.get("image") or {}
    pairs = [("class list", m.get("classes", "")), ("k", m.get("k", "")), ("entries", m.get("entries", "")),
             ("num_labels", m.get("num_labels", "")), ("fp_in_vocab", m.get("fp_in_vocab", "")),
             ("image mAP", _num(image.get("mAP", ""))), ("image micro AUC", _num(image.get("micro_AUC", "")))]
    curve = f'<img class="curve" src="{page.pr_curve}" alt="PR curve">' if page.pr_curve else ""
    return (f'<section id="metrics"><h2>Metrics</h2>{_figures(pairs)}'
            f'<div class="side"><table class="metrics"><tr>{head}</tr>{body}</table>{curve}</div></section>')


def _figure(page: Page, ev: Evidence, height: int) -> str:
    """One evidence thumbnail (its `src` is set by the script when the row nears the viewport)."""
    pic = page.pictures[ev.image]
    tip = f"{pic.rel} · score {ev.score:.3g}" + ("" if ev.kept else " · below the filter in this image")
    cls = "" if ev.kept else ' class="weak"'
    cap = f"<figcaption>{ev.score:.2g}</figcaption>"
    if pic.src is None:
        return f'<figure{cls}><span class="ph" title="{_e(tip + " · " + pic.note)}">no image</span>{cap}</figure>'
    w, h = pic.size
    width = min(round(w * height / max(h, 1)), 2 * height)
    link = ' class="ln"' if pic.link else ""
    return (f'<figure{cls}><img{link} data-t="{ev.image}" width="{width}" height="{height}" alt="" '
            f'title="{_e(tip)}">{cap}</figure>')


def _label_row(page: Page, row: dict[str, str], height: int) -> str:
    label, rank = row.get("label", ""), row.get("rank", "")
    forms = [f for f in (row.get("surface_forms") or "").split("|") if f and f != label]
    query = " ".join([label, *forms]).lower()
    figs = "".join(_figure(page, ev, height) for ev in page.evidence.get(label, []))
    also = f"<small>also: {_e(', '.join(forms))}</small>" if forms else ""
    return (f'<div class="row" id="l{_e(rank)}" data-q="{_e(query)}" data-s="{_float(row.get("score"))}" '
            f'data-n="{int(_float(row.get("images")))}"><span class="rk">{_e(rank)}</span>'
            f'<div class="lb"><b>{_e(label)}</b>{also}</div><span>{_num(row.get("score"))}</span>'
            f'<span>{_num(row.get("occ"))}</span><span>{_num(row.get("prob"))}</span>'
            f'<span>{_e(row.get("images", ""))}</span>'
            f'<div class="ev">{figs or "<span class=none>no evidence</span>"}</div></div>')


def _labels(page: Page) -> str:
    height = max(24, round(page.thumb_px * 0.6))  # CSS px; the 160 px JPEG stays sharp on 1.5x screens
    rows = "".join(_label_row(page, row, height) for row in page.labels)
    head = ('<div class="row hd"><span>#</span><span>label</span><span>score</span><span>occ</span>'
            '<span>prob</span><span>images</span><span>evidence (highest image score first)</span></div>')
    tools = ('<div class="tools"><input id="q" type="search" placeholder="filter labels and synsets…" '
             'autocomplete="off"><label>min score <input id="min-score" type="number" min="0" step="any">'
             '</label><label>min images <input id="min-images" type="number" min="0" step="1"></label>'
             f'<span id="count">{len(page.labels)} of {len(page.labels)} labels</span></div>')
    return (f'<section id="labels-section"><h2>Labels</h2><div class="sticky labels">{tools}{head}</div>'
            f'<div id="labels" class="list labels" style="--h:{height}px">{rows}</div></section>')


def _synsets(page: Page) -> str:
    vocab = page.vocabulary
    rank_of = {row.get("label"): row.get("rank") for row in page.labels}
    rows = []
    for i, syn in enumerate(vocab.get("synsets") or [], 1):
        name, members = str(syn.get("name", "")), [str(m) for m in syn.get("members") or []]
        ref = rank_of.get(members[0] if members else name)
        named = f'<a href="#l{_e(ref)}">{_e(name)}</a>' if ref else _e(name)
        sense = syn.get("wordnet")
        tag = f' <small class="wn">{_e(sense)}</small>' if isinstance(sense, str) else ""
        rows.append(f'<div class="row" data-q="{_e(" ".join([name, *members]).lower())}" '
                    f'data-s="{_float(syn.get("score"))}" data-n="{int(_float(syn.get("images")))}">'
                    f'<span class="rk">{i}</span><b>{named}{tag}</b><span>{_e(", ".join(members))}</span>'
                    f'<span>{_num(syn.get("score"))}</span><span>{_num(syn.get("occ"))}</span>'
                    f'<span>{_e(syn.get("images", ""))}</span></div>')
    head = ('<div class="row hd"><span>#</span><span>synset</span><span>members</span><span>score</span>'
            '<span>occ</span><span>images</span></div>')
    extra = "".join(f'<p class="note">{k} ({len(vocab[k])}): {_e(", ".join(map(str, vocab[k])))}</p>'
                    for k in ("dropped", "invented") if vocab.get(k)) + _suspects(vocab)
    return (f'<section id="vocabulary"><h2>Vocabulary <small id="syn-count">{len(rows)} synsets</small></h2>'
            f'{extra}<div id="synsets" class="list synsets">{head}{"".join(rows)}</div></section>')


def _suspects(vocab: dict[str, Any]) -> str:
    """The LLM's merges of labels WordNet holds as distinct concepts, for review."""
    items = []
    for suspect in vocab.get("suspects") or []:
        if not isinstance(suspect, dict):
            continue
        senses = suspect.get("senses") or {}
        parts = "; ".join(f'{_e(", ".join(map(str, members)))} <small class="wn">{_e(sense)}</small>'
                          for sense, members in senses.items() if isinstance(members, list))
        items.append(f"<li><b>{_e(suspect.get('synset', ''))}</b>: {parts}</li>")
    if not items:
        return ""
    return (f'<details class="note"><summary>suspect merges ({len(items)}): synsets whose members WordNet '
            f'holds as distinct concepts</summary><ul>{"".join(items)}</ul></details>')


def _tree(node: Any, seen: set[str], opened: str) -> str:
    """One hierarchy node as nested <details>; a repeated name (an LLM may repeat one) is shown once."""
    name = node.get("name") if isinstance(node, dict) else None
    if not isinstance(name, str) or name in seen:
        return ""
    seen.add(name)
    children = "".join(_tree(child, seen, opened) for child in node.get("children") or [])
    sense = node.get("wordnet")
    label = _e(name)
    if node.get("implicit"):  # a WordNet concept above several labels, not a label itself
        label = f'<i class="implicit" title="WordNet concept {_e(sense)}, not a label of the run">{label}</i>'
    elif isinstance(sense, str):
        label = f'<span title="WordNet {_e(sense)}">{label}</span>'
    if not children:
        return f"<li>{label}</li>"
    return f"<li><details{opened}><summary>{label}</summary><ul>{children}</ul></details></li>"


def _size(forest: list[Any]) -> int:
    return sum(1 + _size(n.get("children") or []) for n in forest if isinstance(n, dict))


def _implicit(node: Any) -> bool:
    return isinstance(node, dict) and (bool(node.get("implicit"))
                                       or any(_implicit(c) for c in node.get("children") or []))


def _hierarchy(page: Page) -> str:
    forest = page.vocabulary.get("hierarchy") or []
    opened = " open" if _size(forest) <= OPEN_TREE_NODES else ""
    seen: set[str] = set()
    items = "".join(_tree(node, seen, opened) for node in forest)
    body = (f'<p><button type="button" id="expand">expand all</button> '
            f'<button type="button" id="collapse">collapse all</button></p><ul class="tree">{items}</ul>'
            if items else '<p class="note">no hierarchy (this grouper made none, or no label has a parent)</p>')
    if any(_implicit(node) for node in forest):
        body = ('<p class="note"><i>Italic</i> names are WordNet concepts that several labels fall under, '
                'not labels of this run.</p>' + body)
    return f'<section id="hierarchy"><h2>Hierarchy</h2>{body}</section>'


def _skipped(page: Page) -> str:
    skipped = page.summary.get("skipped") or []
    items = "".join(f"<li><code>{_e(s.get('path', ''))}</code> — {_e(s.get('reason', ''))}</li>"
                    for s in skipped if isinstance(s, dict))
    body = f'<ul class="skipped">{items}</ul>' if items else '<p class="note">none</p>'
    return f'<section id="skipped"><h2>Skipped images ({len(skipped)})</h2>{body}</section>'


def _config(page: Page) -> str:
    parts = [f"<details open><summary>overrides</summary><pre>{_e(page.overrides)}</pre></details>"
             if page.overrides else "",
             f"<details><summary>.hydra/config.yaml</summary><pre>{_e(page.config)}</pre></details>"
             if page.config else '<p class="note">no .hydra/config.yaml in this run folder</p>']
    return f'<section id="config"><h2>Config</h2>{"".join(parts)}</section>'


def _script_data(page: Page) -> str:
    """Thumbnail sources and full-image links as JSON; `<` escaped so no text can close the script."""
    data = {"src": [p.src for p in page.pictures], "link": [p.link for p in page.pictures]}
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def render(page: Page) -> str:
    """The whole report.html."""
    sections = [_run(page), _metrics(page), _labels(page), _synsets(page), _hierarchy(page), _skipped(page),
                _config(page)]
    links = [("run", "Run"), ("metrics", "Metrics"), ("labels-section", "Labels"), ("vocabulary", "Vocabulary"),
             ("hierarchy", "Hierarchy"), ("skipped", "Skipped"), ("config", "Config")]
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links if a != "metrics" or page.metrics is not None)
    script = _asset("report.js")
    # Only this exact script may run (its hash), so a label or file name that escaped its escaping could
    # never become a script; the JSON block below is data (type application/json), never executed.
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = ("default-src 'none'; img-src data: file: 'self'; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{digest}'")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>llm2labels · {_e(page.title)}</title><style>{_asset('report.css')}</style></head><body>"
            f'<header><h1>llm2labels report <small>{_e(page.title)}</small></h1><nav>{nav}</nav></header>'
            f'<main>{"".join(sections)}</main>'
            f'<script id="report-data" type="application/json">{_script_data(page)}</script>'
            f"<script>{script}</script></body></html>\n")
