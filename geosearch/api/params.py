"""Query-string parsing as Litestar dependencies (titiler style): handlers get validated objects."""

from __future__ import annotations

from typing import Any

from litestar.openapi.spec import Example
from litestar.params import Parameter

from geosearch.api.limits import MAX_QUERY_CHARS, api_text
from geosearch.query import GSD_SYNTAX, parse_bbox, parse_datetime, parse_gsd, parse_limit
from geosearch.schemas import CaptionsQuery, SearchQuery, SearchRequest

BBOX_DOC = "minx,miny,maxx,maxy in WGS84 lon/lat; minx > maxx crosses the antimeridian"
DATETIME_DOC = "RFC 3339 instant or interval start/end, '..' for an open end"
GSD_DOC = f"chip ground resolution range {GSD_SYNTAX}; chips of every scale rank together without it"
Q_DOC = f"free text to rank the chips by (1 to {MAX_QUERY_CHARS} characters)"

NUMBER = r"-?\d+(\.\d+)?"
BBOX_PATTERN = rf"^{NUMBER}(,{NUMBER}){{3}}$"
GSD_PATTERN = r"^(\d+(\.\d+)?|\.\.)?/(\d+(\.\d+)?|\.\.)?$"
BBOX_EXAMPLES = ("-78.96,-8.59,128.66,47.10", "170,-20,-170,-10")
DATETIME_EXAMPLES = ("2019-06-01T00:00:00Z/..", "2019-06-01")
GSD_EXAMPLES = ("0.5/2", "../2")
Q_EXAMPLES = ("a road through the mountains",)


def documented(description: str, *examples: str, **schema: Any) -> Any:
    """An optional query parameter with its description, examples and documentation-only schema keywords
    (``pattern``, ``maxLength``...): Litestar does not check those, the parse functions do, with reasons."""
    return Parameter(
        default=None,
        description=description,
        examples=[Example(value=value) for value in examples] or None,
        schema_extra=schema or None,
    )


def search_query(
    q: str | None = documented(Q_DOC, *Q_EXAMPLES, minLength=1, maxLength=MAX_QUERY_CHARS),
    bbox: str | None = documented(BBOX_DOC, *BBOX_EXAMPLES, pattern=BBOX_PATTERN),
    limit: int | None = documented("hits to return (default 10; more than 1000 returns 1000)", minimum=1),
    scene: str | None = None,
    datetime: str | None = documented(DATETIME_DOC, *DATETIME_EXAMPLES),
    gsd: str | None = documented(GSD_DOC, *GSD_EXAMPLES, pattern=GSD_PATTERN),
) -> SearchQuery:
    return SearchQuery(
        q=api_text(q),
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
        q=api_text(data.q) if data.q is not None else None,
        like=data.like,
        bbox=parse_bbox(data.bbox),
        limit=parse_limit(data.limit),
        scene=data.scene,
        datetime=parse_datetime(data.datetime),
        gsd=parse_gsd(data.gsd),
    )


def captions_query(
    bbox: str | None = documented(BBOX_DOC, *BBOX_EXAMPLES, pattern=BBOX_PATTERN),
    limit: int | None = documented("features per page (default 100; more than 1000 returns 1000)", minimum=1),
    offset: str | None = Parameter(default=None, description="paging token from the previous page's next link"),
    scene: str | None = None,
) -> CaptionsQuery:
    return CaptionsQuery(
        bbox=parse_bbox(bbox),
        limit=parse_limit(limit, default=100),
        offset=offset or None,
        scene=scene or None,
    )
