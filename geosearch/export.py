"""Export the caption layer, or a search result, to a GIS file: GeoPackage, FlatGeobuf or GeoParquet.

    report = export(engine, "captions.gpkg", ExportQuery(bbox=(w, s, e, n)))
    report = export(engine, "roads.parquet", ExportQuery(q="a road through the mountains", limit=200))

One row per chip: ``id``, ``scene``, ``caption``, ``datetime`` (UTC), ``gsd`` (m/px), plus ``score`` and
``relevance`` for a search (``q``), and the chip footprint as a Polygon in EPSG:4326 (lon, lat).
Without ``q`` every chip (inside ``bbox``) is written, paged through the store in id order; with ``q``
the ``limit`` best chips, best first. The format follows the file extension: ``.gpkg`` and ``.fgb`` are
written by GDAL through pyogrio, ``.parquet`` as GeoParquet 1.1 with pyarrow (the GDAL that pyogrio
bundles has no Parquet driver). The layer is assembled in memory (about 1 KB per chip) before writing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import shape

from geosearch.engine import Engine
from geosearch.errors import InvalidInput, StoreError
from geosearch.query import BBox
from geosearch.schemas import CaptionsQuery, SearchQuery
from geosearch.store import Hit

FORMATS: dict[str, str] = {".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".parquet": "GeoParquet"}
"""File extension → format written."""
LAYER = "chips"
PAGE = 1000
"""Chips read from the store per page while exporting the whole caption layer."""
DEFAULT_SEARCH_LIMIT = 100
MAX_SEARCH_LIMIT = 10_000


@dataclass(frozen=True)
class ExportQuery:
    """What to export: every chip (optionally in `bbox`, at most `limit`), or the `limit` best for `q`."""

    bbox: BBox | None = None
    q: str | None = None
    limit: int | None = None
    """Chips to write: with `q` default 100, at most 10000; without, default all."""


@dataclass
class ExportReport:
    path: Path
    format: str
    count: int


@dataclass
class Columns:
    """The layer as columns: WKB footprints and one array per attribute field."""

    geometry: list[bytes] = field(default_factory=list)
    fields: dict[str, list[Any]] = field(default_factory=dict)


def export_format(path: str | os.PathLike[str]) -> str:
    """The format a path's extension names; InvalidInput for any other extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"cannot export to {suffix or 'a file without extension'!r}: use {', '.join(FORMATS)}")
    return FORMATS[suffix]


def _check(query: ExportQuery) -> None:
    if query.q is not None and not query.q.strip():
        raise InvalidInput("query text q must not be empty")
    if query.limit is not None and query.limit < 1:
        raise InvalidInput(f"limit must be at least 1, got {query.limit}")
    if query.q is not None and query.limit is not None and query.limit > MAX_SEARCH_LIMIT:
        raise InvalidInput(f"limit must be at most {MAX_SEARCH_LIMIT} with q, got {query.limit}")


def select_hits(engine: Engine, query: ExportQuery) -> list[Hit]:
    """The chips to export: the search result for `q`, else every chip in `bbox` (paged, id order)."""
    _check(query)
    if query.q is not None:
        limit = query.limit or DEFAULT_SEARCH_LIMIT
        return engine.search(SearchQuery(q=query.q.strip(), bbox=query.bbox, limit=limit))
    hits: list[Hit] = []
    offset: str | None = None
    while query.limit is None or len(hits) < query.limit:
        size = PAGE if query.limit is None else min(PAGE, query.limit - len(hits))
        page, offset = engine.page_chips(CaptionsQuery(bbox=query.bbox, limit=size, offset=offset))
        hits.extend(page)
        if offset is None:
            break
    return hits


