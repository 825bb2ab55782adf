"""Where scenes come from besides local files: remote rasters read in place and STAC.

- `source`: `SourcePath`, a `Path` that carries a scene's href (a URL or a GDAL /vsi path), its STAC
  origin and the area to chip; `open_scene` and the ingest stages take it wherever they take a path.
- `remote`: http(s) and /vsi hrefs: the GDAL path (`/vsicurl/`), and the scene id of a remote file,
  made without downloading it.
- `stac`: STAC Items, ItemCollections, Collections and Catalogs (pystac) and STAC API searches
  (pystac-client) → one `SourcePath` per Item, its raster asset chosen by `choose_asset`.

This package root imports nothing heavy: `geosearch.tilers` imports `source` and `remote`.
"""

from geosearch.sources.source import BBox, SourcePath, source_path

__all__ = ["BBox", "SourcePath", "source_path"]
