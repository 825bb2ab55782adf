"""The web map tile grid: WebMercatorQuad (morecantile), z/x/y parsing, tile bounds, zooms. Pure, no I/O.

Every tile route and encoder goes through `TMS`, so the vector and the imagery tiles of one z/x/y
cover exactly the same ground.
"""

from __future__ import annotations

import math
import threading

import morecantile
import numpy as np
from numpy.typing import NDArray
from pyproj import CRS, Transformer

from geosearch.errors import InvalidInput, NotFound

TMS: morecantile.TileMatrixSet = morecantile.tms.get("WebMercatorQuad")
MIN_ZOOM: int = TMS.minzoom
MAX_ZOOM: int = TMS.maxzoom
TILE_SIZE: int = TMS.matrix(0).tileWidth
"""Pixels per side of an imagery tile (256)."""
MAX_LAT: float = float(TMS.bbox.top)
"""Latitude limit of the grid (85.0511...): Web Mercator cannot place anything beyond it."""
WORLD_BOUNDS: tuple[float, float, float, float] = (-180.0, -MAX_LAT, 180.0, MAX_LAT)

_GRID_CRS = CRS.from_user_input(TMS.crs.srs)
_local = threading.local()

Tile = morecantile.Tile


def _index(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise InvalidInput(f"tile {name} must be a non-negative integer, got {value!r}")
    return int(value)


def parse_tile(z: str, x: str, y_file: str, suffix: str) -> Tile:
    """The tile named by the URL segments `z`, `x` and `y_file` (``<y><suffix>``, e.g. ``12.mvt``).

    Raises:
        NotFound: `y_file` does not end in `suffix` (the tile exists in another format only).
        InvalidInput: z, x or y not a non-negative integer, z outside MIN_ZOOM..MAX_ZOOM, or x / y
            outside 0..2^z-1 (the reason names which).
    """
    if not y_file.endswith(suffix):
        raise NotFound(f"tiles are served as {{z}}/{{x}}/{{y}}{suffix}, not {y_file!r}")
    zi, xi, yi = _index(z, "z"), _index(x, "x"), _index(y_file.removesuffix(suffix), "y")
    if not MIN_ZOOM <= zi <= MAX_ZOOM:
        raise InvalidInput(f"zoom z={zi} is outside {MIN_ZOOM}..{MAX_ZOOM}")
    matrix = TMS.matrix(zi)
    if xi >= matrix.matrixWidth or yi >= matrix.matrixHeight:
        raise InvalidInput(f"tile x={xi} y={yi} is outside zoom {zi}, whose x and y run 0..{matrix.matrixWidth - 1}")
    return Tile(x=xi, y=yi, z=zi)


def lonlat_bounds(tile: Tile) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the tile in WGS84 degrees."""
    b = TMS.bounds(tile)
    return float(b.left), float(b.bottom), float(b.right), float(b.top)


def grid_bounds(tile: Tile) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of the tile in the grid's CRS (EPSG:3857 metres)."""
    b = TMS.xy_bounds(tile)
    return float(b.left), float(b.bottom), float(b.right), float(b.top)


def to_grid(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lon/lat degrees -> grid CRS metres; latitudes are clamped to ±MAX_LAT first, longitudes may
    leave -180..180 (an unwrapped footprint east of the antimeridian stays east of it)."""
    transformer: Transformer | None = getattr(_local, "to_grid", None)
    if transformer is None:  # one per thread, as in tilers.reader: requests run on a thread pool
        transformer = Transformer.from_crs(CRS.from_epsg(4326), _GRID_CRS, always_xy=True)
        _local.to_grid = transformer
    x, y = transformer.transform(np.asarray(lon, dtype=np.float64), np.clip(lat, -MAX_LAT, MAX_LAT))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def zoom_for_resolution(metres_per_pixel: float) -> int:
    """Zoom whose 256-px tiles have about this pixel size at the equator (rio-tiler's rule), clamped to the grid."""
    if not math.isfinite(metres_per_pixel) or metres_per_pixel <= 0:
        return MAX_ZOOM
    return int(min(MAX_ZOOM, max(MIN_ZOOM, TMS.zoom_for_res(metres_per_pixel))))
