"""One table from exception class to HTTP status; every error body is ``{"status_code", "detail"}``.

The engine's errors (`geosearch.errors`) and the API's own refusals (below) both map through `STATUS`;
Litestar's refusals that the API relies on (a body over the size limit, the rate limiter's 429) are
translated to the API's classes first (`translate`), so their bodies carry a reason and their headers
(``Retry-After``) like every other error.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, TooManyRequestsException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.datastructures import ResponseSpec

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


class Refusal(GeoSearchError):
    """An HTTP-level refusal of the API (not a problem of the engine); may carry response headers."""

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class Unauthorized(Refusal):
    """A write request without the configured API key (or with a wrong one)."""


class PayloadTooLarge(Refusal):
    """A request body over the route's size limit."""


class RateLimited(Refusal):
    """More requests from one client address than the configured rate allows."""


class RequestTimeout(Refusal):
    """A search, tile or chip rendering that ran past the per-request time limit."""


STATUS: dict[type[GeoSearchError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    NotFound: 404,
    ModelMismatch: 409,
    PayloadTooLarge: 413,
    SceneError: 422,
    RateLimited: 429,
    ModelError: 503,
    StoreLocked: 503,
    StoreError: 503,
    RequestTimeout: 503,
    GeoSearchError: 500,
}


class ErrorBody(msgspec.Struct):
    """The body of every error response."""

    status_code: int
    detail: str


REASONS = {
    400: "Bad input (malformed parameter, unknown OGC parameter, query text too long)",
    401: "A write without the API key, or with a wrong one",
    404: "No such chip, scene or collection",
    409: "The store holds vectors of another model",
    413: "Request body over the size limit",
    422: "The scene's source file is unreadable or changed since ingest",
    429: "Rate limit exceeded (see Retry-After)",
    503: "Store or model unavailable, or the request ran past the time limit (see Retry-After)",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI responses of the error statuses a route may answer, each with the `ErrorBody` schema."""
    return {code: ResponseSpec(data_container=ErrorBody, description=REASONS[code]) for code in codes}


def status_for(exc: GeoSearchError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def handle_geosearch_error(_: Request[Any, Any, Any], exc: GeoSearchError) -> Response[object]:
    code = status_for(exc)
    headers = exc.headers if isinstance(exc, Refusal) else None
    return Response(
        {"status_code": code, "detail": str(exc)}, status_code=code, media_type=MediaType.JSON, headers=headers
    )


def translate(exc: HTTPException, request: Request[Any, Any, Any] | None = None) -> GeoSearchError | None:
    """The API's class for a Litestar refusal that the table should answer, or None to leave it as is."""
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.route_handler.resolve_request_max_body_size() if request is not None else None
        size = f" of {limit} bytes" if limit else ""
        return PayloadTooLarge(f"request body is larger than the limit{size}")
    if isinstance(exc, TooManyRequestsException):
        headers = dict(exc.headers or {})
        retry = headers.get("RateLimit-Reset", "1")
        headers["Retry-After"] = str(max(1, int(retry))) if retry.lstrip("-").isdigit() else "1"
        return RateLimited(f"too many requests from this client; retry after {headers['Retry-After']} s", headers)
    return None


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[object]:
    """Router-level handler of Litestar's own refusals: through the table when it has a class for them."""
    ours = translate(exc, request)
    if ours is not None:
        return handle_geosearch_error(request, ours)
    body: dict[str, object] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, media_type=MediaType.JSON, headers=exc.headers)
