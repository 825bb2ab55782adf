"""The search API as a Litestar `Router` factory, so it mounts at any path in any app."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide

from geosearch.api.params import captions_query, search_query, search_request_query
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


def _geojson(collection: FeatureCollection) -> Response[FeatureCollection]:
    return Response(collection, media_type=GEOJSON)


@get("/search", sync_to_thread=True, dependencies={"search": Provide(search_query, sync_to_thread=False)})
def search_get(engine: Engine, search: SearchQuery, request: Request[Any, Any, Any]) -> Response[FeatureCollection]:
    """Chips ranked by similarity to the text `q`, optionally inside `bbox`."""
    return _geojson(feature_collection(engine.search(search), _chip_url(request)))


@post("/search", sync_to_thread=True, status_code=200)
def search_post(engine: Engine, data: SearchRequest, request: Request[Any, Any, Any]) -> Response[FeatureCollection]:
    """Same as GET, from a JSON body; also `like: <chip id>` for "more like this"."""
    query = search_request_query(data)
    return _geojson(feature_collection(engine.search(query), _chip_url(request)))


@get("/captions", sync_to_thread=True, dependencies={"overlay": Provide(captions_query, sync_to_thread=False)})
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


@get("/chips/{chip_file:str}", name="geosearch_chip_png", sync_to_thread=True, media_type="image/png")
def chip_png(engine: Engine, chip_file: str) -> Response[bytes]:
    """The chip re-rendered from its source scene with the band selection and stretch of ingest."""
    if not chip_file.endswith(".png"):
        raise NotFound(f"chips are served as /chips/<id>.png, not {chip_file!r}")
    return Response(engine.chip_png(chip_file.removesuffix(".png")), media_type="image/png")


@get("/scenes", sync_to_thread=True)
def list_scenes(engine: Engine) -> SceneList:
    return SceneList(scenes=engine.scenes())


@get("/scenes/{scene_id:str}", sync_to_thread=True)
def get_scene(engine: Engine, scene_id: str) -> SceneInfo:
    return engine.scene(scene_id)


@delete("/scenes/{scene_id:str}", sync_to_thread=True, status_code=200)
def delete_scene(engine: Engine, scene_id: str) -> dict[str, object]:
    """Remove a scene and all its chips."""
    return {"scene": scene_id, "deleted_chips": engine.delete_scene(scene_id)}


@get("/health", sync_to_thread=True)
def health(engine: Engine) -> dict[str, object]:
    """Model, backend, chip count, and how the model runs here (CPU capability, threads, runtime, precision)."""
    from geosearch.plugins.cpu import runtime_info

    return {**engine.health(), "runtime": runtime_info(engine.embedder)}


def _encode(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def make_router(path: str = "/") -> Router:
    return Router(
        path=path or "/",
        route_handlers=[search_get, search_post, captions, chip_png, list_scenes, get_scene, delete_scene, health],
        dependencies={"engine": Provide(provide_engine, sync_to_thread=False)},
        tags=["geosearch"],
    )


__all__ = ["ENGINE_STATE_KEY", "InvalidInput", "make_router"]
