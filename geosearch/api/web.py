"""The web map: one page at `/map` (MapLibre GL JS, vendored) over the search API of the same mount.

Contract:
- `GET {mount}/map` returns the page (HTML). Every URL in it is relative to the page, and the page's
  scripts derive the API's URLs from the page's own address, so the map works under any mount path
  and behind a proxy that strips a prefix. `{mount}/map/` redirects to `{mount}/map` (relative URLs
  resolve against the last path segment) keeping the query string.
- `GET {mount}/map/static/{file}` serves the page's assets from the `geosearch/web` package folder:
  `map.js` (entry ES module) and its modules, `map.css`, and `maplibre-gl.js`/`maplibre-gl.css`
  (see `geosearch/web/VENDORED.md`). Nothing is loaded from another host.
- The page reads a JSON element `#geosearch-config` that tells which optional endpoints this app
  serves (`sceneTiles`: `/scenes/{id}/tilejson.json` imagery; `captionTiles`: `/tiles/tilejson.json`
  caption vector tiles), so it never requests a route that does not exist: without caption tiles it
  draws the overlay from `GET /captions` instead, without scene tiles it shows scene outlines only.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from litestar import MediaType, Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from geosearch.api.security import ApiPolicy, router_options

WEB_DIR = Path(str(files("geosearch") / "web"))
"""The page's folder, installed as package data (`geosearch.web`)."""

CONFIG_PLACEHOLDER = "__GEOSEARCH_CONFIG__"
"""Replaced in `index.html` by the page's JSON config."""


def _prefix(path: str) -> str:
    """The mount path as a route prefix: '' for '/', '/geo' for '/geo/'."""
    return "/" + path.strip("/") if path.strip("/") else ""


def endpoint_flags(routes: list[Any], prefix: str) -> dict[str, bool]:
    """Which optional tile endpoints the app serves under `prefix`, from its route table."""
    paths = {str(getattr(route, "path", "")) for route in routes}
    scene_tilejson = re.compile(rf"^{re.escape(prefix)}/scenes/\{{[^}}]+\}}/tilejson\.json$")
    return {
        "sceneTiles": any(scene_tilejson.match(p) for p in paths),
        "captionTiles": f"{prefix}/tiles/tilejson.json" in paths,
    }


def render_page(flags: dict[str, bool]) -> str:
    """`index.html` with its config element filled in (JSON escaped for an HTML script element)."""
    html = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    config = json.dumps(flags, sort_keys=True).replace("<", "\\u003c")
    return html.replace(CONFIG_PLACEHOLDER, config)


def make_map_router(path: str = "/", policy: ApiPolicy | None = None) -> Router:
    """A Router serving `/map` and `/map/static/*` under `path` (the same path as the API's router)."""
    prefix = _prefix(path)

    @get("/map", include_in_schema=False, sync_to_thread=False, name="geosearch_map")
    def map_page(request: Request[Any, Any, Any]) -> Response[str] | Redirect:
        """The web map page (Litestar routes `/map/` here too: its raw path tells them apart)."""
        raw_path = bytes(request.scope.get("raw_path") or b"").split(b"?", 1)[0]
        if raw_path.endswith(b"/"):
            query = request.url.query
            return Redirect(path="../map" + (f"?{query}" if query else ""), status_code=308)
        page = render_page(endpoint_flags(request.app.routes, prefix))
        return Response(page, media_type=MediaType.HTML, headers={"Cache-Control": "no-cache"})

    static = create_static_files_router(
        path="/map/static",
        directories=[WEB_DIR],
        name="geosearch_map_static",
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
    )
    options = router_options(policy)
    del options["dependencies"]  # the page runs no model: no worker
    return Router(path=path or "/", route_handlers=[map_page, static], include_in_schema=False, **options)


__all__ = ["WEB_DIR", "endpoint_flags", "make_map_router", "render_page"]
