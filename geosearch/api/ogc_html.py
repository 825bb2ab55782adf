"""Server-side HTML of the OGC API – Features resources: plain HTML 5, no JavaScript.

Each page is rendered from the resource's JSON document (`ogc_docs`), so it shows the same data and
every link of the document as an ``<a>`` element (/req/html/content). Every value is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape
from typing import Any

Doc = dict[str, Any]

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}code,pre{font-size:13px}nav a{margin-right:.3rem}
form{display:flex;flex-wrap:wrap;gap:.5rem;margin:1rem 0;align-items:end}label{display:flex;flex-direction:column;
font-size:12px}.paging a{margin-right:1rem;font-weight:bold}img{background:#eee}details pre{max-width:30rem;
overflow:auto}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _a(href: str, text: object) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def _page(title: str, crumbs: Iterable[tuple[str, str]], body: str, links: list[Doc]) -> str:
    nav = " / ".join(_a(href, text) for text, href in crumbs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><nav>{nav}</nav><h1>{_e(title)}</h1>{body}"
        f"<h2>Links</h2>{_links_table(links)}</body></html>\n"
    )


def _links_table(links: list[Doc]) -> str:
    rows = "".join(
        f"<tr><td>{_e(ln['rel'])}</td><td>{_e(ln['type'])}</td>"
        f"<td>{_a(ln['href'], ln.get('title') or ln['href'])}</td></tr>"
        for ln in links
    )
    return f"<table><tr><th>rel</th><th>type</th><th>link</th></tr>{rows}</table>"


def _crumbs(home: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("geosearch", f"{home}?f=html"), *extra]


def landing_html(doc: Doc, home: str) -> str:
    body = f"<p>{_e(doc['description'])}</p>"
    return _page(doc["title"], _crumbs(home), body, doc["links"])


def conformance_html(doc: Doc, links: list[Doc], home: str) -> str:
    items = "".join(f"<li><code>{_e(uri)}</code></li>" for uri in doc["conformsTo"])
    return _page("Conformance", _crumbs(home), f"<ul>{items}</ul>", links)


def _collection_body(c: Doc) -> str:
    spatial = c["extent"]["spatial"]["bbox"]
    temporal = c["extent"]["temporal"]["interval"][0]
    items = next(ln["href"] for ln in c["links"] if ln["rel"] == "items" and ln["type"] == "text/html")
    return (
        f"<p>{_e(c['description'])}</p><table>"
        f"<tr><th>id</th><td>{_e(c['id'])}</td></tr><tr><th>item type</th><td>{_e(c['itemType'])}</td></tr>"
        f"<tr><th>CRS</th><td>{_e(', '.join(c['crs']))}</td></tr>"
        f"<tr><th>spatial extent (CRS84)</th><td>{'<br>'.join(_e(b) for b in spatial)}</td></tr>"
        f"<tr><th>temporal extent</th><td>{_e(temporal[0] or '..')} / {_e(temporal[1] or '..')}</td></tr>"
        f"<tr><th>features</th><td>{_a(items, 'browse the chips')}</td></tr></table>"
    )


def collections_html(doc: Doc, home: str) -> str:
    body = "".join(f"<h2>{_a(c['links'][1]['href'], c['title'])}</h2>{_collection_body(c)}" for c in doc["collections"])
    return _page("Collections", _crumbs(home), body, doc["links"])


def collection_html(doc: Doc, home: str) -> str:
    crumbs = _crumbs(home, ("collections", f"{home}/collections?f=html"))
    return _page(doc["title"], crumbs, _collection_body(doc), doc["links"])


def queryables_html(doc: Doc, links: list[Doc], home: str, title: str = "Queryables of chips") -> str:
    """A JSON Schema (queryables, or the feature schema's properties) as a table."""
    properties = doc["properties"].get("properties", {}).get("properties") or doc["properties"]
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{_e(p.get('title'))}</td>"
        f"<td>{_e(p.get('format') or p.get('type'))}</td><td>{_e(p.get('description'))}</td></tr>"
        for name, p in properties.items()
    )
    body = f"<table><tr><th>name</th><th>title</th><th>type</th><th>notes</th></tr>{rows}</table>"
    crumbs = _crumbs(home, ("chips", f"{home}/collections/chips?f=html"))
    return _page(title, crumbs, body, links)


