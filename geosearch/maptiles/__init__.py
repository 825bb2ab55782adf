"""Web map tiles: chip footprints as Mapbox Vector Tiles and scene imagery as PNG, on WebMercatorQuad.

Modules: `grid` (the tile grid, z/x/y parsing and bounds), `mvt` (footprints -> an MVT layer),
`imagery` (rio-tiler reads, the only file I/O), `render` (raw bands -> RGBA PNG with the stretch of
ingest), `tilejson` (TileJSON 3.0.0 documents) and `service` (the operations the routes call, over
the `Engine`). The HTTP routes are `geosearch.api.tiles`.
"""

from geosearch.maptiles.grid import TMS, Tile, lonlat_bounds, parse_tile
from geosearch.maptiles.mvt import LAYER, encode_chips
from geosearch.maptiles.service import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    chip_tile,
    chips_document,
    scene_document,
    scene_tile_png,
    tile_limit,
)
from geosearch.maptiles.tilejson import TileJSON

__all__ = [
    "DEFAULT_LIMIT",
    "LAYER",
    "MAX_LIMIT",
    "TMS",
    "Tile",
    "TileJSON",
    "chip_tile",
    "chips_document",
    "encode_chips",
    "lonlat_bounds",
    "parse_tile",
    "scene_document",
    "scene_tile_png",
    "tile_limit",
]
