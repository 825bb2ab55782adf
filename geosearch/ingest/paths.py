"""`expand_paths`: the files, folders and glob patterns a user names → the raster files to ingest."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from geosearch.errors import InvalidInput

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
"""File suffixes (any case) picked up when a folder is searched."""


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files, folders (searched recursively for rasters) and glob patterns, in a stable order.

    A path that matches nothing is returned as is, so it is reported as a failed scene with the
    reason rather than silently ignored. The same file named twice (by any route) is returned once.

    Raises:
        InvalidInput: nothing at all was found (e.g. only empty folders or globs matching nothing).
    """
    found: list[Path] = []
    for item in paths:
        found.extend(_expand_one(item))
    if not found:
        raise InvalidInput("no raster files found in the given paths")
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(str(path.resolve()), path)
    return list(unique.values())


def _expand_one(item: str | Path) -> list[Path]:
    text = str(item)
    path = Path(text).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
    if glob.has_magic(text):
        return sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    return [path]
