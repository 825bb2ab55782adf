"""GeoTIFF scenes -> georeferenced 224-px RGB chips, read through windows only.

`open_scene` validates a raster and returns a `Scene`; `Scene.windows()` lists chip bounds
(cheap, TorchGeo-sampler style), `Scene.read()` reads pixels for one of them, `Scene.payload()`
georeferences it, and `render_chip()` re-reads a stored chip from its payload.
"""

from geosearch.tilers.options import Chip, ChipSpec, TileOptions
from geosearch.tilers.reader import Scene, open_scene, read_window, render_chip

__all__ = ["Chip", "ChipSpec", "Scene", "TileOptions", "open_scene", "read_window", "render_chip"]
