"""The JSON documents of the OGC API – Features routes, built as plain dicts.

One function per resource; each takes an `OgcUrls` (absolute URLs of this deployment) so that every
link carries ``rel`` and ``type`` (/req/core/fc-rel-type) and points where the router is mounted. The
HTML pages are rendered from these same documents (`ogc_html`), so both formats carry the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request
from litestar.exceptions import NoRouteMatchFoundException

from geosearch.geojson import chip_feature
from geosearch.schemas import SceneInfo
from geosearch.store import Hit

COLLECTION_ID = "chips"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
GEOJSON = "application/geo+json"
JSON = "application/json"
HTML = "text/html"
SCHEMA_JSON = "application/schema+json"
OPENAPI_JSON = "application/vnd.oai.openapi+json;version=3.1"
REL_QUERYABLES = "http://www.opengis.net/def/rel/ogc/1.0/queryables"

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
]
"""Part 1 Core, GeoJSON and HTML, and Part 3 Queryables. Not OpenAPI 3.0: the app's API definition is
Litestar's OpenAPI 3.1 document (linked as service-desc all the same)."""

Doc = dict[str, Any]


def link(href: str, rel: str, media_type: str, title: str | None = None) -> Doc:
    out: Doc = {"href": href, "rel": rel, "type": media_type}
    if title:
        out["title"] = title
    return out


class OgcUrls:
    """Absolute URLs of one OGC deployment, from the request (routes are looked up by name)."""

    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self.request = request

    def route(self, name: str, **path: str) -> str:
        return self.request.url_for(name, **path)

    @property
    def landing(self) -> str:
        return self.route("ogc_landing")

    @property
    def collection(self) -> str:
        return self.route("ogc_collection", collectionId=COLLECTION_ID)

    @property
    def items(self) -> str:
        return self.route("ogc_items", collectionId=COLLECTION_ID)

    def item(self, feature_id: str) -> str:
        return self.route("ogc_item", collectionId=COLLECTION_ID, featureId=feature_id)

    @property
    def queryables(self) -> str:
        return self.route("ogc_queryables", collectionId=COLLECTION_ID)

    @property
    def schema(self) -> str:
        return self.route("ogc_schema", collectionId=COLLECTION_ID)

    @property
    def openapi(self) -> str:
        config = self.request.app.openapi_config
        path = config.path if config is not None else "/schema"
        return f"{str(self.request.base_url).rstrip('/')}{path}/openapi.json"

    @property
    def api_docs(self) -> str:
        return self.openapi.removesuffix("/openapi.json")

    def chip_png(self) -> Callable[[str], str] | None:
        """URL maker for chip previews, None when the geosearch search router is not mounted beside."""
        try:
            self.request.url_for("geosearch_chip_png", chip_file="x.png")
        except NoRouteMatchFoundException:
            return None
        return lambda chip_id: self.request.url_for("geosearch_chip_png", chip_file=f"{chip_id}.png")

    def this(self, fmt: str, **params: str | None) -> str:
        """This request's URL with format `fmt` (``json``/``html``) and the parameters replaced."""
        query = {k: v for k, v in self.request.query_params.items() if k not in params and k != "f"}
        query.update({k: v for k, v in params.items() if v is not None})
        query["f"] = fmt
        url = self.request.url
        return f"{url.scheme}://{url.netloc}{url.path}?{urlencode(query)}"


def self_links(urls: OgcUrls, json_type: str, title: str) -> list[Doc]:
    """``self`` (JSON) and ``alternate`` (HTML) links of the current document."""
    return [
        link(urls.this("json"), "self", json_type, f"{title} as JSON"),
        link(urls.this("html"), "alternate", HTML, f"{title} as HTML"),
    ]


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- resources -----------------------------------------------------------------------------------
def landing_doc(urls: OgcUrls) -> Doc:
    return {
        "title": "geosearch",
        "description": "Image chips of GeoTIFF scenes with their captions, searchable by text (OGC API - Features)",
        "links": [
            *self_links(urls, JSON, "This landing page"),
            link(urls.openapi, "service-desc", OPENAPI_JSON, "The API definition (OpenAPI 3.1)"),
            link(urls.api_docs, "service-doc", HTML, "The API documentation"),
            link(urls.route("ogc_conformance"), "conformance", JSON, "Conformance classes"),
            link(urls.route("ogc_collections"), "data", JSON, "Feature collections"),
        ],
    }


def conformance_doc() -> Doc:
    return {"conformsTo": list(CONFORMANCE)}


