"""OGC API – Features (Part 1 Core, GeoJSON, HTML; Part 3 Queryables) as a Litestar `Router` factory.

    app_config.route_handlers.append(make_ogc_router("/ogc"))

One collection, ``chips``: every chip footprint with its caption (the caption layer). Its items take the
standard ``limit`` (default 10, 1 to 10000; outside → 400), ``bbox`` (CRS84; west > east crosses the
antimeridian) and ``datetime``, and paging by ``next`` links; plus ``q`` (rank the chips by similarity to
a text, `Engine.search`), ``scene`` and ``gsd``. Any other query parameter is a 400, as Part 1 requires
(/req/core/query-param-unknown). JSON resources are ``application/json``, features
``application/geo+json``; ``Accept: text/html`` or ``?f=html`` gives an HTML page. An unknown collection
or feature id is a 404. The engine comes from the app state, as for the search routes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, Router, get
from litestar.di import Provide
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema

from geosearch.api import ogc_html as html
from geosearch.api.errors import error_responses
from geosearch.api.limits import Worker
from geosearch.api.ogc_docs import (
    COLLECTION_ID,
    GEOJSON,
    HTML,
    JSON,
    REL_QUERYABLES,
    SCHEMA_JSON,
    Doc,
    OgcUrls,
    collection_doc,
    collections_doc,
    conformance_doc,
    feature_doc,
    items_doc,
    landing_doc,
    link,
    queryables_doc,
    schema_doc,
    self_links,
)
from geosearch.api.ogc_items import ItemsPage, ItemsQuery, select_items
from geosearch.api.ogc_params import FORMAT_PARAMS, ITEMS_PARAMS, Format, format_dependency, items_query
from geosearch.api.routes import provide_engine
from geosearch.api.security import ApiPolicy, router_options
from geosearch.engine import Engine
from geosearch.errors import NotFound


def also_html(media_type: str) -> type[Operation]:
    """An OpenAPI operation class whose 200 response is `media_type` (any JSON document) or ``text/html``:
    the two representations a route negotiates (``f`` or Accept), so that both are declared."""

    @dataclass
    class NegotiatedOperation(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse):
                ok.content = {
                    media_type: OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT)),
                    HTML: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                }

    return NegotiatedOperation


def _doc(media_type: str, *errors: int) -> dict[str, Any]:
    """Decorator arguments that document a route: its JSON media type (or HTML) and its error responses."""
    return {
        "media_type": media_type,
        "operation_class": also_html(media_type),
        "responses": error_responses(400, *errors, 429, 503),
    }


_FORMAT = {"fmt": Provide(format_dependency(FORMAT_PARAMS), sync_to_thread=False)}
_ITEMS = {
    "fmt": Provide(format_dependency(ITEMS_PARAMS), sync_to_thread=False),
    "items_query": Provide(items_query, sync_to_thread=False),
}


def _respond(fmt: Format, doc: Doc, media_type: str, page: Callable[[], str], **headers: str) -> Response[Any]:
    if fmt == "html":
        return Response(page(), media_type=HTML, headers=headers)
    return Response(doc, media_type=media_type, headers=headers)


def _check_collection(collection_id: str) -> None:
    if collection_id != COLLECTION_ID:
        raise NotFound(f"no collection {collection_id!r}; the only collection is {COLLECTION_ID!r}")


@get("/", name="ogc_landing", sync_to_thread=False, dependencies=_FORMAT, **_doc(JSON))
def landing(request: Request[Any, Any, Any], fmt: Format) -> Response[Any]:
    """Landing page: links to the API definition, the conformance classes and the collections."""
    urls = OgcUrls(request)
    doc = landing_doc(urls)
    return _respond(fmt, doc, JSON, lambda: html.landing_html(doc, urls.landing))


@get("/conformance", name="ogc_conformance", sync_to_thread=False, dependencies=_FORMAT, **_doc(JSON))
def conformance(request: Request[Any, Any, Any], fmt: Format) -> Response[Any]:
    """The conformance classes this API implements."""
    urls = OgcUrls(request)
    doc = {**conformance_doc(), "links": self_links(urls, JSON, "Conformance")}
    return _respond(fmt, doc, JSON, lambda: html.conformance_html(doc, doc["links"], urls.landing))


@get("/collections", name="ogc_collections", sync_to_thread=True, dependencies=_FORMAT, **_doc(JSON))
def collections(engine: Engine, request: Request[Any, Any, Any], fmt: Format) -> Response[Any]:
    """The feature collections: one, ``chips``, with the extent of every ingested scene."""
    urls = OgcUrls(request)
    doc = collections_doc(urls, engine.scenes())
    return _respond(fmt, doc, JSON, lambda: html.collections_html(doc, urls.landing))


@get(
    "/collections/{collectionId:str}",
    name="ogc_collection",
    sync_to_thread=True,
    dependencies=_FORMAT,
    **_doc(JSON, 404),
)
def collection(engine: Engine, collectionId: str, request: Request[Any, Any, Any], fmt: Format) -> Response[Any]:
    """The ``chips`` collection: extent, CRS and links to its items and queryables."""
    _check_collection(collectionId)
    urls = OgcUrls(request)
    doc = collection_doc(urls, engine.scenes())
    return _respond(fmt, doc, JSON, lambda: html.collection_html(doc, urls.landing))


@get(
    "/collections/{collectionId:str}/queryables",
    name="ogc_queryables",
    sync_to_thread=False,
    dependencies=_FORMAT,
    **_doc(SCHEMA_JSON, 404),
)
def queryables(collectionId: str, request: Request[Any, Any, Any], fmt: Format) -> Response[Any]:
    """JSON Schema of the properties the items can be selected or ranked on."""
    _check_collection(collectionId)
    urls = OgcUrls(request)
    doc = queryables_doc(urls)
    links = self_links(urls, SCHEMA_JSON, "The queryables")
    return _respond(fmt, {**doc, "links": links}, SCHEMA_JSON, lambda: html.queryables_html(doc, links, urls.landing))


@get(
    "/collections/{collectionId:str}/schema",
    name="ogc_schema",
    sync_to_thread=False,
    dependencies=_FORMAT,
    **_doc(SCHEMA_JSON, 404),
)
def schema(collectionId: str, request: Request[Any, Any, Any], fmt: Format) -> Response[Any]:
    """JSON Schema of the chip features (``describedby`` of the collection)."""
    _check_collection(collectionId)
    urls = OgcUrls(request)
    doc = schema_doc(urls)
    links = self_links(urls, SCHEMA_JSON, "The feature schema")
    return _respond(fmt, doc, SCHEMA_JSON, lambda: html.queryables_html(doc, links, urls.landing, "Schema of chips"))


def _paging_links(urls: OgcUrls, fmt: Format, query: ItemsQuery, page: ItemsPage) -> list[Doc]:
    media_type = HTML if fmt == "html" else GEOJSON
    limit = str(query.limit)
    links = []
    if query.ranked and query.offset not in (None, "0"):
        previous = max(0, int(query.offset or 0) - query.limit)
        links.append(link(urls.this(fmt, offset=str(previous) if previous else None, limit=limit), "prev", media_type))
    if page.next_offset is not None:
        links.append(link(urls.this(fmt, offset=page.next_offset, limit=limit), "next", media_type, "Next page"))
    return links


@get(
    "/collections/{collectionId:str}/items",
    name="ogc_items",
    dependencies=_ITEMS,
    **_doc(GEOJSON, 404),
)
async def get_items(
    engine: Engine,
    worker: Worker,
    collectionId: str,
    items_query: ItemsQuery,
    request: Request[Any, Any, Any],
    fmt: Format,
) -> Response[Any]:
    """A page of chips (footprint, caption, scene, datetime, gsd), filtered by bbox/datetime/scene/gsd,
    ranked by similarity when ``q`` is given; follow the ``next`` link for the following page."""
    _check_collection(collectionId)
    page = await worker.run(select_items, engine, items_query)
    urls = OgcUrls(request)
    doc = items_doc(
        page.hits, urls, number_matched=page.number_matched, paging=_paging_links(urls, fmt, items_query, page)
    )
    values = {k: v for k, v in request.query_params.items() if k != "f"}
    return _respond(
        fmt,
        doc,
        GEOJSON,
        lambda: html.items_html(doc, home=urls.landing, items_url=urls.items, values=values),
        Link=f'<{urls.queryables}>; rel="{REL_QUERYABLES}"; type="{SCHEMA_JSON}"',
    )


@get(
    "/collections/{collectionId:str}/items/{featureId:str}",
    name="ogc_item",
    sync_to_thread=True,
    dependencies=_FORMAT,
    **_doc(GEOJSON, 404),
)
def get_item(
    engine: Engine, collectionId: str, featureId: str, request: Request[Any, Any, Any], fmt: Format
) -> Response[Any]:
    """One chip by id; 404 when there is none."""
    _check_collection(collectionId)
    urls = OgcUrls(request)
    doc = feature_doc(engine.chip(featureId), urls, urls.chip_png())
    return _respond(fmt, doc, GEOJSON, lambda: html.item_html(doc, urls.landing))


def make_ogc_router(path: str = "/ogc", policy: ApiPolicy | None = None, worker: Worker | None = None) -> Router:
    """The OGC API – Features routes under `path` (the landing page is `path` itself)."""
    options = router_options(policy, worker)
    options["dependencies"]["engine"] = Provide(provide_engine, sync_to_thread=False)
    return Router(
        path=path or "/",
        route_handlers=[landing, conformance, collections, collection, queryables, schema, get_items, get_item],
        tags=["OGC API - Features"],
        **options,
    )


__all__ = ["make_ogc_router"]
