"""Where a store lives: the backend and location that arguments and environment resolve to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from geosearch.errors import InvalidInput


@dataclass(frozen=True)
class StoreLocation:
    """The resolved backend and location of a store."""

    backend: Literal["edge", "qdrant"]
    location: str
    """Edge: the store directory; qdrant: the url, the local path or ':memory:'."""
    url: str | None = None
    api_key: str | None = None
    path: Path | None = None


def default_store_dir() -> Path:
    """`$GEOSEARCH_STORE`, else the per-user data directory."""
    env = os.environ.get("GEOSEARCH_STORE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("geosearch")) / "store"


def resolve_store_location(
    location: str | Path | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    backend: str | None = None,
) -> StoreLocation:
    """Explicit url > explicit location > `$QDRANT_URL` > `$GEOSEARCH_STORE` > user data dir.

    A url and a location together: the url wins, as `geosearch.config.Config` documents.

    An http(s) location is taken as a url; ':memory:' is qdrant-client's in-memory mode;
    any other location is an edge store directory unless `backend='qdrant'` (qdrant-client local mode).
    The api key defaults to `$QDRANT_API_KEY` for a url.

    Raises:
        InvalidInput: an unknown backend, or the edge backend with a url or ':memory:'.
    """
    if backend not in (None, "edge", "qdrant"):
        raise InvalidInput(f"unknown store backend {backend!r}; use 'edge' or 'qdrant'")
    if url is None and isinstance(location, str) and location.startswith(("http://", "https://")):
        url, location = location, None
    if url is None and location is None:
        url = os.environ.get("QDRANT_URL") or None
    if url is not None:  # a server wins over an embedded location (see geosearch.config)
        if backend == "edge":
            raise InvalidInput("the edge backend is embedded and takes a directory, not a url")
        key = api_key if api_key is not None else (os.environ.get("QDRANT_API_KEY") or None)
        return StoreLocation(backend="qdrant", location=url, url=url, api_key=key)
    if str(location) == ":memory:":
        if backend == "edge":
            raise InvalidInput("the edge backend needs a directory; ':memory:' is qdrant-client only")
        return StoreLocation(backend="qdrant", location=":memory:")
    path = Path(location).expanduser() if location is not None else default_store_dir()
    if backend == "qdrant":
        return StoreLocation(backend="qdrant", location=str(path), path=path)
    return StoreLocation(backend="edge", location=str(path), path=path)
