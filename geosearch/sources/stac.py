"""STAC → scenes: one `SourcePath` per Item, for the raster asset `choose_asset` picks.

`stac_sources(href)` reads an Item, ItemCollection, Collection or Catalog (a file or a URL; catalogs are
walked recursively with pystac) or, when `href` is a STAC API landing page, searches it with pystac-client
(`collection`, `bbox`, `datetime`). On a static catalog the same three filters are applied to the Items.
Each Item becomes one scene: its asset's href read in place (see `sources.remote`), its id, collection,
datetime and self link recorded on every chip (`StacRef`). An Item with no usable asset becomes a scene
that fails with the reason, listing the Item's assets, so the other Items go on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from geosearch.errors import InvalidInput
from geosearch.schemas.chips import StacRef
from geosearch.sources.remote import is_url
from geosearch.sources.source import BBox, SourcePath, source_path

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF_MEDIA_TYPES = ("image/tiff; application=geotiff", "image/tiff", "image/geotiff")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
RGB_NAMES = {"red", "green", "blue"}
ITEM_SEARCH = "/item-search"
"""A STAC API that conforms to a class ending with this can be searched (`Client.search`)."""


def is_stac_href(href: str) -> bool:
    """A local or remote .json file (a STAC document), as opposed to a raster."""
    return href.lower().split("?", 1)[0].endswith(".json")


def _media(asset: Any) -> str:
    return " ".join((asset.media_type or "").lower().split()).replace("; ", ";").replace(";", "; ")


def _is_raster(asset: Any) -> bool:
    media = _media(asset)
    if media:
        return media.startswith("image/tiff") or media.startswith("image/geotiff") or media == "image/jp2"
    return str(asset.href).lower().split("?", 1)[0].endswith(RASTER_SUFFIXES)


def _eo_names(asset: Any) -> set[str]:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    names: set[str] = set()
    for band in bands:
        if isinstance(band, dict):
            names.add(str(band.get("common_name") or band.get("eo:common_name") or band.get("name") or "").lower())
    return names


def _rank(asset: Any) -> int | None:
    """Lower is better; None: not a raster GDAL can chip. Role visual first; then role data, RGB bands before
    unknown bands; then a COG media type; an asset whose eo:bands are known and are not RGB comes last."""
    if not _is_raster(asset):
        return None
    roles = set(asset.roles or [])
    if "visual" in roles:
        return 0
    names = _eo_names(asset) - {""}
    rgb = names >= RGB_NAMES
    cog = _media(asset) == COG_MEDIA_TYPE
    if "data" in roles:
        rank = 1 if rgb else 2 if cog else 3
    elif cog:
        rank = 4 if rgb else 5
    elif rgb:
        rank = 6
    elif roles & {"thumbnail", "overview", "metadata"}:
        return None
    else:
        rank = 7
    return rank + 10 if names and not rgb else rank


def _describe_assets(item: Any) -> str:
    parts = []
    for name, asset in item.assets.items():
        extra = ", ".join(filter(None, [asset.media_type or "", "/".join(asset.roles or [])]))
        parts.append(f"{name} ({extra})" if extra else name)
    return "; ".join(parts) or "none"


def choose_asset(item: Any, name: str | None = None) -> tuple[str, Any] | str:
    """The (name, asset) to chip: `name` when given, else the first RGB-ish raster (see `_rank`); or, when
    none fits, the one-line reason naming the Item's assets."""
    if name is not None:
        asset = item.assets.get(name)
        if asset is None:
            return f"STAC item {item.id} has no asset {name!r} (assets: {_describe_assets(item)})"
        return name, asset
    ranked = [(r, i, n, a) for i, (n, a) in enumerate(item.assets.items()) if (r := _rank(a)) is not None]
    if not ranked:
        return (
            f"STAC item {item.id} has no GeoTIFF/COG asset to chip (assets: {_describe_assets(item)}); "
            "name one with --asset"
        )
    _, _, best_name, best = min(ranked, key=lambda t: (t[0], t[1]))
    return best_name, best


