"""Chip footprints as one Mapbox Vector Tile layer (mapbox-vector-tile). Pure: hits in, bytes out.

Geometry: each footprint is projected to the tile (WebMercatorQuad, `EXTENT` units a side, y down),
clipped to the tile plus `BUFFER` units on every side (so outlines do not end at tile seams), snapped
to integer units and simplified by half a unit. A footprint that collapses below one unit (low zooms)
becomes a Point at its centre, so circle or heatmap layers still see it. Footprints unwrapped past the
antimeridian (lon > 180) are shifted by 360° towards the tile first.

Properties: MVT has no null, so a property without a value (caption, datetime, relevance) is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mapbox_vector_tile
import numpy as np
import shapely
from mapbox_vector_tile.encoder import on_invalid_geometry_make_valid
from numpy.typing import ArrayLike, NDArray
from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry

from geosearch.maptiles.grid import Tile, grid_bounds, lonlat_bounds, to_grid
from geosearch.store import Hit

LAYER = "chips"
EXTENT = 4096
BUFFER = 64

Properties = dict[str, str | int | float]

FIELDS: dict[str, str] = {
    "id": "String: chip id (GET /chips/{id}.png renders it)",
    "scene": "String: scene id",
    "caption": "String: the chip's caption (absent when the chip has none)",
    "gsd": "Number: ground sampling distance of the chip as embedded, metres per pixel",
    "datetime": "String: acquisition time, ISO 8601 (absent when unknown)",
}
"""Fields of every feature (TileJSON `vector_layers[].fields`)."""

QUERY_FIELDS: dict[str, str] = {
    "score": "Number: cosine similarity to the query q",
    "relevance": "Number: share of the embedder's reference images the chip outscores, 0..1 (absent without one)",
    "rank": "Number: 1-based rank of the chip among the query's hits inside this tile (1 = best)",
}
"""Fields added to each feature of a query tile (`?q=`)."""


def to_tile_units(lon: ArrayLike, lat: ArrayLike, tile: Tile) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lon/lat degrees -> tile units (0..EXTENT across the tile, x east, y down), unclipped, unrounded."""
    x, y = to_grid(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    minx, miny, maxx, maxy = grid_bounds(tile)
    return (x - minx) * (EXTENT / (maxx - minx)), (maxy - y) * (EXTENT / (maxy - miny))


def footprint_geometry(footprint: Mapping[str, Any], tile: Tile) -> BaseGeometry | None:
    """A GeoJSON Polygon footprint (lon/lat) as tile geometry: clipped, integer, simplified; a Point
    when it collapses below one unit; None when nothing of it is within the buffered tile."""
    ring = np.asarray(footprint["coordinates"][0], dtype=np.float64)
    west, _, east, _ = lonlat_bounds(tile)
    lon = ring[:, 0] + 360.0 * round(((west + east) / 2.0 - float(ring[:, 0].mean())) / 360.0)
    px, py = to_tile_units(lon, ring[:, 1], tile)
    polygon = Polygon(np.column_stack([px, py]))
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon)
    clipped = shapely.clip_by_rect(polygon, -BUFFER, -BUFFER, EXTENT + BUFFER, EXTENT + BUFFER)
    if clipped.is_empty:
        return None
    snapped = shapely.simplify(shapely.set_precision(clipped, 1.0), 0.5, preserve_topology=True)
    if snapped.is_empty or snapped.area < 1.0 or snapped.geom_type not in ("Polygon", "MultiPolygon"):
        centre = clipped.centroid if clipped.area > 0 else clipped.representative_point()
        return Point(round(centre.x), round(centre.y))
    return snapped


def chip_properties(hit: Hit, rank: int | None = None) -> Properties:
    """Feature properties of a chip (`FIELDS`); with `rank`, also its query fields (`QUERY_FIELDS`)."""
    p = hit.payload
    props: Properties = {"id": hit.id, "scene": p.scene_id, "gsd": float(p.gsd)}
    if p.caption is not None:
        props["caption"] = p.caption
    if p.datetime is not None:
        props["datetime"] = p.datetime
    if rank is not None:
        props["rank"] = rank
        if hit.score is not None:
            props["score"] = float(hit.score)
        if hit.relevance is not None:
            props["relevance"] = float(hit.relevance)
    return props


def encode_chips(hits: Sequence[Hit], tile: Tile, *, ranked: bool = False) -> bytes:
    """The `LAYER` layer of `tile` holding `hits`, in their order; `ranked` adds the query fields with
    rank = position in `hits` + 1. A tile without any feature is the empty MVT (zero bytes: no layers)."""
    features = []
    for position, hit in enumerate(hits):
        geometry = footprint_geometry(hit.payload.footprint, tile)
        if geometry is not None:
            props = chip_properties(hit, position + 1 if ranked else None)
            features.append({"geometry": geometry, "properties": props})
    if not features:
        return b""
    options = {"extents": EXTENT, "y_coord_down": True, "on_invalid_geometry": on_invalid_geometry_make_valid}
    data: bytes = mapbox_vector_tile.encode({"name": LAYER, "features": features}, default_options=options)
    return data
