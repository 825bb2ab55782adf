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

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, Router, get
from litestar.di import Provide
from litestar.params import Parameter

from geosearch.api.errors import error_responses
from geosearch.api.limits import SceneIdParam, Worker, check_scene_id, optional_text
from geosearch.api.routes import provide_engine
from geosearch.api.security import ApiPolicy, router_options
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

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
PNG_MEDIA_TYPE = "image/png"
Q_DOC = "text query: the layer holds its hits inside the tile, with score, relevance and rank; blank = no query"
ZParam = Annotated[str, Parameter(description="zoom level, 0 to 24", schema_extra={"pattern": r"^\d{1,2}$"})]
XParam = Annotated[str, Parameter(description="tile column", schema_extra={"pattern": r"^\d+$"})]
LIMIT_DOC = f"most features per tile (default 1000, at most {MAX_LIMIT}; more is a 400)"


def _sibling_url(request: Request[Any, Any, Any], route: str, tail: str, params: dict[str, str], **path: str) -> str:
    """Absolute URL of the route named `route` with its last segment replaced by `tail` (which keeps
    its `{z}/{x}/{y}` braces), plus `params` as the query string."""
    base = str(request.url_for(route, **path)).rsplit("/", 1)[0]
    return f"{base}/{tail}" + (f"?{urlencode(params)}" if params else "")


@get(
    "/tiles/{z:str}/{x:str}/{y_file:str}",
    name="geosearch_chip_tile",
    media_type=MVT_MEDIA_TYPE,
    responses=error_responses(400, 404, 429, 503),
)
async def chips_mvt(
    engine: Engine,
    worker: Worker,
    z: ZParam,
    x: XParam,
    y_file: Annotated[str, Parameter(description="tile row: <y>.mvt", schema_extra={"pattern": r"^\d+\.mvt$"})],
    q: str | None = Parameter(default=None, description=Q_DOC),
    limit: int | None = Parameter(default=None, description=LIMIT_DOC),
) -> Response[bytes]:
    """Mapbox Vector Tile, layer `chips`: every chip footprint intersecting the tile (id, scene, caption, gsd,
    datetime), or with `q` the query's best hits inside it, ranked by score."""
    tile = parse_tile(z, x, y_file, ".mvt")
    text, most = optional_text(q), tile_limit(limit)
    body = await worker.run(lambda: chip_tile(engine, tile, q=text, limit=most))
    return Response(body, media_type=MVT_MEDIA_TYPE)


@get(
    "/tiles/tilejson.json",
    name="geosearch_chips_tilejson",
    sync_to_thread=True,
    responses=error_responses(400, 429, 503),
)
def chips_tilejson(
    engine: Engine,
    request: Request[Any, Any, Any],
    q: str | None = Parameter(default=None, description=Q_DOC),
    limit: int | None = Parameter(default=None, description=LIMIT_DOC),
) -> TileJSON:
    """TileJSON 3.0.0 of the chip layer: absolute tiles URL (carrying q and limit), bounds of the ingested scenes."""
    text = optional_text(q)
    params = {"q": text} if text is not None else {}
    if limit is not None:
        params["limit"] = str(tile_limit(limit))
    return chips_document(engine, _sibling_url(request, "geosearch_chips_tilejson", "{z}/{x}/{y}.mvt", params), text)


@get(
    "/scenes/{scene_id:str}/tiles/{z:str}/{x:str}/{y_file:str}",
    name="geosearch_scene_tile",
    media_type=PNG_MEDIA_TYPE,
    responses=error_responses(400, 404, 422, 429, 503),
)
async def scene_png(
    engine: Engine,
    worker: Worker,
    scene_id: SceneIdParam,
    z: ZParam,
    x: XParam,
    y_file: Annotated[str, Parameter(description="tile row: <y>.png", schema_extra={"pattern": r"^\d+\.png$"})],
) -> Response[bytes]:
    """256-px RGBA PNG of an ingested scene with the band selection and stretch of ingest; transparent
    outside the scene and where it has no data; 404 when the tile does not touch the scene. The file read
    is the one the scene's record names; the request names only the scene id."""
    check_scene_id(scene_id)
    tile = parse_tile(z, x, y_file, ".png")
    png = await worker.run(scene_tile_png, engine, scene_id, tile)
    return Response(png, media_type=PNG_MEDIA_TYPE)


@get(
    "/scenes/{scene_id:str}/tilejson.json",
    name="geosearch_scene_tilejson",
    sync_to_thread=True,
    responses=error_responses(404, 422, 429, 503),
)
def scene_tilejson(engine: Engine, request: Request[Any, Any, Any], scene_id: SceneIdParam) -> TileJSON:
    """TileJSON 3.0.0 of a scene's imagery: bounds, and min/max zoom from its size and native resolution."""
    check_scene_id(scene_id)
    url = _sibling_url(request, "geosearch_scene_tilejson", "tiles/{z}/{x}/{y}.png", {}, scene_id=scene_id)
    return scene_document(engine, scene_id, url)


def make_tiles_router(path: str = "/", policy: ApiPolicy | None = None, worker: Worker | None = None) -> Router:
    """The tile routes under `path` (the API's mount path)."""
    options = router_options(policy, worker)
    options["dependencies"]["engine"] = Provide(provide_engine, sync_to_thread=False)
    return Router(
        path=path or "/",
        route_handlers=[chips_mvt, chips_tilejson, scene_png, scene_tilejson],
        tags=["tiles"],
        **options,
    )


__all__ = ["MVT_MEDIA_TYPE", "make_tiles_router"]
