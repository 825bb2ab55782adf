"""The search API as a Litestar `Router` factory, so it mounts at any path in any app."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.spec import Example
from litestar.params import Body

from geosearch.api.errors import error_responses
from geosearch.api.limits import ChipFileParam, SceneIdParam, Worker, check_scene_id
from geosearch.api.params import captions_query, search_query, search_request_query
from geosearch.api.security import READ_ONLY, ApiPolicy, router_options
from geosearch.engine import Engine
from geosearch.errors import InvalidInput, NotFound
from geosearch.geojson import feature_collection
from geosearch.schemas import (
    CaptionsQuery,
    FeatureCollection,
    Link,
    SceneInfo,
    SceneList,
    SearchQuery,
    SearchRequest,
)

GEOJSON = "application/geo+json"
ENGINE_STATE_KEY = "geosearch_engine"


def provide_engine(state: State) -> Engine:
    engine = state.get(ENGINE_STATE_KEY)
    if engine is None:
        raise NotFound("the geosearch engine is not started")
    return engine  # type: ignore[no-any-return]


def _chip_url(request: Request[Any, Any, Any]) -> Any:
    return lambda chip_id: request.url_for("geosearch_chip_png", chip_file=f"{chip_id}.png")


class DeletedScene(msgspec.Struct):
    """What `DELETE /scenes/{id}` removed."""

    scene: str
    deleted_chips: int


SEARCH_BODY_DOC = "a search: exactly one of q (text, 1 to 512 characters) or like (a chip id), and optional filters"
SEARCH_BODY_EXAMPLES = [
    Example(summary="text", value={"q": "a road through the mountains", "limit": 5}),
    Example(
        summary="text in a box and a time interval",
        value={"q": "oil tanks", "bbox": [-78.96, -8.59, 128.66, 47.1], "datetime": "2019-06-01/..", "gsd": "0.5/2"},
    ),
    Example(summary="more like this", value={"like": "00000000-0000-0000-0000-000000000000", "limit": 5}),
]


def _geojson(collection: FeatureCollection) -> Response[FeatureCollection]:
    return Response(collection, media_type=GEOJSON)


@get(
    "/search",
    media_type=GEOJSON,
    dependencies={"search": Provide(search_query, sync_to_thread=False)},
    responses=error_responses(400, 404, 429, 503),
)
async def search_get(
    engine: Engine, worker: Worker, search: SearchQuery, request: Request[Any, Any, Any]
) -> Response[FeatureCollection]:
    """Chips ranked by similarity to the text `q`, optionally inside `bbox`."""
    hits = await worker.run(engine.search, search)
    return _geojson(feature_collection(hits, _chip_url(request)))


@post(
    "/search",
    status_code=200,
    media_type=GEOJSON,
    opt={READ_ONLY: True},
    responses=error_responses(400, 404, 413, 429, 503),
)
async def search_post(
    engine: Engine,
    worker: Worker,
    data: Annotated[SearchRequest, Body(description=SEARCH_BODY_DOC, examples=SEARCH_BODY_EXAMPLES)],
    request: Request[Any, Any, Any],
) -> Response[FeatureCollection]:
    """Same as GET, from a JSON body; also `like: <chip id>` for "more like this"."""
    query = search_request_query(data)
    hits = await worker.run(engine.search, query)
    return _geojson(feature_collection(hits, _chip_url(request)))


@get(
    "/captions",
    sync_to_thread=True,
    media_type=GEOJSON,
    dependencies={"overlay": Provide(captions_query, sync_to_thread=False)},
    responses=error_responses(400, 429, 503),
)
def captions(engine: Engine, overlay: CaptionsQuery, request: Request[Any, Any, Any]) -> Response[FeatureCollection]:
    """Caption overlay: chip footprints with their captions, paged with a `next` link."""
    hits, next_offset = engine.page_chips(overlay)
    links = []
    if next_offset is not None:
        params = dict(request.query_params)
        params["offset"] = next_offset
        params["limit"] = str(overlay.limit)
        url = request.url.with_replacements(query=_encode(params))
        links.append(Link(href=str(url), rel="next"))
    return _geojson(feature_collection(hits, _chip_url(request), links))


@get(
    "/chips/{chip_file:str}",
    name="geosearch_chip_png",
    media_type="image/png",
    responses=error_responses(404, 422, 429, 503),
)
async def chip_png(engine: Engine, worker: Worker, chip_file: ChipFileParam) -> Response[bytes]:
    """The chip re-rendered from its source scene (as recorded in the store: the request names only the
    chip id, never a file) with the band selection and stretch of ingest."""
    if not chip_file.endswith(".png"):
        raise NotFound(f"chips are served as /chips/<id>.png, not {chip_file!r}")
    png = await worker.run(engine.chip_png, chip_file.removesuffix(".png"))
    return Response(png, media_type="image/png")


@get("/scenes", sync_to_thread=True, responses=error_responses(429, 503))
def list_scenes(engine: Engine) -> SceneList:
    return SceneList(scenes=engine.scenes())


@get("/scenes/{scene_id:str}", sync_to_thread=True, responses=error_responses(404, 429, 503))
def get_scene(engine: Engine, scene_id: SceneIdParam) -> SceneInfo:
    return engine.scene(check_scene_id(scene_id))


@delete("/scenes/{scene_id:str}", sync_to_thread=True, status_code=200, responses=error_responses(401, 404, 429, 503))
def delete_scene(engine: Engine, scene_id: SceneIdParam) -> DeletedScene:
    """Remove a scene and all its chips (with the API key when the server has one)."""
    return DeletedScene(scene=scene_id, deleted_chips=engine.delete_scene(check_scene_id(scene_id)))


@get("/health", sync_to_thread=True, responses=error_responses(429, 503))
def health(engine: Engine) -> dict[str, object]:
    """Model, backend, chip count, and how the model runs here (CPU capability, threads, runtime, precision)."""
    from geosearch.plugins.cpu import runtime_info

    return {**engine.health(), "runtime": runtime_info(engine.embedder)}


def _encode(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def make_router(path: str = "/", policy: ApiPolicy | None = None, worker: Worker | None = None) -> Router:
    options = router_options(policy, worker)
    options["dependencies"]["engine"] = Provide(provide_engine, sync_to_thread=False)
    return Router(
        path=path or "/",
        route_handlers=[search_get, search_post, captions, chip_png, list_scenes, get_scene, delete_scene, health],
        tags=["geosearch"],
        **options,
    )


__all__ = ["ENGINE_STATE_KEY", "InvalidInput", "make_router"]
