"""Bounding-box arithmetic that keeps geo filters exact on chip footprints.

Qdrant's geo filters test one point per chip (its `centre`), but a user's box must match every chip whose
*footprint* touches it. So the engine filters centres with a box grown by the largest footprint
half-extent ever stored (a superset), and shapely then keeps only true intersections.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry import box as shapely_box
from shapely.geometry import shape

BBox = tuple[float, float, float, float]
"""minx (west), miny (south), maxx (east), maxy (north) in lon/lat; west > east crosses the antimeridian.
Boxes from users are parsed and checked by `geosearch.query.parse_bbox` (the store calls it too)."""

# Float slack added to the centre margin so a footprint vertex exactly on a box edge is never lost.
_EPS = 1e-9


def split_antimeridian(bbox: BBox) -> list[BBox]:
    """A box with west > east (STAC convention) is two ordinary boxes, one each side of ±180."""
    west, south, east, north = bbox
    if west <= east:
        return [bbox]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]


_POLE = 90.0 - 1e-6


def centre_boxes(boxes: Sequence[BBox], margin_lon: float, margin_lat: float) -> list[BBox]:
    """Grow each box by the footprint margin so that every chip touching it has its centre inside.

    Growth past ±180 wraps to the other side as an extra box; every result has west <= east.
    """
    out: list[BBox] = []
    mlon, mlat = margin_lon + _EPS, margin_lat + _EPS
    for west, south, east, north in boxes:
        # Qdrant's geo box matches nothing when a side lies exactly on a pole or spans -180..180
        # (measured on qdrant-edge 0.9), so poles are pulled in by ~0.1 m and the globe is two halves.
        s, n = max(-_POLE, south - mlat), min(_POLE, north + mlat)
        w, e = west - mlon, east + mlon
        if e - w >= 360.0:
            out.extend([(-180.0, s, 0.0, n), (0.0, s, 180.0, n)])
            continue
        if w < -180.0:
            out.append((w + 360.0, s, 180.0, n))
            w = -180.0
        if e > 180.0:
            out.append((-180.0, s, e - 360.0, n))
            e = 180.0
        out.append((w, s, e, n))
    return out


CELL_LEVELS: tuple[tuple[float, int], ...] = ((1.0, 0), (0.1, 1_000_000))
"""(cell size in degrees, id offset): every chip stores the id of its centre's cell at each level in
the integer-indexed payload field `cell`. A box's cells give the engine a filter whose posting lists
hold little more than the box's matches (Qdrant's own geo-box estimate is a much looser upper bound),
so small boxes need no exact count, and exact search walks ~the matches only."""
CELL_LEVELS_META = [list(level) for level in CELL_LEVELS]
"""CELL_LEVELS as a collection records it in its metadata (JSON), to tell whether its chips carry `cell`."""
MAX_CELLS = 4096
"""Most cells one filter lists; a larger box is covered at the coarse level only (or not at all)."""


def _cell_xy(lon: float, lat: float, size: float) -> tuple[int, int]:
    return math.floor((lon + 180.0) / size), math.floor((lat + 90.0) / size)


def _cell_id(x: int, y: int, size: float, offset: int) -> int:
    return offset + y * (round(360.0 / size) + 1) + x


def centre_cells(lon: float, lat: float) -> list[int]:
    """The cell ids of a centre at every level (the chip's `cell` payload)."""
    return [_cell_id(*_cell_xy(lon, lat, size), size, offset) for size, offset in CELL_LEVELS]


def _meeting(box: BBox, size: float) -> tuple[int, int, int, int]:
    """Index range (x0, y0, x1, y1) of the cells a box meets."""
    west, south, east, north = box
    return (*_cell_xy(west, south, size), *_cell_xy(east, north, size))


def _inside(box: BBox, size: float) -> tuple[int, int, int, int]:
    """Index range of the cells lying wholly inside a box (empty when x0 > x1 or y0 > y1)."""
    west, south, east, north = box
    return (
        math.ceil((west + 180.0) / size + 1e-9),
        math.ceil((south + 90.0) / size + 1e-9),
        math.floor((east + 180.0) / size - 1e-9) - 1,
        math.floor((north + 90.0) / size - 1e-9) - 1,
    )


def _area(x0: int, y0: int, x1: int, y1: int) -> int:
    return max(0, x1 - x0 + 1) * max(0, y1 - y0 + 1)


def _ids(rect: tuple[int, int, int, int], size: float, offset: int, hole: tuple[int, int, int, int]) -> set[int]:
    """Ids of the cells in `rect` but not in `hole` (both inclusive index ranges)."""
    x0, y0, x1, y1 = rect
    hx0, hy0, hx1, hy1 = hole
    out: set[int] = set()
    for y in range(y0, y1 + 1):
        if hy0 <= y <= hy1 and hx0 <= hx1:
            xs: Iterable[int] = (*range(x0, min(hx0, x1 + 1)), *range(max(hx1 + 1, x0), x1 + 1))
        else:
            xs = range(x0, x1 + 1)
        out.update(_cell_id(x, y, size, offset) for x in xs)
    return out


_NO_HOLE = (0, 0, -1, -1)


def box_cells(boxes: Sequence[BBox]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(cover, inner): cells holding every centre inside a box, and those of them lying wholly inside one.

    The cover is the coarse cells wholly inside a box plus fine cells for the rest, so it holds little
    more than the box's matches (far fewer extra centres than the whole coarse cells the box meets).
    Fine cells also overlap the inner block's outer ring: a centre on a coarse edge is covered whichever
    way floating point rounds its two cell indices. Beyond MAX_CELLS the cover is the coarse cells the
    boxes meet; ((), ()) when even those are too many. Each box has west <= east.
    """
    (coarse, coarse_offset), (fine, fine_offset) = CELL_LEVELS
    ratio = round(coarse / fine)
    plans = []
    coarse_count = fine_count = 0
    for box in boxes:
        block = _inside(box, coarse)  # empty ranges give empty holes and areas below
        bx0, by0, bx1, by1 = block
        hole = (bx0 * ratio + 1, by0 * ratio + 1, (bx1 + 1) * ratio - 2, (by1 + 1) * ratio - 2)  # block less a ring
        block_fine = (bx0 * ratio, by0 * ratio, (bx1 + 1) * ratio - 1, (by1 + 1) * ratio - 1)
        plans.append((box, block, hole, block_fine))
        coarse_count += _area(*_meeting(box, coarse))
        fine_count += _area(*block) + _area(*_meeting(box, fine)) - _area(*hole)
    fine_fits = fine_count <= MAX_CELLS
    if not fine_fits and coarse_count > MAX_CELLS:
        return (), ()
    cover: set[int] = set()
    inner: set[int] = set()
    for box, block, hole, block_fine in plans:
        whole = _ids(block, coarse, coarse_offset, _NO_HOLE)
        inner |= whole
        if fine_fits:
            cover |= whole | _ids(_meeting(box, fine), fine, fine_offset, hole)
            # fine cells inside the box but outside the coarse block: the lower bound counts a centre once
            inner |= _ids(_inside(box, fine), fine, fine_offset, block_fine)
        else:
            cover |= _ids(_meeting(box, coarse), coarse, coarse_offset, _NO_HOLE)
    return tuple(sorted(cover)), tuple(sorted(inner))


def footprint_geometry(footprint: Mapping[str, Any]) -> shapely.Geometry:
    """GeoJSON footprint as shapely; one spanning more than 180° of longitude is taken to cross ±180
    and is unwrapped into 0..360 so it stays one small shape."""
    geom = shape(footprint)
    minx, _, maxx, _ = geom.bounds
    if maxx - minx > 180.0:

        def unwrap(coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            shifted = coords.copy()
            shifted[:, 0] = np.where(shifted[:, 0] < 0.0, shifted[:, 0] + 360.0, shifted[:, 0])
            return shifted

        geom = shapely.transform(geom, unwrap)
    return geom


def footprint_intersects(footprint: Mapping[str, Any], boxes: Sequence[BBox]) -> bool:
    """Exact test of a footprint against (already split) query boxes, in both longitude frames."""
    geom = footprint_geometry(footprint)
    for west, south, east, north in boxes:
        if geom.intersects(shapely_box(west, south, east, north)):
            return True
        if geom.bounds[2] > 180.0 and geom.intersects(shapely_box(west + 360.0, south, east + 360.0, north)):
            return True
    return False


def half_extent(footprint: Mapping[str, Any], centre_lon: float, centre_lat: float) -> tuple[float, float]:
    """Largest lon/lat distance from the stored centre to any footprint vertex (wrapping at ±180).

    Measured from the same centre Qdrant indexes, so the margin is exact whatever "centre" means.
    """
    coords = shapely.get_coordinates(shape(footprint))
    if len(coords) == 0:
        return (0.0, 0.0)
    dlon = (coords[:, 0] - centre_lon + 180.0) % 360.0 - 180.0
    dlat = coords[:, 1] - centre_lat
    return (float(np.max(np.abs(dlon))), float(np.max(np.abs(dlat))))
