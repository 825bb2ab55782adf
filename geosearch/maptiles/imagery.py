"""Scene imagery for web map tiles, read with rio-tiler: the only module of `geosearch.maptiles` that opens rasters.

Reads return raw band values and a validity mask; turning them into pixels is `render`'s job.
Resampling follows ingest (`tilers.reader.read_window`): average when a tile pixel covers several
native pixels (below the scene's native zoom), bilinear otherwise, for both the decimated read and
the reprojection to Web Mercator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from rasterio.errors import RasterioError
from rio_tiler.errors import RioTilerError, TileOutsideBounds
from rio_tiler.io import Reader

from geosearch.errors import NotFound, SceneError
from geosearch.maptiles.grid import TMS, Tile


@dataclass(frozen=True)
class TileRead:
    """One tile of a scene: `data` (bands, H, W) raw values, `valid` (H, W), per-band GDAL scales and offsets."""

    data: NDArray[np.generic]
    valid: NDArray[np.bool_]
    scales: list[float]
    offsets: list[float]


@contextmanager
def _reader(path: str) -> Iterator[Reader]:
    """A rio-tiler Reader on the WebMercatorQuad grid; unreadable files raise `SceneError`.

    Warnings are left alone (`warnings.catch_warnings` is not thread-safe, and requests share threads):
    rio-tiler's NoOverviewWarning is printed once per process, a fair hint for large scenes."""
    try:
        reader = Reader(path, tms=TMS)
    except (RasterioError, RioTilerError, OSError) as exc:
        raise SceneError(f"cannot read raster {path}: {exc}") from exc
    with reader:
        yield reader


def read_tile(path: str, bands: Sequence[int], tile: Tile) -> TileRead:
    """Read `bands` (1-based, distinct) of the raster at `path` for `tile`, 256 x 256, in Web Mercator.

    Pixels outside the raster or masked (nodata, alpha, internal mask) are invalid; an alpha band
    counts as valid where it is above 0.

    Raises:
        NotFound: the tile does not intersect the raster's bounds.
        SceneError: the file cannot be read, or a band is not in it.
    """
    with _reader(path) as src:
        assert src.dataset is not None  # a Reader opened from a path always holds its dataset
        count = int(src.dataset.count)
        if not bands or not all(1 <= b <= count for b in bands):
            raise SceneError(f"bands {list(bands)} do not fit {path} ({count} bands)")
        method = "average" if tile.z < src.maxzoom else "bilinear"
        try:
            image = src.tile(
                tile.x, tile.y, tile.z, indexes=list(bands), resampling_method=method, reproject_method=method
            )
        except TileOutsideBounds:
            raise NotFound(f"tile {tile.z}/{tile.x}/{tile.y} does not intersect the scene") from None
        except (RasterioError, RioTilerError, OSError) as exc:
            raise SceneError(f"cannot read tile {tile.z}/{tile.x}/{tile.y} of {path}: {exc}") from exc
    return TileRead(
        data=np.asarray(image.data),
        valid=np.asarray(image.mask) > 0,
        scales=[float(s) for s in image.scales],
        offsets=[float(o) for o in image.offsets],
    )


def zoom_range(path: str) -> tuple[int, int]:
    """(minzoom, maxzoom) of the raster on WebMercatorQuad, rio-tiler's rule: maxzoom is the zoom
    closest to the native resolution, minzoom the one where the whole raster is about one tile.

    Raises:
        SceneError: the file cannot be read.
    """
    with _reader(path) as src:
        return int(src.minzoom), int(src.maxzoom)