def _bounds(geometry: Doc) -> str:
    coords = [pt for ring in geometry.get("coordinates", []) for pt in ring]
    if not coords:
        return ""
    xs, ys = [p[0] for p in coords], [p[1] for p in coords]
    return f"{min(xs):.5f}, {min(ys):.5f}, {max(xs):.5f}, {max(ys):.5f}"


def _geometry_cell(geometry: Doc) -> str:
    return f"{_e(_bounds(geometry))}<details><summary>GeoJSON</summary><pre>{_e(json.dumps(geometry))}</pre></details>"


def _number(value: object) -> object:
    return f"{value:.4g}" if isinstance(value, float) else value


def _score(p: Doc) -> str:
    if p.get("score") is None:
        return ""
    relevance = "" if p.get("relevance") is None else f" (relevance {p['relevance']:.2f})"
    return f"{p['score']:.3f}{relevance}"


def _feature_row(feature: Doc, item_href: str) -> str:
    p = feature["properties"]
    thumb = (
        f'<img src="{_e(p["chip_url"])}" width="96" height="96" alt="chip" loading="lazy">' if p.get("chip_url") else ""
    )
    return (
        f"<tr><td>{thumb}</td><td>{_a(item_href, feature['id'])}</td><td>{_e(p.get('caption'))}</td>"
        f"<td><code>{_e(p.get('scene'))}</code></td><td>{_e(p.get('datetime'))}</td>"
        f"<td>{_e(_number(p.get('gsd')))}</td><td>{_score(p)}</td><td>{_geometry_cell(feature['geometry'])}</td></tr>"
    )


def _search_form(action: str, values: dict[str, str]) -> str:
    fields = [("q", "text to rank by"), ("bbox", "minx,miny,maxx,maxy"), ("datetime", "instant or a/b")]
    fields += [("scene", "scene id"), ("gsd", "min/max m/px")]
    inputs = "".join(
        f'<label>{name}<input name="{name}" value="{_e(values.get(name, ""))}" placeholder="{_e(hint)}"></label>'
        for name, hint in fields
    )
    limit = _e(values.get("limit") or "10")
    inputs += f'<label>limit<input name="limit" type="number" min="1" max="10000" value="{limit}" required></label>'
    return (
        f'<form method="get" action="{_e(action)}">{inputs}<input type="hidden" name="f" value="html">'
        '<button type="submit">Search</button></form>'
    )


def items_html(doc: Doc, *, home: str, items_url: str, values: dict[str, str]) -> str:
    """A page of chips: a search form, the features as a table and the paging links."""
    matched = f" of {doc['numberMatched']}" if "numberMatched" in doc else ""
    paging = " ".join(
        _a(ln["href"], "next page →" if ln["rel"] == "next" else "← previous page")
        for ln in doc["links"]
        if ln["rel"] in ("prev", "next")
    )
    rows = "".join(_feature_row(f, f"{items_url}/{f['id']}?f=html") for f in doc["features"])
    head = "".join(
        f"<th>{h}</th>" for h in ("chip", "id", "caption", "scene", "datetime", "gsd (m/px)", "score", "footprint")
    )
    body = (
        f"{_search_form(items_url, values)}<p>{doc['numberReturned']} features{matched}, "
        f"generated {_e(doc['timeStamp'])}</p><p class=paging>{paging}</p>"
        f"<table><tr>{head}</tr>{rows}</table><p class=paging>{paging}</p>"
    )
    crumbs = _crumbs(home, ("chips", items_url.rsplit("/", 1)[0] + "?f=html"))
    return _page("Chips", crumbs, body, doc["links"])


def item_html(doc: Doc, home: str) -> str:
    p = doc["properties"]
    image = f'<p><img src="{_e(p["chip_url"])}" width="224" height="224" alt="chip"></p>' if p.get("chip_url") else ""
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(json.dumps(v) if isinstance(v, dict) else v)}</td></tr>" for k, v in p.items()
    )
    body = f"{image}<table>{rows}<tr><th>geometry</th><td>{_geometry_cell(doc['geometry'])}</td></tr></table>"
    crumbs = _crumbs(
        home, ("chips", f"{home}/collections/chips?f=html"), ("items", f"{home}/collections/chips/items?f=html")
    )
    return _page(f"Chip {doc['id']}", crumbs, body, doc["links"])
