"""What the tile routes do, over the `Engine`'s public API only: the chips of a tile, a scene's imagery
tile, and the TileJSON documents describing both.

A scene's imagery is located by its store record alone (never by anything in a request) and drawn
with the bands and stretch its chips were embedded with (every chip of a scene carries the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from geosearch.engine import Engine
from geosearch.errors import InvalidInput, NotFound, SceneError
from geosearch.maptiles.grid import Tile, lonlat_bounds
from geosearch.maptiles.imagery import read_tile, zoom_range
from geosearch.maptiles.mvt import encode_chips
from geosearch.maptiles.render import encode_png, to_rgba
from geosearch.maptiles.tilejson import TileJSON, chips_tilejson, footprint_width, scene_tilejson
from geosearch.schemas import CaptionsQuery, SceneInfo, SearchQuery
from geosearch.tilers.ids import scene_id as content_id

DEFAULT_LIMIT = 1000
"""Features per vector tile unless `?limit=` says otherwise."""
MAX_LIMIT = 10000
"""Most features one vector tile may be asked for; more is refused (400), not silently capped."""


def tile_limit(value: int | None) -> int:
    """`?limit=` of a vector tile: DEFAULT_LIMIT when absent; InvalidInput outside 1..MAX_LIMIT."""
    if value is None:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT} features per tile, got {value}")
    return value


def chip_tile(engine: Engine, tile: Tile, *, q: str | None = None, limit: int = DEFAULT_LIMIT) -> bytes:
    """MVT of the chips whose footprints intersect `tile` (the store's exact bbox test on the tile's
    lon/lat box). Without `q`: the first `limit` of them in the store's id order (a stable sample when
    a tile holds more). With `q`: the query's best `limit` hits inside the tile, in score order."""
    bbox = lonlat_bounds(tile)
    if q is None:
        hits, _ = engine.page_chips(CaptionsQuery(bbox=bbox, limit=limit))
        return encode_chips(hits, tile)
    return encode_chips(engine.search(SearchQuery(q=q, bbox=bbox, limit=limit)), tile, ranked=True)


@dataclass(frozen=True)
class Rendering:
    """How a scene is drawn: its file (from the scene record) and the 1-based R, G, B bands and per-band
    [low, high] stretch of ingest (None for uint8 scenes read as is)."""

    path: str
    bands: list[int]
    stretch: list[list[float]] | None


def _check_source(info: SceneInfo) -> None:
    if not os.path.isfile(info.path):
        raise SceneError(f"source file of scene {info.id} is gone: {info.path}")
    if content_id(info.path) != info.id:
        raise SceneError(f"source file of scene {info.id} changed since it was ingested: {info.path}")


def scene_rendering(engine: Engine, scene_id: str) -> tuple[SceneInfo, Rendering]:
    """The scene's record and rendering.

    Raises:
        NotFound: no such scene, or it has no chips to take bands and stretch from.
        SceneError: its file is gone or its content changed since ingest.
    """
    info = engine.scene(scene_id)
    chips, _ = engine.page_chips(CaptionsQuery(scene=scene_id, limit=1))
    if not chips:
        raise NotFound(f"scene {scene_id!r} has no chips, so no band selection and stretch to draw it with")
    payload = chips[0].payload
    if len(payload.bands) != 3:
        raise SceneError(f"scene {scene_id!r} records bands {payload.bands}, not 3 for R, G, B")
    _check_source(info)
    return info, Rendering(path=info.path, bands=list(payload.bands), stretch=payload.stretch)


def scene_tile_png(engine: Engine, scene_id: str, tile: Tile) -> bytes:
    """RGBA PNG (256 px) of the scene over `tile`, transparent outside the scene and where it has no data.

    Raises:
        NotFound: unknown scene, or the tile does not intersect its bounds.
        SceneError: see `scene_rendering`.
    """
    _, rendering = scene_rendering(engine, scene_id)
    distinct = list(dict.fromkeys(rendering.bands))
    read = read_tile(rendering.path, distinct, tile)
    pick = [distinct.index(b) for b in rendering.bands]
    return encode_png(to_rgba(read.data, read.valid, pick, read.scales, read.offsets, rendering.stretch))


def chips_document(engine: Engine, tiles_url: str, q: str | None = None) -> TileJSON:
    """TileJSON of the chip layer: bounds of every ingested scene; maxzoom from their finest chips
    (one chip per scene, its width divided by its scale factor)."""
    scenes = engine.scenes()
    widths = []
    for scene in scenes:
        for hit in engine.page_chips(CaptionsQuery(scene=scene.id, limit=1))[0]:
            widths.append(footprint_width(hit.payload.footprint) / max(1, hit.payload.scale))
    return chips_tilejson(tiles_url, scenes, widths, q)


def scene_document(engine: Engine, scene_id: str, tiles_url: str) -> TileJSON:
    """TileJSON of a scene's imagery: its bounds, and min/max zoom from its size and native resolution."""
    info, rendering = scene_rendering(engine, scene_id)
    minzoom, maxzoom = zoom_range(rendering.path)
    return scene_tilejson(tiles_url, info, minzoom, maxzoom)
