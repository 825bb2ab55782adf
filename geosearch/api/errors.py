"""One table from exception class to HTTP status; every error body is ``{"status_code", "detail"}``."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response

from geosearch.errors import (
    GeoSearchError,
    InvalidInput,
    ModelError,
    ModelMismatch,
    NotFound,
    SceneError,
    StoreError,
    StoreLocked,
)

STATUS: dict[type[GeoSearchError], int] = {
    InvalidInput: 400,
    NotFound: 404,
    ModelMismatch: 409,
    SceneError: 422,
    ModelError: 503,
    StoreLocked: 503,
    StoreError: 503,
    GeoSearchError: 500,
}


def status_for(exc: GeoSearchError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def handle_geosearch_error(_: Request[Any, Any, Any], exc: GeoSearchError) -> Response[object]:
    code = status_for(exc)
    return Response({"status_code": code, "detail": str(exc)}, status_code=code, media_type=MediaType.JSON)