def _spatial_extent(scenes: list[SceneInfo]) -> list[list[float]]:
    """The overall CRS84 bbox first, then one per scene (/req/core/fc-md-extent-multi)."""
    boxes = [list(s.bbox) for s in scenes if len(s.bbox) == 4]
    if not boxes:
        return [[-180.0, -90.0, 180.0, 90.0]]
    crosses = any(b[0] > b[2] for b in boxes)
    overall = [
        -180.0 if crosses else min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        180.0 if crosses else max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    return [overall, *boxes] if len(boxes) > 1 else [overall]


def _temporal_extent(scenes: list[SceneInfo]) -> list[list[str | None]]:
    times = sorted(s.datetime for s in scenes if s.datetime)
    return [[times[0], times[-1]]] if times else [[None, None]]


def collection_doc(urls: OgcUrls, scenes: list[SceneInfo]) -> Doc:
    """The ``chips`` collection: every chip footprint with its caption, the extent of all scenes."""
    return {
        "id": COLLECTION_ID,
        "title": "Chips and captions",
        "description": "The footprint of every image chip with its caption, scene, acquisition time and "
        "ground resolution. Add q=<text> to the items request to rank chips by similarity to the text.",
        "itemType": "feature",
        "crs": [CRS84],
        "extent": {
            "spatial": {"bbox": _spatial_extent(scenes), "crs": CRS84},
            "temporal": {"interval": _temporal_extent(scenes), "trs": GREGORIAN},
        },
        "links": [
            link(f"{urls.collection}?f=json", "self", JSON, "This collection"),
            link(f"{urls.collection}?f=html", "alternate", HTML, "This collection as HTML"),
            link(f"{urls.items}?f=json", "items", GEOJSON, "The chips as GeoJSON"),
            link(f"{urls.items}?f=html", "items", HTML, "The chips as HTML"),
            link(urls.queryables, REL_QUERYABLES, SCHEMA_JSON, "The queryable properties"),
            link(urls.schema, "describedby", SCHEMA_JSON, "JSON Schema of the chip features"),
            # The same link as GDAL's OAPIF driver (3.6) spells the relation (link relations ignore case).
            link(urls.schema, "describedBy", SCHEMA_JSON, "JSON Schema of the chip features"),
        ],
    }


def collections_doc(urls: OgcUrls, scenes: list[SceneInfo]) -> Doc:
    return {"links": self_links(urls, JSON, "The collections"), "collections": [collection_doc(urls, scenes)]}


def queryables_doc(urls: OgcUrls) -> Doc:
    """JSON Schema of the properties a client can select on (Part 3, /req/queryables)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": urls.queryables,
        "type": "object",
        "title": "chips",
        "properties": {
            "geometry": {"title": "Chip footprint", "format": "geometry-polygon"},
            "scene": {"title": "Scene id", "type": "string", "description": "items parameter scene=<id>"},
            "datetime": {
                "title": "Acquisition time",
                "type": "string",
                "format": "date-time",
                "description": "items parameter datetime=<instant or interval>",
            },
            "gsd": {
                "title": "Ground resolution (m/px)",
                "type": "number",
                "description": "items parameter gsd=<min>/<max>",
            },
            "caption": {"title": "Caption", "type": "string"},
            "score": {
                "title": "Similarity to q",
                "type": "number",
                "description": "items parameter q=<text> ranks by it; null without q",
            },
        },
        "additionalProperties": True,
    }


def schema_doc(urls: OgcUrls) -> Doc:
    """JSON Schema of one chip Feature (GeoJSON), linked from the collection as ``describedby``.

    GIS clients type their fields from it rather than from the first page (GDAL's OAPIF driver reads the
    ``properties`` of a Feature schema). Properties without a value are left out of features rather than
    written as null, so every property keeps one type: ``score`` and ``relevance`` only come with ``q``.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": urls.schema,
        "title": "chip",
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"type": "string", "title": "Chip id"},
            "geometry": {"type": "object", "title": "Chip footprint, a Polygon in CRS84"},
            "properties": {
                "type": "object",
                "properties": {  # "id" too (the feature id), left out: GDAL 3.6 would list it twice
                    "score": {"title": "Similarity to q (only with q)", "type": "number"},
                    "relevance": {"title": "Share of reference images outscored for q (only with q)", "type": "number"},
                    "caption": {"title": "Caption", "type": "string"},
                    "scene": {"title": "Scene id", "type": "string"},
                    "window": {"title": "Pixel window in the scene", "type": "object"},
                    "gsd": {"title": "Ground resolution (m/px)", "type": "number"},
                    "scale": {"title": "Scale factor of the chip over the scene", "type": "integer"},
                    "datetime": {"title": "Acquisition time", "type": "string", "format": "date-time"},
                    "valid_fraction": {"title": "Share of valid pixels", "type": "number"},
                    "chip_url": {"title": "Chip image (PNG)", "type": "string", "format": "uri"},
                },
            },
            "links": {"type": "array"},
        },
    }


def ogc_feature(hit: Hit, chip_url: Callable[[str], str] | None) -> Doc:
    """`geosearch.geojson.chip_feature` as a dict, without the properties that have no value."""
    feature: Doc = msgspec.to_builtins(chip_feature(hit, chip_url))
    feature["properties"] = {k: v for k, v in feature["properties"].items() if v is not None}
    return feature


def feature_doc(hit: Hit, urls: OgcUrls, chip_url: Callable[[str], str] | None) -> Doc:
    """One chip as a GeoJSON Feature (the properties of `geosearch.geojson.chip_feature`)."""
    feature = ogc_feature(hit, chip_url)
    feature["links"] = [
        link(urls.item(hit.id) + "?f=json", "self", GEOJSON, "This chip"),
        link(urls.item(hit.id) + "?f=html", "alternate", HTML, "This chip as HTML"),
        link(urls.collection, "collection", JSON, "The chips collection"),
    ]
    if chip_url is not None:
        feature["links"].append(link(chip_url(hit.id), "preview", "image/png", "The chip image"))
    return feature


def items_doc(
    hits: list[Hit],
    urls: OgcUrls,
    *,
    number_matched: int | None,
    paging: list[Doc],
) -> Doc:
    """A page of chips as a GeoJSON FeatureCollection with its self/alternate/next/prev links."""
    chip_url = urls.chip_png()
    features = [ogc_feature(hit, chip_url) for hit in hits]
    for feature in features:
        feature["links"] = [link(urls.item(feature["id"]), "self", GEOJSON)]
    doc: Doc = {
        "type": "FeatureCollection",
        "features": features,
        "links": [
            *self_links(urls, GEOJSON, "This page"),
            *paging,
            link(urls.collection, "collection", JSON, "The chips collection"),
        ],
        "timeStamp": now_rfc3339(),
        "numberReturned": len(features),
    }
    if number_matched is not None:
        doc["numberMatched"] = number_matched
    return doc
