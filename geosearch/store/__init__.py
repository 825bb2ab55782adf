"""The vector store: one interface over embedded qdrant-edge (default) and a Qdrant server.

`open_store(...)` returns a `ChipStore`; the ingest pipeline upserts chips, calls `put_scene` after a
scene's last chip and `finish_ingest` at the end of a run; the API only searches, gets and browses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from geosearch.errors import InvalidInput
from geosearch.store.base import BaseStore, ChipPoint, ChipStore, Hit, StoreOptions, chip_id, collection_name
from geosearch.store.geo import BBox

__all__ = [
    "BBox",
    "ChipPoint",
    "ChipStore",
    "Hit",
    "StoreOptions",
    "StoreSettings",
    "chip_id",
    "collection_name",
    "default_store_dir",
    "open_store",
    "resolve_store_settings",
]


@dataclass(frozen=True)
class StoreSettings:
    """Where a store lives, resolved from arguments and environment (shared with the CLI)."""

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


def resolve_store_settings(
    location: str | Path | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    backend: str | None = None,
) -> StoreSettings:
    """Explicit url > explicit location > `$QDRANT_URL` > `$GEOSEARCH_STORE` > user data dir.

    A url and a location together: the url wins, as `geosearch.config.Settings` documents.

    An http(s) location is taken as a url; ':memory:' is qdrant-client's in-memory mode;
    any other location is an edge store directory unless `backend='qdrant'` (qdrant-client local mode).
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
        return StoreSettings(backend="qdrant", location=url, url=url, api_key=key)
    if str(location) == ":memory:":
        if backend == "edge":
            raise InvalidInput("the edge backend needs a directory; ':memory:' is qdrant-client only")
        return StoreSettings(backend="qdrant", location=":memory:")
    path = Path(location).expanduser() if location is not None else default_store_dir()
    if backend == "qdrant":
        return StoreSettings(backend="qdrant", location=str(path), path=path)
    return StoreSettings(backend="edge", location=str(path), path=path)


def open_store(
    location: str | Path | None = None,
    *,
    model_id: str,
    dim: int,
    url: str | None = None,
    api_key: str | None = None,
    create: bool = True,
    **options: Any,
) -> ChipStore:
    """Open (or create) the collection of `model_id` in the store that the arguments/environment name.

    Options (see `StoreOptions`): exact_threshold, exact_count_limit, hnsw_ef, hnsw_m, ef_construct, acorn,
    vector_datatype, quantization, oversampling, on_disk_vectors, optimize_threshold, full_scan_threshold_kb,
    indexing_threshold_kb, collection, backend, shard_number, replication_factor, timeout.
    """
    if not model_id:
        raise InvalidInput("model_id must not be empty")
    if not isinstance(dim, int) or dim < 1:
        raise InvalidInput(f"dim must be a positive integer, got {dim!r}")
    opts = StoreOptions.from_kwargs(options)
    settings = resolve_store_settings(location, url=url, api_key=api_key, backend=opts.backend)
    store: BaseStore
    if settings.backend == "edge":
        from geosearch.store.edge import EdgeStore

        assert settings.path is not None
        store = EdgeStore(settings.path, model_id=model_id, dim=dim, create=create, options=opts)
    else:
        from geosearch.store.qdrant import QdrantStore

        store = QdrantStore(
            model_id=model_id,
            dim=dim,
            create=create,
            options=opts,
            url=settings.url,
            api_key=settings.api_key,
            path=str(settings.path) if settings.path is not None else None,
            memory=settings.location == ":memory:",
        )
    return store
