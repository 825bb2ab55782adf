"""Query-string parsing for the OGC API – Features routes, as Litestar dependencies.

Every OGC route checks that the request names only the query parameters its API definition lists:
OGC API Features Part 1 requires a 400 for any other (/req/core/query-param-unknown), so a typo such as
``?bbbox=`` fails loudly instead of silently returning everything. Values are validated the same way
(/req/core/query-param-invalid): every problem is an `InvalidInput`, which the app maps to a 400.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from litestar import Request
from litestar.params import Parameter

from geosearch.api.limits import MAX_QUERY_CHARS, optional_text
from geosearch.api.ogc_items import DEFAULT_LIMIT, MAX_LIMIT, ItemsQuery
from geosearch.api.params import (
    BBOX_DOC,
    BBOX_EXAMPLES,
    DATETIME_DOC,
    DATETIME_EXAMPLES,
    GSD_DOC,
    GSD_EXAMPLES,
    GSD_PATTERN,
    NUMBER,
    Q_EXAMPLES,
    documented,
)
from geosearch.errors import InvalidInput
from geosearch.query import parse_bbox, parse_datetime, parse_gsd

Format = Literal["json", "html"]

FORMAT_PARAMS = frozenset({"f"})
ITEM_PARAMS = FORMAT_PARAMS
ITEMS_PARAMS = frozenset({"f", "limit", "bbox", "datetime", "q", "scene", "gsd", "offset"})
OGC_BBOX_PATTERN = rf"^{NUMBER}(,{NUMBER}){{3}}((,{NUMBER}){{2}})?$"
F_DOC = "response format: json (GeoJSON for features) or html; without it the Accept header decides"


def check_params(request: Request[Any, Any, Any], allowed: frozenset[str]) -> None:
    """Raise InvalidInput naming the first query parameter the route does not define."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise InvalidInput(f"unknown query parameter {unknown[0]!r}; this resource takes {', '.join(sorted(allowed))}")


def negotiate(request: Request[Any, Any, Any], f: str | None) -> Format:
    """HTML or JSON: ``f`` wins, else the Accept header (``text/html`` preferred to JSON gives HTML)."""
    if f is not None:
        if f.lower() in ("json", "geojson"):
            return "json"
        if f.lower() == "html":
            return "html"
        raise InvalidInput(f"f must be json or html, got {f!r}")
    best = request.accept.best_match(["application/json", "application/geo+json", "text/html"])
    return "html" if best == "text/html" else "json"


def format_dependency(allowed: frozenset[str]) -> Callable[..., Format]:
    """A dependency that rejects unknown parameters and picks the response format."""

    def provide_format(
        request: Request[Any, Any, Any],
        f: str | None = Parameter(default=None, description=F_DOC, schema_extra={"enum": ["json", "html"]}),
    ) -> Format:
        check_params(request, allowed)
        return negotiate(request, f)

    return provide_format


def parse_ogc_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    """A 2D bbox, or a 3D one (``minx,miny,minz,maxx,maxy,maxz``) whose heights are dropped."""
    if value is not None and value.count(",") == 5:
        parts = value.split(",")
        for name, height in (("minz", parts[2]), ("maxz", parts[5])):
            try:
                finite = math.isfinite(float(height))
            except ValueError:
                finite = False
            if not finite:
                raise InvalidInput(f"bbox {name}={height!r} is not a finite number")
        value = ",".join([parts[0], parts[1], parts[3], parts[4]])
    return parse_bbox(value)


def items_query(
    limit: int = Parameter(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"features per page (1 to {MAX_LIMIT})"
    ),
    bbox: str | None = documented(
        f"{BBOX_DOC} (CRS84); or minx,miny,minz,maxx,maxy,maxz", *BBOX_EXAMPLES, pattern=OGC_BBOX_PATTERN
    ),
    datetime: str | None = documented(
        f"{DATETIME_DOC}; chips of scenes without an acquisition time always match", *DATETIME_EXAMPLES
    ),
    q: str | None = documented(
        f"free text (at most {MAX_QUERY_CHARS} characters): rank the features by it",
        *Q_EXAMPLES,
        maxLength=MAX_QUERY_CHARS,
    ),
    scene: str | None = Parameter(default=None, description="only the chips of this scene id"),
    gsd: str | None = documented(GSD_DOC, *GSD_EXAMPLES, pattern=GSD_PATTERN),
    offset: str | None = Parameter(default=None, description="paging token: follow the response's next link"),
) -> ItemsQuery:
    """The items query (unknown parameters are rejected by the route's format dependency)."""
    return ItemsQuery(
        limit=limit,
        bbox=parse_ogc_bbox(bbox or None),  # an empty field of the HTML search form means "not given"
        datetime=parse_datetime(datetime),
        q=optional_text(q),
        scene=scene or None,
        gsd=parse_gsd(gsd),
        offset=offset or None,
    )