def _utc(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_columns(hits: list[Hit], *, search: bool) -> Columns:
    """The hits as columns: id, scene, caption, datetime, gsd (and score, relevance for a search)."""
    cols = Columns()
    names = ["id", "scene", "caption", "datetime", "gsd"] + (["score", "relevance"] if search else [])
    cols.fields = {name: [] for name in names}
    for hit in hits:
        p = hit.payload
        cols.geometry.append(shapely.to_wkb(shape(p.footprint)))
        row: dict[str, Any] = {
            "id": hit.id,
            "scene": p.scene_id,
            "caption": p.caption,
            "datetime": _utc(p.datetime),
            "gsd": p.gsd,
            "score": hit.score,
            "relevance": hit.relevance,
        }
        for name in names:
            cols.fields[name].append(row[name])
    return cols


def export(engine: Engine, path: str | os.PathLike[str], query: ExportQuery = ExportQuery()) -> ExportReport:
    """Write the chips `query` selects to `path`, replacing any file there.

    Raises:
        InvalidInput: an unknown extension, an empty q, a bad limit or bbox, a missing output folder.
        StoreError: the file cannot be written.
    """
    fmt = export_format(path)
    out = Path(path)
    if not out.parent.is_dir():
        raise InvalidInput(f"output folder {str(out.parent)!r} does not exist")
    cols = to_columns(select_hits(engine, query), search=query.q is not None)
    if out.exists():
        out.unlink()
    try:
        if fmt == "GeoParquet":
            write_geoparquet(out, cols)
        else:
            write_ogr(out, cols, fmt)
    except OSError as exc:
        raise StoreError(f"cannot write {str(out)!r}: {exc}") from exc
    return ExportReport(path=out, format=fmt, count=len(cols.geometry))


# -- writers -------------------------------------------------------------------------------------
def _ogr_array(name: str, values: list[Any]) -> tuple[NDArray[Any], NDArray[np.bool_] | None]:
    """One OGR field: its values and a null mask (None when no value is missing)."""
    mask = np.array([v is None for v in values], dtype=bool)
    if name == "datetime":
        array = np.array([np.datetime64(v.replace(tzinfo=None), "ms") if v else np.datetime64("NaT") for v in values])
        array = array.astype("datetime64[ms]")
    elif name in ("gsd", "score", "relevance"):
        array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    else:
        array = np.array(["" if v is None else v for v in values], dtype=object)
    return array, (mask if mask.any() else None)


def write_ogr(path: Path, cols: Columns, driver: str) -> None:
    """A GeoPackage or FlatGeobuf layer through pyogrio (GDAL), in EPSG:4326."""
    from pyogrio.errors import DataSourceError, FieldError, GeometryError
    from pyogrio.raw import write

    names = list(cols.fields)
    arrays = [_ogr_array(name, cols.fields[name]) for name in names]
    try:
        write(
            str(path),
            np.array(cols.geometry, dtype=object),
            [a for a, _ in arrays],
            names,
            field_mask=[m for _, m in arrays],
            layer=LAYER,
            driver=driver,
            geometry_type="Polygon",
            crs="EPSG:4326",
            # GeoPackage 1.2, which every GDAL since 2.2 (and QGIS) reads without a warning; the bundled
            # GDAL would write 1.4, which older readers only "partially support".
            dataset_options={"VERSION": "1.2"} if driver == "GPKG" else None,
        )
    except (DataSourceError, FieldError, GeometryError) as exc:
        raise StoreError(f"GDAL cannot write {str(path)!r}: {exc}") from exc


def geoparquet_metadata(cols: Columns) -> dict[str, Any]:
    """The ``geo`` file metadata of GeoParquet 1.1: WKB Polygons in EPSG:4326 (lon, lat) with their bbox."""
    from pyproj import CRS

    bounds = shapely.total_bounds(shapely.from_wkb(cols.geometry)) if cols.geometry else None
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "crs": CRS.from_epsg(4326).to_json_dict(),
    }
    if bounds is not None:
        column["bbox"] = [float(b) for b in bounds]
    column["covering"] = {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def write_geoparquet(path: Path, cols: Columns) -> None:
    """A GeoParquet 1.1 file with pyarrow: the attribute columns, the WKB ``geometry`` column and its
    ``bbox`` covering column (row-group statistics for spatial filters), ZSTD-compressed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "datetime": pa.timestamp("ms", tz="UTC"),
        "gsd": pa.float64(),
        "score": pa.float64(),
        "relevance": pa.float64(),
    }
    arrays = [pa.array(values, type=types.get(name, pa.string())) for name, values in cols.fields.items()]
    arrays.append(pa.array(cols.geometry, type=pa.binary()))
    bounds = shapely.bounds(shapely.from_wkb(cols.geometry)) if cols.geometry else np.empty((0, 4))
    corners = ["xmin", "ymin", "xmax", "ymax"]
    arrays.append(pa.StructArray.from_arrays([pa.array(bounds[:, i], pa.float64()) for i in range(4)], names=corners))
    table = pa.Table.from_arrays(arrays, names=[*cols.fields, "geometry", "bbox"])
    metadata = {b"geo": json.dumps(geoparquet_metadata(cols)).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), str(path), compression="zstd", row_group_size=PAGE)
