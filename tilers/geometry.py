"""Pure georeferencing maths: pixel windows -> WGS84 footprints, centres and ground sampling distance.

No file I/O here: callers pass the affine transform and a pyproj transformer, so every function
is testable with plain numbers.

Antimeridian: a footprint that crosses 180° is returned as ONE polygon whose longitudes are
unwrapped to be continuous (the eastern side carries lon > 180, e.g. 179.9 -> 180.1) rather than
split into a MultiPolygon as RFC 7946 §3.1.9 recommends; this keeps `ChipPayload.footprint` a
Polygon and never yields a polygon that spans the globe the wrong way round. Centres are always
normalised to [-180, 180) (Qdrant's geo index needs that) and bounding boxes follow RFC 7946
§5.2 (west > east when crossing).
"""

from __future__ import annotations

import math

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS, Geod, Transformer

from geosearch.schemas.chips import Window

_GEOD = Geod(ellps="WGS84")

LonLat = tuple[float, float]


def make_transformer(crs: CRS) -> Transformer:
    """Native CRS -> lon/lat (always_xy so order is lon, lat whatever the CRS axis order)."""
    return Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)


def pixel_size(transform: Affine) -> tuple[float, float]:
    """Size of one pixel along its column and row axes in CRS units (handles rotated grids)."""
    return math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)


def native_resolution_m(transform: Affine, crs: CRS, centre_lonlat: LonLat) -> tuple[float, float]:
    """Pixel size in metres along x and y.

    Projected CRSs use their linear unit (so a Web Mercator '0.6 m' scene is 0.6 m, as every
    tiling tool reports it, not its smaller true ground distance); geographic CRSs convert degrees
    on the WGS84 ellipsoid at the scene centre latitude.
    """
    sx, sy = pixel_size(transform)
    if crs.is_geographic:
        lon, lat = centre_lonlat
        lat = min(max(lat, -89.0), 89.0)
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else math.pi / 180
        deg_x = math.degrees(sx * unit)
        deg_y = math.degrees(sy * unit)
        _, _, gx = _GEOD.inv(lon - deg_x / 2, lat, lon + deg_x / 2, lat)
        _, _, gy = _GEOD.inv(lon, lat - deg_y / 2, lon, lat + deg_y / 2)
        return float(gx), float(gy)
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return sx * factor, sy * factor


def ring_pixels(window: Window, points_per_edge: int) -> NDArray[np.float64]:
    """Closed ring (N, 2) of (col, row) pixel-corner coordinates around a window, densified."""
    t = np.linspace(0.0, 1.0, points_per_edge, endpoint=False)
    c0, r0 = float(window.col), float(window.row)
    c1, r1 = c0 + window.width, r0 + window.height
    top = np.column_stack([c0 + t * (c1 - c0), np.full_like(t, r0)])
    right = np.column_stack([np.full_like(t, c1), r0 + t * (r1 - r0)])
    bottom = np.column_stack([c1 - t * (c1 - c0), np.full_like(t, r1)])
    left = np.column_stack([np.full_like(t, c0), r1 - t * (r1 - r0)])
    ring = np.vstack([top, right, bottom, left])
    return np.vstack([ring, ring[:1]])


def to_lonlat(
    transform: Affine, transformer: Transformer, cols: NDArray[np.float64], rows: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    xs = transform.c + cols * transform.a + rows * transform.b
    ys = transform.f + cols * transform.d + rows * transform.e
    lon, lat = transformer.transform(xs, ys, errcheck=True)
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def unwrap_lons(lons: NDArray[np.float64]) -> NDArray[np.float64]:
    """Make consecutive longitudes continuous across ±180, then shift so the first lies in [-180, 180)."""
    out = np.unwrap(lons, discont=180.0, period=360.0)
    shift = 360.0 * math.floor((out[0] + 180.0) / 360.0)
    return np.asarray(out - shift, dtype=np.float64)


def normalise_lon(lon: float) -> float:
    return ((lon + 180.0) % 360.0) - 180.0


def footprint(
    transform: Affine, transformer: Transformer, window: Window, points_per_edge: int = 8
) -> list[LonLat]:
    """Closed, counter-clockwise (RFC 7946) lon/lat ring of a pixel window, edges densified."""
    px = ring_pixels(window, points_per_edge)
    lon, lat = to_lonlat(transform, transformer, px[:, 0], px[:, 1])
    lon = unwrap_lons(lon)
    lon[-1], lat[-1] = lon[0], lat[0]  # unwrap's running sum can leave the closing point 1e-14 off
    signed_area = float(np.sum(lon[:-1] * lat[1:] - lon[1:] * lat[:-1]))
    if signed_area < 0:
        lon, lat = lon[::-1], lat[::-1]
    return [(float(x), float(y)) for x, y in zip(lon, lat, strict=True)]


def centre(transform: Affine, transformer: Transformer, window: Window) -> LonLat:
    """Lon/lat of the window's centre pixel position, longitude normalised to [-180, 180)."""
    cols = np.array([window.col + window.width / 2.0])
    rows = np.array([window.row + window.height / 2.0])
    lon, lat = to_lonlat(transform, transformer, cols, rows)
    return normalise_lon(float(lon[0])), float(lat[0])


def ring_bbox(ring: list[LonLat]) -> tuple[float, float, float, float]:
    """RFC 7946 bbox of an unwrapped ring: west > east when it crosses the antimeridian."""
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    west, east = min(lons), max(lons)
    if east - west >= 360.0:
        return -180.0, min(lats), 180.0, max(lats)
    return normalise_lon(west), min(lats), (normalise_lon(east) if east > 180.0 else east), max(lats)
