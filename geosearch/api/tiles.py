"""Web map tile routes as a Litestar `Router` factory (mounted beside `routes.make_router`, same path).

    GET /tiles/{z}/{x}/{y}.mvt               chip footprints (layer "chips"); ?q= for a query's hits
    GET /tiles/tilejson.json                 TileJSON 3.0.0 of that layer (?q= carried into its tiles URL)
    GET /scenes/{id}/tiles/{z}/{x}/{y}.png   a scene's imagery, rendered as ingested, transparent outside
    GET /scenes/{id}/tilejson.json           TileJSON of that imagery

Tiles are WebMercatorQuad (z 0..24). A vector tile without features is 200 with an empty body (the
empty MVT, which MapLibre draws as nothing). Malformed or out-of-grid z/x/y are 400 with the reason; a
scene tile that does not touch the scene, or an unknown scene, is 404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, Router, get
from litestar.di import Provide
from litestar.params import Parameter

from geosearch.api.routes import provide_engine
from geosearch.engine import Engine
from geosearch.maptiles import (
    MAX_LIMIT,
    TileJSON,
    chip_tile,
    chips_document,
    parse_tile,
    scene_document,
    scene_tile_png,
    tile_limit,
)
from geosearch.query import parse_text

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
PNG_MEDIA_TYPE = "image/png"
Q_DOC = "text query: the layer holds its hits inside the tile, with score, relevance and rank; blank = no query"
LIMIT_DOC = f"most features per tile (default 1000, at most {MAX_LIMIT}; more is a 400)"


def _query_text(q: str | None) -> str | None:
    return parse_text(q) if q is not None and q.strip() else None


def _sibling_url(request: Request[Any, Any, Any], route: str, tail: str, params: dict[str, str], **path: str) -> str:
    """Absolute URL of the route named `route` with its last segment replaced by `tail` (which keeps
    its `{z}/{x}/{y}` braces), plus `params` as the query string."""
    base = str(request.url_for(route, **path)).rsplit("/", 1)[0]
    return f"{base}/{tail}" + (f"?{urlencode(params)}" if params else "")


@get("/tiles/{z:str}/{x:str}/{y_file:str}", name="geosearch_chip_tile", sync_to_thread=True, media_type=MVT_MEDIA_TYPE)
def chips_mvt(
    engine: Engine,
    z: str,
    x: str,
    y_file: str,
    q: str | None = Parameter(default=None, description=Q_DOC),
    limit: int | None = Parameter(default=None, description=LIMIT_DOC),
) -> Response[bytes]:
    """Mapbox Vector Tile, layer `chips`: every chip footprint intersecting the tile (id, scene, caption, gsd,
    datetime), or with `q` the query's best hits inside it, ranked by score."""
    tile = parse_tile(z, x, y_file, ".mvt")
    body = chip_tile(engine, tile, q=_query_text(q), limit=tile_limit(limit))
    return Response(body, media_type=MVT_MEDIA_TYPE)


@get("/tiles/tilejson.json", name="geosearch_chips_tilejson", sync_to_thread=True)
def chips_tilejson(
    engine: Engine,
    request: Request[Any, Any, Any],
    q: str | None = Parameter(default=None, description=Q_DOC),
    limit: int | None = Parameter(default=None, description=LIMIT_DOC),
) -> TileJSON:
    """TileJSON 3.0.0 of the chip layer: absolute tiles URL (carrying q and limit), bounds of the ingested scenes."""
    text = _query_text(q)
    params = {"q": text} if text is not None else {}
    if limit is not None:
        params["limit"] = str(tile_limit(limit))
    return chips_document(engine, _sibling_url(request, "geosearch_chips_tilejson", "{z}/{x}/{y}.mvt", params), text)


@get(
    "/scenes/{scene_id:str}/tiles/{z:str}/{x:str}/{y_file:str}",
    name="geosearch_scene_tile",
    sync_to_thread=True,
    media_type=PNG_MEDIA_TYPE,
)
def scene_png(engine: Engine, scene_id: str, z: str, x: str, y_file: str) -> Response[bytes]:
    """256-px RGBA PNG of an ingested scene with the band selection and stretch of ingest; transparent
    outside the scene and where it has no data; 404 when the tile does not touch the scene."""
    tile = parse_tile(z, x, y_file, ".png")
    return Response(scene_tile_png(engine, scene_id, tile), media_type=PNG_MEDIA_TYPE)


@get("/scenes/{scene_id:str}/tilejson.json", name="geosearch_scene_tilejson", sync_to_thread=True)
def scene_tilejson(engine: Engine, request: Request[Any, Any, Any], scene_id: str) -> TileJSON:
    """TileJSON 3.0.0 of a scene's imagery: bounds, and min/max zoom from its size and native resolution."""
    url = _sibling_url(request, "geosearch_scene_tilejson", "tiles/{z}/{x}/{y}.png", {}, scene_id=scene_id)
    return scene_document(engine, scene_id, url)


def make_tiles_router(path: str = "/") -> Router:
    """The tile routes under `path` (the API's mount path)."""
    return Router(
        path=path or "/",
        route_handlers=[chips_mvt, chips_tilejson, scene_png, scene_tilejson],
        dependencies={"engine": Provide(provide_engine, sync_to_thread=False)},
        tags=["tiles"],
    )


__all__ = ["MVT_MEDIA_TYPE", "make_tiles_router"]
