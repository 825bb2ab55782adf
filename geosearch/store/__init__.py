"""The vector store: one interface over embedded qdrant-edge (default) and a Qdrant server.

`open_store(...)` returns a `ChipStore`; the ingest pipeline upserts chips, calls `put_scene` after a
scene's last chip and `finish_ingest` at the end of a run; the API only searches, gets and browses.

Modules: `base` (ChipStore), `options` (StoreOptions), `location` (StoreLocation), `records`
(ChipPoint, Hit, Row, Where), `ids` (point ids), `collection` (names, metadata, indexed fields),
`planner` (exact-vs-HNSW routing, fetch depth), `params` (engine search parameters), `geo` (box
and footprint arithmetic), and the engines `edge` and `qdrant`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geosearch.errors import InvalidInput
from geosearch.store.base import ChipStore
from geosearch.store.collection import collection_name
from geosearch.store.geo import BBox
from geosearch.store.ids import chip_id
from geosearch.store.location import StoreLocation, default_store_dir, resolve_store_location
from geosearch.store.options import StoreOptions
from geosearch.store.records import ChipPoint, Hit

__all__ = [
    "BBox",
    "ChipPoint",
    "ChipStore",
    "Hit",
    "StoreLocation",
    "StoreOptions",
    "chip_id",
    "collection_name",
    "default_store_dir",
    "open_store",
    "resolve_store_location",
]


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

    Args:
        location: see `resolve_store_location`.
        model_id: the embedder whose vectors the collection holds (one collection per model).
        dim: their dimension.
        url, api_key: a Qdrant server (see `resolve_store_location`).
        create: create the collection if it does not exist yet.
        options: `StoreOptions` fields: exact_threshold, exact_count_limit, hnsw_ef, hnsw_m, ef_construct,
            acorn, vector_datatype, quantization, oversampling, on_disk_vectors, optimize_threshold,
            full_scan_threshold_kb, indexing_threshold_kb, collection, backend, shard_number,
            replication_factor, write_consistency_factor, on_disk_payload, timeout.

    Raises:
        InvalidInput: an empty model id, a bad dim, or an unknown or invalid option.
        NotFound: no collection for the model and `create` is False.
        ModelMismatch: the collection holds another model's vectors or another dimension.
        StoreLocked: another process holds the store.
        StoreError: the store cannot be opened or the server fails.
    """
    if not model_id:
        raise InvalidInput("model_id must not be empty")
    if not isinstance(dim, int) or dim < 1:
        raise InvalidInput(f"dim must be a positive integer, got {dim!r}")
    opts = StoreOptions.from_kwargs(options)
    loc = resolve_store_location(location, url=url, api_key=api_key, backend=opts.backend)
    opts.check_engine(loc.backend)
    if loc.backend == "edge":
        from geosearch.store.edge import EdgeStore

        assert loc.path is not None
        return EdgeStore(loc.path, model_id=model_id, dim=dim, create=create, options=opts)
    from geosearch.store.qdrant import QdrantStore

    return QdrantStore(
        model_id=model_id,
        dim=dim,
        create=create,
        options=opts,
        url=loc.url,
        api_key=loc.api_key,
        path=str(loc.path) if loc.path is not None else None,
        memory=loc.location == ":memory:",
    )
