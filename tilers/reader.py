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
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
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
from geosearch.schemas.chips import ChipPayload, GeoPoint, StacRef, Window
from geosearch.sources.remote import gdal_path, is_remote, is_url, probe, remote_gdal_env, remote_scene_id
from geosearch.sources.source import BBox
from geosearch.tilers import geometry, grid, integrity
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


EARTH_RADIUS_RANGE_M = (6_300_000.0, 6_450_000.0)
"""Semi-major axes of Earth's ellipsoids and spheres (WGS84 6378 km, the authalic sphere 6371 km, Airy,
Bessel, Clarke ...); a CRS on any other body (Mars 3396 km, the Moon 1737 km, Venus 6052 km) is refused."""

Stamp = tuple[int, int, int, int]
"""What tells a rewritten file apart without reading it: size, modification and change times, inode."""


def _stamp(path: str) -> Stamp:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _gdal_detail(exc: BaseException, path: str) -> str:
    """GDAL's own words for a failure, on one line: the innermost cause that says something.

    rasterio wraps the GDAL error in a generic "Read failed. See previous exception for details.";
    the path is shortened to the file name (the caller's message names the file already).
    """
    messages: list[str] = []
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        messages.append(" ".join(str(cause).split()))
        cause = cause.__cause__ or cause.__context__
    useful = [m for m in messages if m and "see previous exception" not in m.lower()]
    text = (useful or messages or [type(exc).__name__])[-1]
    return text.replace(path, os.path.basename(path)) or type(exc).__name__


def _open(path: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"cannot read raster {path}: {_gdal_detail(exc, path)}") from exc


def _check_file(path: str) -> str | None:
    """Refuse, before GDAL sees it, a file that is empty, misnamed or a cut-short TIFF; return its kind.

    The kind comes from the file's first bytes (see `integrity.file_kind`), so the reason names what
    the file really is rather than what GDAL then fails to find in it (e.g. a geotransform).
    """
    size = os.path.getsize(path)
    if size == 0:
        raise SceneError(f"{path} is an empty file (0 bytes), not a raster")
    kind = integrity.file_kind(path)
    if kind in integrity.TIFF_KINDS:
        problem = integrity.tiff_problem(path)
        if problem:
            raise SceneError(f"{path} is a truncated or corrupt TIFF: {problem}")
    elif Path(path).suffix.lower() in (".tif", ".tiff"):
        if kind is None and size < 16:
            raise SceneError(f"{path} is a truncated or corrupt TIFF: the file has only {size} bytes")
        raise SceneError(
            f"{path} is not a GeoTIFF ({kind or 'unrecognised'} data); "
            "convert it with gdal_translate or give it the right file extension"
        )
    return kind