def item_source(item: Any, asset_name: str | None = None, area: BBox | None = None) -> SourcePath:
    """The scene of one Item: its chosen asset's absolute href, with its `StacRef`."""
    props = item.properties
    when = props.get("datetime") or props.get("start_datetime")
    ref = StacRef(
        item=str(item.id),
        collection=item.collection_id,
        href=item.get_self_href(),
        datetime=str(when) if when else None,
    )
    chosen = choose_asset(item, asset_name)
    if isinstance(chosen, str):
        return source_path(f"stac-item:{item.id}", stac=ref, area=area, problem=chosen)
    _, asset = chosen
    href = asset.get_absolute_href() or asset.href
    if href.startswith("file://"):
        href = href[len("file://") :]
    if not is_url(href) and not href.startswith("/vsi"):
        href = os.path.abspath(href)
    return source_path(href, stac=ref, area=area)


def _read_json(href: str) -> dict[str, Any]:
    import pystac

    try:
        data = pystac.StacIO.default().read_json(href)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"cannot read STAC document {href}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # pystac wraps HTTP errors in its own types
        raise InvalidInput(f"cannot read STAC document {href}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{href} is not a STAC document (a JSON object)")
    return data


def _is_api(data: dict[str, Any]) -> bool:
    return any(str(c).endswith(ITEM_SEARCH) for c in data.get("conformsTo", []))


def _interval(text: str | None) -> tuple[datetime | None, datetime | None]:
    if not text:
        return None, None

    def parse(value: str) -> datetime | None:
        if value in ("", ".."):
            return None
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"--datetime takes an RFC 3339 time or interval (a/b, .. for open), got {text!r}"
            ) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    start, sep, end = text.partition("/")
    return parse(start), (parse(end) if sep else parse(start))


def _item_time(item: Any) -> tuple[datetime | None, datetime | None]:
    props = item.properties
    if item.datetime is not None:
        return item.datetime, item.datetime
    start, end = props.get("start_datetime"), props.get("end_datetime")
    return _interval(f"{start or '..'}/{end or '..'}")


def _keep(item: Any, collection: str | None, bbox: BBox | None, when: tuple[datetime | None, datetime | None]) -> bool:
    if collection is not None and item.collection_id != collection:
        return False
    if bbox is not None and item.bbox:
        w, s, e, n = item.bbox[0], item.bbox[1], item.bbox[-3 if len(item.bbox) == 6 else 2], item.bbox[-1]
        if w > bbox[2] or e < bbox[0] or s > bbox[3] or n < bbox[1]:
            return False
    lo, hi = when
    if lo is not None or hi is not None:
        start, end = _item_time(item)
        if lo is not None and end is not None and end.astimezone(UTC) < lo:
            return False
        if hi is not None and start is not None and start.astimezone(UTC) > hi:
            return False
    return True


def _static_items(href: str, data: dict[str, Any]) -> Iterable[Any]:
    import pystac

    kind = data.get("type")
    if kind == "Feature":
        return [pystac.Item.from_file(href)]
    if kind == "FeatureCollection":
        return list(pystac.ItemCollection.from_file(href))
    if kind in ("Catalog", "Collection"):
        root = pystac.read_file(href)
        if not isinstance(root, pystac.Catalog):
            raise InvalidInput(f"{href} is not a STAC Catalog or Collection")
        return list(root.get_items(recursive=True))
    raise InvalidInput(f"{href} is not a STAC Item, ItemCollection, Collection or Catalog (type {kind!r})")


def stac_sources(
    href: str,
    *,
    asset: str | None = None,
    collection: str | None = None,
    bbox: BBox | None = None,
    datetime: str | None = None,
) -> list[SourcePath]:
    """One scene per STAC Item under `href` (see the module docstring), in the order found.

    Raises:
        InvalidInput: `href` cannot be read or is not STAC, or a search fails.
    """
    if not is_url(href):
        href = os.path.abspath(os.path.expanduser(href))
        if not os.path.isfile(href):
            raise InvalidInput(f"STAC document not found: {href}")
    data = _read_json(href)
    when = _interval(datetime)
    if _is_api(data):
        items = _search(href, collection, bbox, datetime)
    else:
        items = [i for i in _static_items(href, data) if _keep(i, collection, bbox, when)]
    return [item_source(item, asset, bbox) for item in items]


def _search(url: str, collection: str | None, bbox: BBox | None, datetime: str | None) -> list[Any]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(url)
        search = client.search(
            collections=[collection] if collection else None, bbox=list(bbox) if bbox else None, datetime=datetime
        )
        return list(search.items())
    except APIError as exc:
        raise InvalidInput(f"STAC API search at {url} failed: {' '.join(str(exc).split())}") from None
