"""Data contracts shared by the tiler, the store, the API and GIS clients.

Everything here is a `msgspec.Struct`: typed, validated at the API boundary by Litestar, and
serialised straight into Qdrant payloads and RFC 7946 GeoJSON.
"""

from geosearch.schemas.api import (
    CaptionsQuery,
    SceneInfo,
    SceneList,
    SearchQuery,
    SearchRequest,
)
from geosearch.schemas.chips import ChipPayload, GeoPoint, Window
from geosearch.schemas.geojson import Feature, FeatureCollection, Link

__all__ = [
    "CaptionsQuery",
    "ChipPayload",
    "Feature",
    "FeatureCollection",
    "GeoPoint",
    "Link",
    "SceneInfo",
    "SceneList",
    "SearchQuery",
    "SearchRequest",
    "Window",
]
