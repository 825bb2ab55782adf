"""Query-string parsing as Litestar dependencies (titiler style): handlers get validated objects."""

from __future__ import annotations

from litestar.params import Parameter

from geosearch.query import GSD_SYNTAX, parse_bbox, parse_datetime, parse_gsd, parse_limit, parse_text
from geosearch.schemas import CaptionsQuery, SearchQuery, SearchRequest

BBOX_DOC = "minx,miny,maxx,maxy in WGS84 lon/lat; minx > maxx crosses the antimeridian"
DATETIME_DOC = "RFC 3339 instant or interval start/end, '..' for an open end"
GSD_DOC = f"chip ground resolution range {GSD_SYNTAX}; chips of every scale rank together without it"


def search_query(
    q: str | None = None,
    bbox: str | None = Parameter(default=None, description=BBOX_DOC),
    limit: int | None = Parameter(default=None, description="hits to return (default 10, max 1000)"),
    scene: str | None = None,
    datetime: str | None = Parameter(default=None, description=DATETIME_DOC),
    gsd: str | None = Parameter(default=None, description=GSD_DOC),
) -> SearchQuery:
    return SearchQuery(
        q=parse_text(q),
        bbox=parse_bbox(bbox),
        limit=parse_limit(limit),
        scene=scene or None,
        datetime=parse_datetime(datetime),
        gsd=parse_gsd(gsd),
    )


def search_request_query(data: SearchRequest) -> SearchQuery:
    """Validate a POST body into the same `SearchQuery` the GET route builds."""
    from geosearch.errors import InvalidInput

    if (data.q is None) == (data.like is None):
        raise InvalidInput("give exactly one of q (text) or like (a chip id)")
    return SearchQuery(
        q=parse_text(data.q) if data.q is not None else None,
        like=data.like,
        bbox=parse_bbox(data.bbox),
        limit=parse_limit(data.limit),
        scene=data.scene,
        datetime=parse_datetime(data.datetime),
        gsd=parse_gsd(data.gsd),
    )


def captions_query(
    bbox: str | None = Parameter(default=None, description=BBOX_DOC),
    limit: int | None = Parameter(default=None, description="features per page (default 100, max 1000)"),
    offset: str | None = Parameter(default=None, description="paging token from the previous page's next link"),
    scene: str | None = None,
) -> CaptionsQuery:
    return CaptionsQuery(
        bbox=parse_bbox(bbox),
        limit=parse_limit(limit, default=100),
        offset=offset or None,
        scene=scene or None,
    )
