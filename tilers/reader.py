"""Scene I/O: open and validate a raster, read chips through windows, build georeferenced payloads.

Only windowed reads touch pixels (`dataset.read(window=..., out_shape=...)`), so memory is
bounded by the chip batch whatever the scene size. Numeric work lives in `grid`, `geometry`,
`bands` and `stretch`.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from geosearch.errors import SceneError
from geosearch.schemas.chips import ChipPayload, GeoPoint, Window
from geosearch.tilers import geometry, grid
from geosearch.tilers.bands import resolve_bands
from geosearch.tilers.ids import scene_id
from geosearch.tilers.options import Chip, ChipSpec, TileOptions
from geosearch.tilers.stretch import apply_stretch, percentile_stretch, to_physical

SAMPLE_LONG_SIDE = 1024
"""Long side of the decimated read the per-scene stretch is computed from (GDAL picks overviews)."""

CHIP_EDGE_POINTS = 8
SCENE_EDGE_POINTS = 16

_DATETIME_TAGS = (
    ("IMAGERY", "ACQUISITIONDATETIME"),
    (None, "ACQUISITIONDATETIME"),
    (None, "ACQUISITION_DATETIME"),
    (None, "DATETIME"),
    (None, "datetime"),
    (None, "TIFFTAG_DATETIME"),
)


def _open(path: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"cannot read raster {path}: {exc}") from exc


def _crs_string(crs: Any) -> str:
    """'EPSG:xxxx' when the CRS has an EPSG code (exact match), else its WKT."""
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def _check_georeferenced(ds: Any, path: str) -> None:
    """Refuse scenes we cannot place on the map; GCP/RPC-only scenes must be warped by the user.

    We refuse rather than warp through a WarpedVRT because the warp would choose a CRS, grid and
    resampling on the user's behalf and the stored windows would not be in the file's own grid.
    """
    no_transform = ds.transform.is_identity
    if no_transform:
        if ds.gcps[0]:
            raise SceneError(
                f"{path} has only GCPs (ground control points), no geotransform; "
                "warp it first with gdalwarp (e.g. `gdalwarp -t_srs EPSG:4326 in.tif out.tif`)"
            )
        if ds.rpcs is not None:
            raise SceneError(f"{path} has only RPCs, no geotransform; orthorectify it first with gdalwarp -rpc")
        raise SceneError(f"{path} has no geotransform (not georeferenced); it cannot be placed on the map")
    if ds.crs is None:
        raise SceneError(f"{path} has a geotransform but no CRS; assign one first (gdal_edit.py -a_srs)")
    dtype = np.dtype(ds.dtypes[0])
    if dtype.kind == "c":
        raise SceneError(f"{path} has complex pixels ({dtype}); only real-valued rasters can be chipped")
    if ds.width < 1 or ds.height < 1 or ds.count < 1:
        raise SceneError(f"{path} is empty ({ds.width}x{ds.height}, {ds.count} bands)")


def _parse_datetime(value: str) -> str | None:
    text = value.strip()
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt).isoformat()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        return None


def _scene_datetime(ds: Any) -> str | None:
    """Acquisition time from the usual GDAL metadata items, as ISO 8601 (None when absent/unparseable)."""
    for ns, key in _DATETIME_TAGS:
        try:
            tags = ds.tags(ns=ns) if ns else ds.tags()
        except RasterioError:
            continue
        value = tags.get(key)
        if value:
            parsed = _parse_datetime(str(value))
            if parsed:
                return parsed
    return None


def _scale_offset(ds: Any, bands: Sequence[int]) -> tuple[list[float], list[float]]:
    scales = [float(ds.scales[b - 1]) if ds.scales[b - 1] else 1.0 for b in bands]
    offsets = [float(ds.offsets[b - 1] or 0.0) for b in bands]
    return scales, offsets


def _unique(bands: Sequence[int]) -> tuple[list[int], list[int]]:
    """Distinct bands to read once each, and where each of R, G, B comes from in that read."""
    uniq = list(dict.fromkeys(bands))
    return uniq, [uniq.index(b) for b in bands]


def _valid(ds: Any, uniq: list[int], data: NDArray[Any], nearest: bool, **read: Any) -> NDArray[np.bool_]:
    """GDAL dataset-mask semantics over the bands used: a pixel is valid when ANY of them is.

    Per-dataset masks (alpha, internal masks) are the same for every band, so ANY only matters
    for nodata: a dark pixel that hits nodata in one band is not a hole. NaN in any band is
    invalid. Nodata-only and all-valid masks are derived from the pixels already read (when they
    were read without resampling), which halves the I/O; anything else asks GDAL for the masks.
    """
    flags = [ds.mask_flag_enums[b - 1] for b in uniq]
    valid: NDArray[np.bool_]
    if all(MaskFlags.all_valid in f for f in flags):
        valid = np.ones(data.shape[1:], dtype=bool)
    elif nearest and all(MaskFlags.nodata in f and MaskFlags.per_dataset not in f for f in flags):
        valid = np.zeros(data.shape[1:], dtype=bool)
        for band, b in zip(data, uniq, strict=True):
            nodata = ds.nodatavals[b - 1]
            valid |= ~np.isnan(band) if nodata is not None and math.isnan(nodata) else band != band.dtype.type(nodata)
    else:
        masks = ds.read_masks(uniq, resampling=Resampling.nearest, **read)
        valid = np.any(masks > 0, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    return valid


def read_window(
    ds: Any,
    window: Window,
    bands: Sequence[int],
    chip_size: int,
    stretch: Sequence[Sequence[float]] | None,
) -> tuple[NDArray[np.uint8], float]:
    """Read one chip: the native `window` resampled to `chip_size` square, RGB uint8, invalid black.

    The part of the window outside the scene (padded chips) is black and counts as invalid. Valid
    pixels come from GDAL's masks (nodata, alpha, internal masks; see `_valid`) and NaN.
    Non-uint8 data is scale/offset-corrected, then stretched with the scene stretch.
    """
    col0, row0 = max(window.col, 0), max(window.row, 0)
    col1 = min(window.col + window.width, ds.width)
    row1 = min(window.row + window.height, ds.height)
    fx, fy = chip_size / window.width, chip_size / window.height
    x0 = min(chip_size, round((col0 - window.col) * fx))
    y0 = min(chip_size, round((row0 - window.row) * fy))
    x1 = min(chip_size, round((col1 - window.col) * fx))
    y1 = min(chip_size, round((row1 - window.row) * fy))
    out = np.zeros((chip_size, chip_size, 3), dtype=np.uint8)
    if col1 <= col0 or row1 <= row0 or x1 <= x0 or y1 <= y0:
        return out, 0.0
    uniq, pick = _unique(bands)
    src = RioWindow(col0, row0, col1 - col0, row1 - row0)
    shape = (len(uniq), y1 - y0, x1 - x0)
    if (x1 - x0, y1 - y0) == (col1 - col0, row1 - row0):
        resampling = Resampling.nearest
    elif x1 - x0 < col1 - col0:
        resampling = Resampling.average
    else:
        resampling = Resampling.bilinear
    data = ds.read(uniq, window=src, out_shape=shape, resampling=resampling)
    valid = _valid(ds, uniq, data, resampling == Resampling.nearest, window=src, out_shape=shape)
    rgb_raw = data[pick]
    if data.dtype == np.uint8 and stretch is None:
        rgb = rgb_raw
    else:
        if stretch is None:
            raise SceneError(f"{ds.name} is {data.dtype}, which needs a stretch to render, but none was given")
        scales, offsets = _scale_offset(ds, bands)
        rgb = apply_stretch(to_physical(rgb_raw, scales, offsets), stretch)
    rgb = np.where(valid[None, :, :], rgb, 0).astype(np.uint8)
    out[y0:y1, x0:x1] = np.moveaxis(rgb, 0, -1)
    return out, float(np.count_nonzero(valid)) / float(chip_size * chip_size)


def _scene_stretch(ds: Any, bands: Sequence[int]) -> list[list[float]]:
    """2–98 % stretch per RGB band from ONE decimated read (≤ SAMPLE_LONG_SIDE px), valid pixels only."""
    uniq, pick = _unique(bands)
    factor = max(ds.width, ds.height) / SAMPLE_LONG_SIDE
    h = max(1, min(ds.height, math.ceil(ds.height / factor))) if factor > 1 else ds.height
    w = max(1, min(ds.width, math.ceil(ds.width / factor))) if factor > 1 else ds.width
    shape = (len(uniq), h, w)
    data = ds.read(uniq, out_shape=shape, resampling=Resampling.nearest)
    valid = _valid(ds, uniq, data, True, out_shape=shape)
    scales, offsets = _scale_offset(ds, uniq)
    dtype = np.dtype(ds.dtypes[bands[0] - 1])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        fallback = (float(info.min) * scales[0] + offsets[0], float(info.max) * scales[0] + offsets[0])
    else:
        fallback = (0.0, 1.0)
    per_band: list[list[float]] = percentile_stretch(data, valid, scales, offsets, fallback)
    return [list(per_band[i]) for i in pick]


class Scene:
    """An open scene: metadata, chip windows, thread-safe chip reads and georeferenced payloads.

    Each thread reading chips gets its own rasterio handle (GDAL datasets are not thread-safe);
    `close()` (or leaving the `with` block) releases them all.
    """

    def __init__(self, path: str, ds: Any, options: TileOptions) -> None:
        self.path = path
        self.options = options
        self._lock = threading.Lock()
        self._local = threading.local()
        self._local.ds = ds
        self._handles: list[Any] = [ds]
        self._closed = False

        _check_georeferenced(ds, path)
        self.width: int = int(ds.width)
        self.height: int = int(ds.height)
        self.transform = ds.transform
        self.crs: str = _crs_string(ds.crs)
        try:
            self._pyproj_crs = CRS.from_wkt(ds.crs.to_wkt())
        except CRSError as exc:
            raise SceneError(f"{path} has a CRS pyproj cannot parse ({self.crs}): {exc}") from exc
        self.bands: tuple[int, ...] = resolve_bands(
            options.bands, [c.name for c in ds.colorinterp], int(ds.count), path
        )
        self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
        self.id: str = scene_id(path)
        self.datetime: str | None = _scene_datetime(ds)
        try:
            self.stretch: list[list[float]] | None = (
                None if self.dtype == np.uint8 else _scene_stretch(ds, self.bands)
            )
            ring = geometry.footprint(
                self.transform,
                self._transformer(),
                Window(col=0, row=0, width=self.width, height=self.height),
                SCENE_EDGE_POINTS,
            )
            centre = geometry.centre(
                self.transform, self._transformer(), Window(col=0, row=0, width=self.width, height=self.height)
            )
        except (RasterioError, OSError) as exc:
            raise SceneError(f"cannot read pixels of {path}: {exc}") from exc
        except ProjError as exc:
            raise SceneError(f"cannot transform {path} ({self.crs}) to lon/lat: {exc}") from exc
        self.bbox: tuple[float, float, float, float] = geometry.ring_bbox(ring)
        gx, gy = geometry.native_resolution_m(self.transform, self._pyproj_crs, centre)
        self._res = (gx, gy)
        self.native_gsd: float = (gx + gy) / 2.0
        self._base = (1.0, 1.0) if options.gsd is None else (options.gsd / gx, options.gsd / gy)
        self.gsd: float = self.grid_at(1).gsd
        """Effective metres per chip pixel at scale 1: the target GSD up to the rounding of the native window."""

    # -- handles ---------------------------------------------------------------------------------

    def _transformer(self) -> Transformer:
        tr: Transformer | None = getattr(self._local, "transformer", None)
        if tr is None:
            tr = geometry.make_transformer(self._pyproj_crs)
            self._local.transformer = tr
        return tr

    def _dataset(self) -> Any:
        ds = getattr(self._local, "ds", None)
        if ds is None:
            with self._lock:
                if self._closed:
                    raise SceneError(f"scene {self.path} is closed")
                ds = _open(self.path)
                self._handles.append(ds)
            self._local.ds = ds
        elif self._closed:
            raise SceneError(f"scene {self.path} is closed")
        return ds

    def close(self) -> None:
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
        for ds in handles:
            ds.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scene({self.path!r}, {self.width}x{self.height}, {self.crs}, bands={self.bands})"

    # -- chips -----------------------------------------------------------------------------------

    def grid_at(self, scale: int) -> grid.ChipGrid:
        """The chip grid at `scale` x the base GSD: a coarser scale covers more native pixels per chip."""
        factor = (self._base[0] * scale, self._base[1] * scale)
        return grid.chip_grid(self.options.chip_size, self.options.effective_stride, self._res, factor)

    @property
    def window_size(self) -> tuple[int, int]:
        """Native pixels (width, height) covered by one chip at scale 1."""
        return self.grid_at(1).window

    def count(self) -> int:
        """Number of chips `windows()` yields, without iterating."""
        grids = [self.grid_at(scale) for scale in self.options.scales]
        return sum(grid.window_count(self.width, self.height, *g.window, *g.stride) for g in grids)

    def windows(self) -> Iterator[ChipSpec]:
        """Chip windows, scale by scale (finest first), row-major; bounds only, so listing costs no pixel I/O.

        Coarser scales read the same native grid decimated: GDAL serves those reads from overviews
        when the file has them, so memory stays bounded by the chip batch at every scale.
        """
        for scale in self.options.scales:
            g = self.grid_at(scale)
            for window, padded in grid.iter_windows(self.width, self.height, *g.window, *g.stride):
                yield ChipSpec(window=window, padded=padded, scale=scale)

    def read(self, spec: ChipSpec) -> Chip:
        """Read one chip (safe to call from several threads at once)."""
        try:
            pixels, valid = read_window(
                self._dataset(), spec.window, self.bands, self.options.chip_size, self.stretch
            )
        except (RasterioError, OSError) as exc:
            raise SceneError(f"cannot read window {spec.window} of {self.path}: {exc}") from exc
        return Chip(spec=spec, pixels=pixels, valid_fraction=valid)

    def read_many(self, specs: Sequence[ChipSpec]) -> list[Chip]:
        return [self.read(spec) for spec in specs]

    def payload(self, chip: Chip) -> ChipPayload:
        """Georeferenced payload for a chip; caption, ingested_at and model_id are left to the pipeline."""
        tr = self._transformer()
        window = chip.spec.window
        ring = geometry.footprint(self.transform, tr, window, CHIP_EDGE_POINTS)
        lon, lat = geometry.centre(self.transform, tr, window)
        return ChipPayload(
            scene_id=self.id,
            scene_path=self.path,
            window=window,
            chip_size=self.options.chip_size,
            crs=self.crs,
            footprint={"type": "Polygon", "coordinates": [[[x, y] for x, y in ring]]},
            centre=GeoPoint(lon=lon, lat=lat),
            gsd=self.grid_at(chip.spec.scale).gsd,
            scale=chip.spec.scale,
            valid_fraction=chip.valid_fraction,
            padded=chip.spec.padded,
            bands=list(self.bands),
            stretch=None if self.stretch is None else [list(s) for s in self.stretch],
            datetime=self.datetime,
        )


def open_scene(path: str | Path, options: TileOptions | None = None) -> Scene:
    """Open and validate a scene (raises `SceneError` with the reason and the file when it cannot be chipped).

    Opening hashes the whole file (the scene id) and, for non-uint8 scenes, reads one decimated
    sample for the stretch; no full-resolution pixels are read.
    """
    options = TileOptions() if options is None else options
    abspath = os.path.abspath(os.fspath(Path(path).expanduser()))
    if not os.path.isfile(abspath):
        raise SceneError(f"scene file not found: {abspath}")
    ds = _open(abspath)
    try:
        return Scene(abspath, ds, options)
    except BaseException:
        ds.close()
        raise


def render_chip(payload: ChipPayload) -> NDArray[np.uint8]:
    """Re-read a stored chip exactly as ingested (same window, bands, stretch, chip size).

    Raises `SceneError` when the source file is gone or its content hash no longer matches
    `payload.scene_id` (the stored window would point at different pixels).
    """
    path = payload.scene_path
    if not os.path.isfile(path):
        raise SceneError(f"source scene of this chip is gone: {path}")
    if scene_id(path) != payload.scene_id:
        raise SceneError(f"source scene {path} changed since it was ingested (content hash differs)")
    if payload.chip_size < 1 or payload.window.width < 1 or payload.window.height < 1:
        raise SceneError(f"payload for {path} has an empty window or chip size")
    with _open(path) as ds:
        bands = list(payload.bands)
        if len(bands) != 3 or not all(1 <= b <= ds.count for b in bands):
            raise SceneError(f"payload bands {bands} do not fit {path} ({ds.count} bands)")
        try:
            pixels, _ = read_window(ds, payload.window, bands, payload.chip_size, payload.stretch)
        except (RasterioError, OSError) as exc:
            raise SceneError(f"cannot read window {payload.window} of {path}: {exc}") from exc
        return pixels
