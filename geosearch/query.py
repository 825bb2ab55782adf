"""Parsing and validation of search parameters: the one parser of each, shared by the API, the CLI,
``/ogc`` and the store (`ChipStore` validates its bbox and datetime arguments with these very functions).

Pure functions: strings in, validated values out, `InvalidInput` with a reason otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import overload

from geosearch.errors import InvalidInput

BBox = tuple[float, float, float, float]
Interval = tuple[str | None, str | None]
"""(start, end) of a datetime filter, both inclusive, as `parse_datetime` writes them; None: open."""
GsdRange = tuple[float | None, float | None]

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000


@overload
def parse_bbox(value: None) -> None: ...
@overload
def parse_bbox(value: str | Sequence[float]) -> BBox: ...
def parse_bbox(value: str | Sequence[float] | None) -> BBox | None:
    """The one bbox parser, used by the API, the CLI, ``/ogc`` and `ChipStore` alike.

    ``minx,miny,maxx,maxy`` as text, or 4 numbers: WGS84 lon/lat, west > east crosses the antimeridian
    (as in STAC). None stays None.

    Raises:
        InvalidInput: not 4 finite numbers, a longitude outside ±180, a latitude outside ±90, or
            miny north of maxy.
    """
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
        raise InvalidInput(f"bbox values must be finite numbers, got {value!r}")
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


DATETIME_SYNTAX = (
    "an RFC 3339 date-time (2022-03-10T12:00:00Z) or a date (2022-03-10), or an interval start/end "
    "of them with '..' or nothing for an open end"
)
_OPEN = ("", "..")
_DATE_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<time>\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?P<zone>[Zz]|[+-]\d{2}:\d{2})?)?"
)
_LAST_OF_DAY = timedelta(days=1, microseconds=-1)


def _moment(text: str, *, end: bool) -> datetime:
    """One end of an interval as an aware UTC datetime (the meaning is `parse_datetime`'s)."""
    match = _DATE_TIME.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"datetime must be {DATETIME_SYNTAX}; got {text!r}")
    date, time, zone = match.group("date", "time", "zone")
    try:
        if time is None:  # a date: the whole UTC day
            day = datetime.fromisoformat(date).replace(tzinfo=UTC)
            return day + _LAST_OF_DAY if end else day
        if zone is None or zone in ("Z", "z"):
            tz = UTC
        else:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError(f"offset {zone}")
            tz = timezone((-1 if zone[0] == "-" else 1) * timedelta(hours=hours, minutes=minutes))
        # fromisoformat reads the fraction (any number of digits, cut to microseconds) and checks the
        # calendar and clock; the regex above has already kept it to RFC 3339's shape.
        return datetime.fromisoformat(f"{date}T{time}").replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(f"datetime {text!r} is not a valid date or time") from None


def _utc_text(moment: datetime) -> str:
    """The one written form of an interval end: UTC, microseconds, ``Z`` (what every engine is sent)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_datetime(value: str | Sequence[str | None] | None) -> Interval | None:
    """The one datetime-filter parser, used by the API, the CLI, ``/ogc`` and `ChipStore.search` alike.

    The text form is STAC API's and OGC API - Features' ``datetime``: one value, or ``start/end`` with
    ``..`` or nothing for an open end (one end at most). A value is either

    - an RFC 3339 date-time (section 5.6): ``T`` or ``t`` (or a space) between date and time, any
      fraction of a second (cut to microseconds, the resolution of stored times), and a ``Z``, ``z`` or
      ``±HH:MM`` offset; the instant it names. A date-time without an offset is taken as UTC, as the
      acquisition times read from GeoTIFF tags are (an extension: RFC 3339 requires the offset); or
    - a date, ``YYYY-MM-DD`` (an extension: STAC and OGC accept date-times only): the whole UTC day,
      as ISO 8601 has a calendar date denote its day and as pystac-client expands a date before it
      sends one. As a start it is the day's first instant, as an end its last (23:59:59.999999), and
      alone the day itself: ``2022-01-01/2022-03-10`` keeps every chip taken on 10 March.

    Both ends are inclusive: a chip matches when its time lies in the closed interval, so a single
    date-time keeps the chips taken at exactly that instant. The pair form, ``(start, end)`` with None
    (or ``..``) for an open end, is the same grammar without the ``/``; it alone may leave both ends
    open: ``(None, None)`` keeps every chip that has a datetime.

    Returns:
        None for None or blank text (no filter), else ``(start, end)`` written as UTC RFC 3339 with
        microseconds and ``Z`` (``2022-03-10T23:59:59.999999Z``), None for an open end. Parsing that
        again gives it back unchanged.

    Raises:
        InvalidInput: a value that is none of the above, an impossible date, time or offset, both ends
            of a text interval open, or a start after the end.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        start_text, slash, end_text = text.partition("/")
        if not slash:
            end_text = start_text  # one instant, or one whole day
        elif "/" in end_text:
            raise InvalidInput(f"datetime must be {DATETIME_SYNTAX}; got {value!r}")
        elif start_text.strip() in _OPEN and end_text.strip() in _OPEN:
            raise InvalidInput("datetime interval must have at least one closed end")
        ends: tuple[str | None, str | None] = (start_text, end_text)
    else:
        pair = tuple(value)
        if len(pair) != 2 or not all(part is None or isinstance(part, str) for part in pair):
            raise InvalidInput(f"a datetime pair must be (start, end), each text or None; got {value!r}")
        ends = (pair[0], pair[1])
    start = None if ends[0] is None or ends[0].strip() in _OPEN else _moment(ends[0], end=False)
    end = None if ends[1] is None or ends[1].strip() in _OPEN else _moment(ends[1], end=True)
    if start is not None and end is not None and start > end:
        raise InvalidInput(f"datetime interval starts after it ends: {value!r}")
    return (None if start is None else _utc_text(start), None if end is None else _utc_text(end))


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
