"""Parsing and validation of search parameters, shared by the API and the CLI.

Pure functions: strings in, validated values out, `InvalidInput` with a reason otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from geosearch.errors import InvalidInput

BBox = tuple[float, float, float, float]
Interval = tuple[str | None, str | None]
GsdRange = tuple[float | None, float | None]

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000


def parse_bbox(value: str | Sequence[float] | None) -> BBox | None:
    """Parse ``minx,miny,maxx,maxy`` (lon/lat, WGS84). ``minx > maxx`` crosses the antimeridian."""
    if value is None:
        return None
    parts: list[object] = list(value.split(",")) if isinstance(value, str) else list(value)
    if len(parts) != 4:
        raise InvalidInput(f"bbox must have 4 numbers minx,miny,maxx,maxy; got {len(parts)}")
    try:
        west, south, east, north = (float(p) for p in parts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"bbox values must be numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise InvalidInput("bbox values must be finite numbers")
    for name, lon in (("minx", west), ("maxx", east)):
        if not -180.0 <= lon <= 180.0:
            raise InvalidInput(f"bbox {name}={lon} is outside the longitude range -180..180")
    for name, lat in (("miny", south), ("maxy", north)):
        if not -90.0 <= lat <= 90.0:
            raise InvalidInput(f"bbox {name}={lat} is outside the latitude range -90..90")
    if south > north:
        raise InvalidInput(f"bbox miny={south} is north of maxy={north}")
    return (west, south, east, north)


def parse_limit(value: int | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if value is None:
        return default
    if value < 1:
        raise InvalidInput(f"limit must be at least 1, got {value}")
    return min(value, maximum)


def _instant(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"not an RFC 3339 date or datetime: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime(value: str | None) -> Interval | None:
    """Parse a STAC/OGC datetime: one instant, or ``start/end`` with ``..`` or empty for an open end."""
    if value is None or not value.strip():
        return None
    if "/" not in value:
        instant = _instant(value)
        return (instant, instant)
    start_text, _, end_text = value.partition("/")
    start = None if start_text.strip() in ("", "..") else _instant(start_text)
    end = None if end_text.strip() in ("", "..") else _instant(end_text)
    if start is None and end is None:
        raise InvalidInput("datetime interval must have at least one closed end")
    if start and end and start > end:
        raise InvalidInput(f"datetime interval starts after it ends: {value!r}")
    return (start, end)


GSD_SYNTAX = "min/max in metres per pixel, '..' for an open end (e.g. 0.5/2 or ../2)"


def _gsd_end(text: str, value: str) -> float | None:
    text = text.strip()
    if text in ("", ".."):
        return None
    try:
        end = float(text)
    except ValueError:
        raise InvalidInput(f"gsd range ends must be numbers or '..', got {text!r} in {value!r}") from None
    if not math.isfinite(end) or end < 0:
        raise InvalidInput(f"gsd range ends must be finite and not negative, got {text!r} in {value!r}")
    return end


def parse_gsd(value: str | None) -> GsdRange | None:
    """Parse a chip ground-resolution range ``min/max`` (inclusive), with ``..`` or empty for an open end.

    Always a range: a chip's gsd is whatever its scene and scale give (0.597..., 2.389...), so one
    exact value would match nothing.
    """
    if value is None or not value.strip():
        return None
    if "/" not in value:
        raise InvalidInput(f"gsd must be a range {GSD_SYNTAX}; got {value!r}")
    start_text, _, end_text = value.partition("/")
    start, end = _gsd_end(start_text, value), _gsd_end(end_text, value)
    if start is None and end is None:
        raise InvalidInput(f"gsd range must have at least one closed end: {GSD_SYNTAX}")
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"gsd range starts above its end: {value!r}")
    return (start, end)


def parse_text(value: str | None) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidInput("query text q must not be empty")
    if len(text) > 1000:
        raise InvalidInput("query text q is longer than 1000 characters")
    return text
