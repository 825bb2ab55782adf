"""What the API does against hostile or careless clients: write auth, rate limit, CORS, host policy.

* **Writes** (every route whose method is not GET/HEAD/OPTIONS, unless the handler declares itself a read
  with ``opt={READ_ONLY: True}``, as ``POST /search`` does) need the configured API key in ``X-API-Key``
  or ``Authorization: Bearer <key>``, compared in constant time; else 401 with ``WWW-Authenticate``.
  Without a key configured, writes are open, and ``geosearch serve`` refuses any non-loopback host
  unless ``--insecure`` (`serve_config`).
* **Rate limit** (``GEOSEARCH_RATE_LIMIT``, e.g. ``600/minute``; off unless configured): Litestar's
  `RateLimitMiddleware` per client address over every geosearch route; 429 with ``Retry-After``.
* **CORS** (``GEOSEARCH_CORS_ORIGINS``): the listed origins; unset, any origin (``*``) when the server
  listens on a loopback address only, no cross-origin access otherwise.

Limits on the requests themselves (body size, query length, time) are in `geosearch.api.limits`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig

from geosearch.api.errors import Unauthorized
from geosearch.api.limits import MAX_BODY_BYTES, Worker
from geosearch.config import DEFAULT_REQUEST_TIMEOUT, Config
from geosearch.errors import InvalidInput

READ_ONLY = "geosearch_read_only"
"""Handler ``opt`` key: a POST (or other non-GET) route that changes nothing, so needs no key."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_KEY_HEADER = "X-API-Key"
CORS_METHODS: list[Any] = ["GET", "POST", "DELETE"]
CORS_HEADERS = ["Content-Type", API_KEY_HEADER, "Authorization"]
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class ApiPolicy:
    """The HTTP-facing part of `Config`, as the mount applies it."""

    api_key: str | None = None
    rate_limit: tuple[str, int] | None = None
    cors_origins: tuple[str, ...] | None = None
    """None: the mount's default (open); `serve_config` resolves it by host first."""
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    @classmethod
    def from_config(cls, config: Config) -> ApiPolicy:
        return cls(
            api_key=config.api_key,
            rate_limit=config.rate_limit,
            cors_origins=config.cors_origins,
            request_timeout=config.request_timeout,
        )

    # -- writes -----------------------------------------------------------------------------------------
    def guard(self) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
        """A Litestar guard that lets reads through and writes only with the key (when one is set)."""
        key = _digest(self.api_key) if self.api_key else None

        def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
            if key is None or connection.scope.get("method", "GET") in SAFE_METHODS or handler.opt.get(READ_ONLY):
                return
            given = presented_key(connection)
            if given is None:
                raise Unauthorized(
                    f"this request changes the store: send the API key in {API_KEY_HEADER} or Authorization: Bearer",
                    {"WWW-Authenticate": 'Bearer realm="geosearch"'},
                )
            if not hmac.compare_digest(_digest(given), key):
                raise Unauthorized(
                    "the API key is not valid", {"WWW-Authenticate": 'Bearer realm="geosearch", error="invalid_token"'}
                )

        return require_api_key

    # -- rate limit ---------------------------------------------------------------------------------------
    def rate_limit_middleware(self) -> list[DefineMiddleware]:
        """The rate limiter for the geosearch routers ([] when not configured)."""
        if self.rate_limit is None:
            return []
        unit, count = self.rate_limit
        return [RateLimitConfig(rate_limit=(unit, count), store="geosearch_rate_limit").middleware]  # type: ignore[arg-type]

    # -- CORS -------------------------------------------------------------------------------------------
    def cors_config(self) -> CORSConfig | None:
        """None when no cross-origin access is allowed."""
        origins = ("*",) if self.cors_origins is None else self.cors_origins
        if not origins:
            return None
        return CORSConfig(
            allow_origins=list(origins),
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=["Retry-After", "Link"],
        )


def router_options(policy: ApiPolicy | None = None, worker: Worker | None = None) -> dict[str, Any]:
    """Keyword arguments of every geosearch `Router`: the write guard, the rate limiter, the body size
    limit, the translation of Litestar's refusals to the error table, and the bounded `worker`."""
    from litestar.di import Provide
    from litestar.exceptions import HTTPException

    from geosearch.api.errors import handle_http_exception

    policy = policy or ApiPolicy()
    worker = worker or Worker(policy.request_timeout)
    return {
        "guards": [policy.guard()],
        "middleware": policy.rate_limit_middleware(),
        "request_max_body_size": MAX_BODY_BYTES,
        "exception_handlers": {HTTPException: handle_http_exception},
        "dependencies": {"worker": Provide(lambda: worker, sync_to_thread=False)},
    }


def _digest(key: str) -> bytes:
    """Keys are compared as SHA-256 digests: equal lengths, so the comparison time tells nothing."""
    return hashlib.sha256(key.encode()).digest()


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The key in ``X-API-Key``, else in ``Authorization: Bearer``; None when neither is there."""
    header = connection.headers.get(API_KEY_HEADER)
    if header:
        return header.strip()
    scheme, _, token = (connection.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def is_loopback(host: str) -> bool:
    """Whether `host` (what the server binds) is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def serve_config(config: Config, host: str, *, insecure: bool = False) -> Config:
    """`config` for a server listening on `host`: the CORS default resolved, the host policy enforced.

    Raises:
        InvalidInput: a non-loopback host without an API key, unless `insecure`.
    """
    loopback = is_loopback(host)
    if not loopback and not config.api_key and not insecure:
        raise InvalidInput(
            f"serving on {host} lets other machines delete scenes: set GEOSEARCH_API_KEY, "
            "or pass --insecure to serve without one"
        )
    if config.cors_origins is None:
        config = replace(config, cors_origins=("*",) if loopback else ())
    return config


__all__ = ["READ_ONLY", "ApiPolicy", "is_loopback", "presented_key", "router_options", "serve_config"]