def _open_checked(path: str, kind: str | None) -> Any:
    """Open a scene's first handle; a failure is explained by what the file's bytes say it is."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        detail = _gdal_detail(exc, path)
        if kind in integrity.TIFF_KINDS:
            raise SceneError(f"{path} is a truncated or corrupt TIFF: {detail}") from exc
        raise SceneError(
            f"{path} is not a raster GDAL can read ({kind or 'unrecognised'} data): {detail}"
        ) from exc


def _check_sources(ds: Any, path: str) -> None:
    """Refuse a scene that names a local file that is not there (a VRT's source, typically)."""
    for name in ds.files[1:]:
        if not name.startswith("/vsi") and "://" not in name and not os.path.exists(name):
            raise SceneError(f"{path} refers to a file that does not exist: {name}")


def _crs_string(crs: Any) -> str:
    """'EPSG:xxxx' when the CRS has an EPSG code (exact match), else its WKT."""
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def _check_earth(crs: CRS, path: str) -> None:
    """Refuse CRSs that do not place pixels on Earth: other planets and moons, local engineering grids."""
    ellipsoid = crs.ellipsoid
    if ellipsoid is None:
        raise SceneError(
            f"{path} has a CRS with no ellipsoid ({crs.name}), e.g. a local engineering grid; "
            "it cannot be placed on Earth: reproject it with gdalwarp"
        )
    radius = float(ellipsoid.semi_major_metre)
    low, high = EARTH_RADIUS_RANGE_M
    if not low <= radius <= high:
        raise SceneError(
            f"{path} has a non-Earth CRS ({crs.name}, body radius {radius / 1000:,.0f} km); "
            "geosearch maps scenes on Earth only"
        )


def _check_georeferenced(ds: Any, path: str) -> None:
    """Refuse scenes we cannot place on the map; GCP/RPC-only scenes must be warped by the user.

    We refuse rather than warp through a WarpedVRT because the warp would choose a CRS, grid and
    resampling on the user's behalf and the stored windows would not be in the file's own grid.
    """
    transform = ds.transform
    if transform.is_identity:
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
    if not all(math.isfinite(v) for v in transform[:6]) or transform.determinant == 0:
        raise SceneError(
            f"{path} has a degenerate geotransform ({', '.join(f'{v:.12g}' for v in transform.to_gdal())}: "
            "zero or non-finite pixel size); "
            "fix it with gdal_edit.py -a_ullr"
        )
    dtype = np.dtype(ds.dtypes[0])
    if dtype.kind == "c":
        raise SceneError(f"{path} has complex pixels ({dtype}); only real-valued rasters can be chipped")
    if ds.width < 1 or ds.height < 1 or ds.count < 1:
        raise SceneError(f"{path} is empty ({ds.width}x{ds.height}, {ds.count} bands)")


def _check_on_earth(ring: list[tuple[float, float]], path: str) -> None:
    """Refuse a footprint that is not on the globe (latitudes past the poles, non-finite corners)."""
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    if not all(math.isfinite(v) for v in lons + lats):
        raise SceneError(f"{path} has corners that do not transform to finite lon/lat; check its geotransform and CRS")
    if min(lats) < -90.0 - 1e-9 or max(lats) > 90.0 + 1e-9:
        raise SceneError(
            f"{path} lies off the globe: its georeferencing puts it at latitudes {min(lats):.6g}..{max(lats):.6g}; "
            "check its geotransform and CRS"
        )


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

    def __init__(
        self,
        path: str,
        ds: Any,
        options: TileOptions,
        stamp: Stamp | None = None,
        *,
        ident: str | None = None,
        gdal_path: str | None = None,
        stac: StacRef | None = None,
        area: BBox | None = None,
    ) -> None:
        self.path = path
        self.remote = ident is not None
        """Read in place from a URL or GDAL virtual path (`open_scene` gave its `ident`), not a local file."""
        self._gdal_path = gdal_path or path
        self.stac = stac
        """The STAC Item the scene came from: recorded on every chip's payload."""
        self.area = area
        """Only chips whose window meets this lon/lat box are listed by `windows()` (None: all)."""
        self.options = options
        self._lock = threading.Lock()
        self._local = threading.local()
        self._local.ds = ds
        self._handles: list[Any] = [ds]
        self._closed = False
        self._stamp: Stamp = (0, 0, 0, 0) if self.remote else _stamp(path) if stamp is None else stamp
        """The file as it was before it was opened and hashed: every chip read checks it still is."""

        _check_georeferenced(ds, path)
        self.width: int = int(ds.width)
        self.height: int = int(ds.height)
        self.transform = ds.transform
        self.crs: str = _crs_string(ds.crs)
        try:
            self._pyproj_crs = CRS.from_wkt(ds.crs.to_wkt())
        except CRSError as exc:
            raise SceneError(f"{path} has a CRS pyproj cannot parse ({self.crs}): {exc}") from exc
        _check_earth(self._pyproj_crs, path)
        self.bands: tuple[int, ...] = resolve_bands(
            options.bands, [c.name for c in ds.colorinterp], int(ds.count), path
        )
        self.dtype = np.dtype(ds.dtypes[self.bands[0] - 1])
        self.id: str = ident if ident is not None else scene_id(path)
        self._check_unchanged()  # the hash is of the bytes GDAL opened
        self.datetime: str | None = _scene_datetime(ds) or (stac.datetime if stac is not None else None)
        whole = Window(col=0, row=0, width=self.width, height=self.height)
        try:
            self.stretch: list[list[float]] | None = (
                None if self.dtype == np.uint8 else _scene_stretch(ds, self.bands)
            )
            ring = geometry.footprint(self.transform, self._transformer(), whole, SCENE_EDGE_POINTS)
            centre = geometry.centre(self.transform, self._transformer(), whole)
        except (RasterioError, OSError) as exc:
            self._check_unchanged()
            raise SceneError(f"cannot read pixels of {path}: {_gdal_detail(exc, path)}") from exc
        except ProjError as exc:
            raise self._proj_error(exc) from exc
        self._check_unchanged()
        _check_on_earth(ring, path)
        self.bbox: tuple[float, float, float, float] = geometry.ring_bbox(ring)
        gx, gy = geometry.native_resolution_m(self.transform, self._pyproj_crs, centre)
        if not (math.isfinite(gx) and math.isfinite(gy) and gx > 0 and gy > 0):
            raise SceneError(f"{path} has no usable pixel size in metres ({gx}, {gy}); check its geotransform and CRS")
        self._res = (gx, gy)
        self.native_gsd: float = (gx + gy) / 2.0
        self._base = (1.0, 1.0) if options.gsd is None else (options.gsd / gx, options.gsd / gy)
        self.gsd: float = self.grid_at(1).gsd
        """Effective metres per chip pixel at scale 1: the target GSD up to the rounding of the native window."""
        self._area_px: tuple[float, float, float, float] | None = None if area is None else self._pixel_box(area)

    def _pixel_box(self, area: BBox) -> tuple[float, float, float, float]:
        """The lon/lat box as (col_min, row_min, col_max, row_max) in native pixels: its edges, densified,
        through the scene's CRS and inverse geotransform (a box across the antimeridian is not supported)."""
        west, south, east, north = area
        steps = [i / 32 for i in range(33)]
        lons = [west + (east - west) * t for t in steps]
        lats = [south + (north - south) * t for t in steps]
        ring = [(x, south) for x in lons] + [(x, north) for x in lons]
        ring += [(west, y) for y in lats] + [(east, y) for y in lats]
        to_scene = Transformer.from_crs("EPSG:4326", self._pyproj_crs, always_xy=True)
        try:
            xs, ys = to_scene.transform([p[0] for p in ring], [p[1] for p in ring])
        except ProjError as exc:
            raise self._proj_error(exc) from exc
        inverse = ~self.transform
        pixels = [inverse @ (x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
        if not pixels:
            return (0.0, 0.0, 0.0, 0.0)
        cols = [p[0] for p in pixels]
        rows = [p[1] for p in pixels]
        return min(cols), min(rows), max(cols), max(rows)

    def _in_area(self, window: Window) -> bool:
        if self._area_px is None:
            return True
        c0, r0, c1, r1 = self._area_px
        cols = window.col < c1 and window.col + window.width > c0
        return cols and window.row < r1 and window.row + window.height > r0

    def _proj_error(self, exc: ProjError) -> SceneError:
        name = self._pyproj_crs.name
        return SceneError(
            f"cannot transform {self.path} from its CRS ({name}) to lon/lat: its geotransform or CRS is "
            f"probably wrong ({' '.join(str(exc).split())})"
        )

    def _check_unchanged(self) -> None:
        """Raise `SceneError` when the file is no longer the one hashed into `id` (rewritten, cut, replaced).

        One `stat` call: the chips read before this check came from the hashed bytes, so a scene whose
        every read passes it is exactly the content its id names.
        """
        if self.remote:
            return  # a remote object is identified once, by its ETag / size / time (see `sources.remote`)
        try:
            now = _stamp(self.path)
        except OSError:
            raise SceneError(f"{self.path} was deleted or moved while it was being read") from None
        if now != self._stamp:
            raise SceneError(
                f"{self.path} changed while it was being read (rewritten, cut or replaced since it was "
                "hashed); ingest it again once it is complete"
            )

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
                with remote_gdal_env() if self.remote else nullcontext():
                    ds = _open(self._gdal_path)
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
        if self._area_px is not None:
            return sum(1 for _ in self.windows())
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
                if self._in_area(window):
                    yield ChipSpec(window=window, padded=padded, scale=scale)

    def read(self, spec: ChipSpec) -> Chip:
        """Read one chip (safe to call from several threads at once).

        Raises `SceneError` when GDAL cannot decode the window (a corrupt block) or when the file has
        changed since it was hashed (the pixels would not be those of the scene `id` names).
        """
        try:
            ds = self._dataset()
        except SceneError:
            self._check_unchanged()  # a cut file fails to open: say why
            raise
        try:
            pixels, valid = read_window(ds, spec.window, self.bands, self.options.chip_size, self.stretch)
        except (RasterioError, OSError) as exc:
            self._check_unchanged()
            w = spec.window
            raise SceneError(
                f"cannot read the pixels of {self.path} at window {w.col},{w.row} {w.width}x{w.height} "
                f"(is the file corrupt?): {_gdal_detail(exc, self.path)}"
            ) from exc
        self._check_unchanged()
        return Chip(spec=spec, pixels=pixels, valid_fraction=valid)

    def read_many(self, specs: Sequence[ChipSpec]) -> list[Chip]:
        return [self.read(spec) for spec in specs]

    def payload(self, chip: Chip) -> ChipPayload:
        """Georeferenced payload for a chip; caption, ingested_at and model_id are left to the pipeline."""
        tr = self._transformer()
        window = chip.spec.window
        try:
            ring = geometry.footprint(self.transform, tr, window, CHIP_EDGE_POINTS)
            lon, lat = geometry.centre(self.transform, tr, window)
        except ProjError as exc:
            raise self._proj_error(exc) from exc
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
            stac_item=None if self.stac is None else self.stac.item,
            stac_collection=None if self.stac is None else self.stac.collection,
            stac_href=None if self.stac is None else self.stac.href,
        )


def open_scene(path: str | Path, options: TileOptions | None = None) -> Scene:
    """Open and validate a scene (raises `SceneError` with the reason and the file when it cannot be chipped).

    Opening checks the file is what its name says and, for a TIFF, that no part is missing (see
    `integrity`), hashes the whole file (the scene id) and, for non-uint8 scenes, reads one decimated
    sample for the stretch; no full-resolution pixels are read. The file's size and times are noted
    first: a file that changes from then on fails its next chip read instead of mixing two versions.
    """
    options = TileOptions() if options is None else options
    problem: str | None = getattr(path, "problem", None)
    if problem:
        raise SceneError(problem)
    stac: StacRef | None = getattr(path, "stac", None)
    area: BBox | None = getattr(path, "area", None)
    if is_remote(os.fspath(path)):
        return _open_remote(os.fspath(path), options, stac, area)
    abspath = os.path.abspath(os.fspath(Path(path).expanduser()))
    if os.path.isdir(abspath):
        raise SceneError(f"{abspath} is a folder, not a raster file")
    if not os.path.isfile(abspath):
        raise SceneError(f"scene file not found: {abspath}")
    try:
        stamp = _stamp(abspath)
        kind = _check_file(abspath)
    except OSError as exc:
        raise SceneError(f"cannot read {abspath}: {exc.strerror or exc}") from exc
    ds = _open_checked(abspath, kind)
    try:
        _check_sources(ds, abspath)
        return Scene(abspath, ds, options, stamp, stac=stac, area=area)
    except BaseException:
        ds.close()
        raise


def _structure(ds: Any) -> tuple[object, ...]:
    """What identifies a remote raster that cannot be probed: its size, bands, type and grid."""
    crs = ds.crs.to_wkt() if ds.crs is not None else ""
    return (ds.width, ds.height, ds.count, ",".join(ds.dtypes), ds.transform.to_gdal(), crs)


def _open_remote(href: str, options: TileOptions, stac: StacRef | None, area: BBox | None) -> Scene:
    """Open a URL (through /vsicurl/: range reads of the header and the chips' tiles only, no download) or a
    GDAL virtual path; the id is the remote object's identity, not a content hash (see `sources.remote`)."""
    stamp = probe(href) if is_url(href) else None  # a missing object or a dead server: say so plainly
    path = gdal_path(href)
    try:
        with warnings.catch_warnings(), remote_gdal_env():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"cannot read raster {href}: {_gdal_detail(exc, path)}") from exc
    try:
        ident = remote_scene_id(href, stamp, _structure(ds))
        return Scene(href, ds, options, ident=ident, gdal_path=path, stac=stac, area=area)
    except BaseException:
        ds.close()
        raise


def render_chip(payload: ChipPayload) -> NDArray[np.uint8]:
    """Re-read a stored chip exactly as ingested (same window, bands, stretch, chip size).

    Raises `SceneError` when the source file is gone or its content hash no longer matches
    `payload.scene_id` (the stored window would point at different pixels).
    """
    path = payload.scene_path
    if is_remote(path):
        return _render_remote(payload)
    if not os.path.isfile(path):
        raise SceneError(f"source scene of this chip is gone: {path}")
    if scene_id(path) != payload.scene_id:
        raise SceneError(f"source scene {path} changed since it was ingested (content hash differs)")
    if payload.chip_size < 1 or payload.window.width < 1 or payload.window.height < 1:
        raise SceneError(f"payload for {path} has an empty window or chip size")
    with _open(path) as ds:
        return _payload_pixels(ds, payload, str(path), str)


def _render_remote(payload: ChipPayload) -> NDArray[np.uint8]:
    """`render_chip` for a scene read in place: the remote object must still be the one ingested."""
    href = payload.scene_path
    path = gdal_path(href)
    with remote_gdal_env(), _open(path) as ds:
        if remote_scene_id(href, None, _structure(ds)) != payload.scene_id:
            raise SceneError(f"source scene {href} changed since it was ingested (ETag, size or time differs)")
        return _payload_pixels(ds, payload, href, lambda exc: _gdal_detail(exc, path))


def _payload_pixels(
    ds: Any, payload: ChipPayload, name: str, detail: Callable[[BaseException], str]
) -> NDArray[np.uint8]:
    """The chip's pixels from an open scene, with the bands and stretch its payload records."""
    bands = list(payload.bands)
    if len(bands) != 3 or not all(1 <= b <= ds.count for b in bands):
        raise SceneError(f"payload bands {bands} do not fit {name} ({ds.count} bands)")
    try:
        pixels, _ = read_window(ds, payload.window, bands, payload.chip_size, payload.stretch)
    except (RasterioError, OSError) as exc:
        raise SceneError(f"cannot read window {payload.window} of {name}: {detail(exc)}") from exc
    return pixels
