"""TileJSON 3.0.0 documents for the chip layer and for scene imagery. Pure: records in, documents out.

Absent optional members are omitted, never null. Bounds are WGS84 (west, south, east, north), the
latitudes clamped to Web Mercator's ±85.0511; a box crossing the antimeridian widens to the whole
longitude range (MapLibre does not read west > east).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from geosearch.maptiles.grid import MAX_LAT, MAX_ZOOM, MIN_ZOOM, WORLD_BOUNDS, to_grid
from geosearch.maptiles.mvt import FIELDS, LAYER, QUERY_FIELDS
from geosearch.schemas import SceneInfo

TILEJSON_VERSION = "3.0.0"
CHIPS_PER_TILE_SIDE = 4
"""The chip layer's maxzoom is the zoom whose tiles are this many of the finest chips wide: the client
overzooms beyond it, and every tile up to it holds few enough chips to stay under the feature limit."""
DEFAULT_VECTOR_MAXZOOM = 14
"""The chip layer's maxzoom for an empty store."""

_WORLD_WIDTH = 2.0 * math.pi * 6378137.0


class VectorLayer(msgspec.Struct, kw_only=True):
    id: str
    fields: dict[str, str]
    description: str
    minzoom: int
    maxzoom: int


class TileJSON(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A TileJSON 3.0.0 document (https://github.com/mapbox/tilejson-spec/tree/master/3.0.0)."""

    tilejson: str
    tiles: list[str]
    scheme: str
    minzoom: int
    maxzoom: int
    bounds: list[float]
    name: str | None = None
    description: str | None = None
    vector_layers: list[VectorLayer] | None = None


def union_bounds(boxes: Iterable[Sequence[float]]) -> list[float]:
    """Smallest WGS84 box holding every (west, south, east, north) box; the grid's extent when none."""
    boxes = [list(b) for b in boxes if len(b) == 4]
    if not boxes:
        return list(WORLD_BOUNDS)
    south = max(-MAX_LAT, min(b[1] for b in boxes))
    north = min(MAX_LAT, max(b[3] for b in boxes))
    if any(b[0] > b[2] for b in boxes):
        return [-180.0, south, 180.0, north]
    return [max(-180.0, min(b[0] for b in boxes)), south, min(180.0, max(b[2] for b in boxes)), north]


def footprint_width(footprint: Mapping[str, Any]) -> float:
    """East-west extent of a GeoJSON Polygon footprint in Web Mercator metres."""
    ring = np.asarray(footprint["coordinates"][0], dtype=np.float64)
    x, _ = to_grid(ring[:, 0], ring[:, 1])
    return float(x.max() - x.min())


def vector_maxzoom(chip_widths: Iterable[float]) -> int:
    """Zoom whose tiles are `CHIPS_PER_TILE_SIDE` of the narrowest chips (Web Mercator metres) wide."""
    widths = [w for w in chip_widths if math.isfinite(w) and w > 0]
    if not widths:
        return DEFAULT_VECTOR_MAXZOOM
    zoom = math.floor(math.log2(_WORLD_WIDTH / (CHIPS_PER_TILE_SIDE * min(widths))))
    return min(MAX_ZOOM, max(MIN_ZOOM, zoom))


def chips_tilejson(
    tiles_url: str, scenes: Sequence[SceneInfo], chip_widths: Iterable[float], query: str | None = None
) -> TileJSON:
    """The chip layer: every ingested scene's chips, or with `query` its search hits (score fields added)."""
    maxzoom = vector_maxzoom(chip_widths)
    fields = {**FIELDS, **QUERY_FIELDS} if query else dict(FIELDS)
    what = f"chips matching {query!r}, ranked by score" if query else "chip footprints with their captions"
    layer = VectorLayer(id=LAYER, fields=fields, description=what, minzoom=MIN_ZOOM, maxzoom=maxzoom)
    return TileJSON(
        tilejson=TILEJSON_VERSION,
        tiles=[tiles_url],
        scheme="xyz",
        minzoom=MIN_ZOOM,
        maxzoom=maxzoom,
        bounds=union_bounds(s.bbox for s in scenes),
        name="geosearch chips",
        description=f"geosearch: {what}",
        vector_layers=[layer],
    )


def scene_tilejson(tiles_url: str, scene: SceneInfo, minzoom: int, maxzoom: int) -> TileJSON:
    """One scene's imagery (PNG, transparent outside the scene), rendered as it was ingested."""
    name = scene.path.replace("\\", "/").rsplit("/", 1)[-1]
    return TileJSON(
        tilejson=TILEJSON_VERSION,
        tiles=[tiles_url],
        scheme="xyz",
        minzoom=minzoom,
        maxzoom=maxzoom,
        bounds=union_bounds([scene.bbox]),
        name=name,
        description=f"scene {scene.id} ({name}) with the band selection and stretch of ingest",
    )
