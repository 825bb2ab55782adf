"""RFC 7946 GeoJSON types (coordinates are lon, lat in WGS84)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Feature(msgspec.Struct):
    geometry: dict[str, Any]
    properties: dict[str, Any]
    id: str | None = None
    type: Literal["Feature"] = "Feature"


class Link(msgspec.Struct):
    """A STAC/OGC-API-style link, used for paging (`rel="next"`)."""

    href: str
    rel: str
    type: str = "application/geo+json"


class FeatureCollection(msgspec.Struct):
    features: list[Feature]
    type: Literal["FeatureCollection"] = "FeatureCollection"
    links: list[Link] = msgspec.field(default_factory=list)
    numberReturned: int = 0
