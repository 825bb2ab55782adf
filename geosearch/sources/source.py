"""`SourcePath`: a scene to ingest with what a bare path cannot say (its URL, its STAC Item, the area).

It is a `Path` so that it travels wherever the ingest pipeline takes one (`expand_paths`, `ingest`,
`open_scene`), but `str()` and `os.fspath()` give its href unchanged: a URL keeps its ``//`` and query
string, which `Path` would collapse.
"""

from __future__ import annotations

from pathlib import PosixPath

from geosearch.schemas.chips import StacRef

BBox = tuple[float, float, float, float]
"""(west, south, east, north) in degrees, EPSG:4326."""


class SourcePath(PosixPath):
    """A scene's href with its STAC origin (`stac`), the area to chip (`area`) and, when the scene
    cannot be ingested at all (e.g. its Item has no raster asset), the one-line reason (`problem`)."""

    href: str = ""
    stac: StacRef | None = None
    area: BBox | None = None
    problem: str | None = None

    def __str__(self) -> str:
        return self.href or super().__str__()

    def __fspath__(self) -> str:
        return self.href or super().__fspath__()

    def __repr__(self) -> str:
        return f"SourcePath({str(self)!r})"


def source_path(
    href: str, *, stac: StacRef | None = None, area: BBox | None = None, problem: str | None = None
) -> SourcePath:
    """A `SourcePath` for `href` (a local path, an http(s) URL or a GDAL /vsi path)."""
    path = SourcePath(href)
    path.href = href
    path.stac = stac
    path.area = area
    path.problem = problem
    return path
