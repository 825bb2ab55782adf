"""The chip payload stored with every vector in Qdrant."""

from __future__ import annotations

import msgspec


class Window(msgspec.Struct, frozen=True):
    """A pixel window in the scene's native (full-resolution) grid.

    With a target GSD coarser than the scene, a 224-px chip covers more than 224 native pixels:
    the window is always native, the chip is always `chip_size` square.
    """

    col: int
    row: int
    width: int
    height: int


class GeoPoint(msgspec.Struct, frozen=True):
    """A WGS84 point in the layout Qdrant's geo index expects."""

    lon: float
    lat: float


class ChipPayload(msgspec.Struct, kw_only=True):
    """Everything needed to find, draw and re-render one chip without opening the scene."""

    scene_id: str
    scene_path: str
    window: Window
    chip_size: int
    crs: str
    """Native CRS of the scene, as an authority string (``EPSG:32618``) or WKT when it has none."""
    footprint: dict[str, object]
    """GeoJSON Polygon in EPSG:4326, edges densified so projected footprints stay exact."""
    centre: GeoPoint
    gsd: float
    """Ground sampling distance of the chip as embedded, metres per pixel."""
    scale: int = 1
    """Factor of `gsd` over the scene's base GSD (1 = native or `--gsd`); multi-scale ingest mixes several."""
    valid_fraction: float
    padded: bool = False
    """True for an edge chip that extends past the scene and was padded (scene smaller than a chip)."""
    bands: list[int] = msgspec.field(default_factory=list)
    """1-based source band indexes used for R, G, B."""
    stretch: list[list[float]] | None = None
    """Per-band (low, high) rescale to uint8 used at ingest; None for uint8 scenes read as is."""
    caption: str | None = None
    datetime: str | None = None
    """Acquisition time of the scene (ISO 8601), when the file records one."""
    ingested_at: str = ""
    model_id: str = ""
    stac_item: str | None = None
    """Id of the STAC Item the scene came from (ingested from a STAC catalog or API search), else None."""
    stac_collection: str | None = None
    """Id of that Item's collection, when it names one."""
    stac_href: str | None = None
    """The Item's self link (where its JSON lives), when it has one."""


class StacRef(msgspec.Struct, frozen=True):
    """Where a scene came from in STAC: what each of its chips' payloads records (`ChipPayload.stac_*`)."""

    item: str
    collection: str | None = None
    href: str | None = None
    """The Item's self link."""
    datetime: str | None = None
    """The Item's datetime (or start_datetime), used when the raster records no acquisition time."""
