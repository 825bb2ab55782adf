"""`expand_paths`: the files, folders, glob patterns, URLs and STAC documents a user names → the scenes to
ingest.

Local rasters come back as `Path`s; URLs of rasters (http(s), read in place through GDAL's /vsicurl/),
GDAL virtual paths (/vsis3/ ...), the Items of STAC documents (a ``.json`` file or URL, or `stac=` for a
catalog or a STAC API search) and, with `area`, every scene, as `geosearch.sources.SourcePath`s.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from geosearch.errors import InvalidInput
from geosearch.sources.remote import is_remote
from geosearch.sources.source import BBox, SourcePath, source_path

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
"""File suffixes (any case) picked up when a folder is searched."""


def expand_paths(
    paths: Sequence[str | Path],
    *,
    stac: str | None = None,
    collection: str | None = None,
    asset: str | None = None,
    area: BBox | None = None,
    datetime: str | None = None,
) -> list[Path]:
    """Files, folders (searched recursively for rasters), glob patterns, raster URLs and STAC documents, in
    a stable order; then the Items of `stac` (a STAC document or API, filtered by `collection`, `area` and
    `datetime`; see `geosearch.sources.stac`). `asset` names the asset of every STAC Item; `area`, a lon/lat
    box, limits every scene to the chips that meet it.

    A path that matches nothing is returned as is, so it is reported as a failed scene with the
    reason rather than silently ignored. The same file named twice (by any route) is returned once.

    Raises:
        InvalidInput: nothing at all was found (e.g. only empty folders or globs matching nothing), or a
            STAC document cannot be read.
    """
    if stac is None and (collection is not None or datetime is not None):
        raise InvalidInput("--collection and --datetime filter a STAC search: give --stac URL_OR_FILE too")
    found: list[Path] = []
    for item in paths:
        found.extend(_expand_one(item, asset, area))
    if stac is not None:
        from geosearch.sources.stac import stac_sources

        found.extend(stac_sources(stac, asset=asset, collection=collection, bbox=area, datetime=datetime))
    if not found:
        raise InvalidInput("no raster files found in the given paths")
    unique: dict[str, Path] = {}
    for path in found:
        key = str(path) if isinstance(path, SourcePath) and (path.problem or is_remote(str(path))) else None
        unique.setdefault(key or str(path.resolve()), path)
    return list(unique.values())


def _expand_one(item: str | Path, asset: str | None, area: BBox | None) -> list[Path]:
    if isinstance(item, SourcePath):
        return [item]  # already expanded (e.g. by the command, then again by `ingest`)
    text = str(item)
    if text.lower().split("?", 1)[0].endswith(".json"):
        from geosearch.sources.stac import stac_sources

        return list(stac_sources(text, asset=asset, bbox=area))
    if is_remote(text):
        return [source_path(text, area=area)]
    return [_with_area(p, area) for p in _expand_local(text)]


def _with_area(path: Path, area: BBox | None) -> Path:
    return path if area is None else source_path(str(path), area=area)


def _expand_local(text: str) -> list[Path]:
    path = Path(text).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
    if glob.has_magic(text):
        return sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    return [path]
