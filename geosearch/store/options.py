"""Store tunables: what `open_store(**options)` accepts, validated once for every engine."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from geosearch.errors import InvalidInput

QUANTIZATIONS = (None, "int8")
DATATYPES = ("float16", "float32")
EDGE_SINGLE = ("shard_number", "replication_factor", "write_consistency_factor")
"""Cluster options the embedded engine (one shard, one node) accepts only as 1."""
INT8_QUANTILE = 0.99
"""Int8 range clipped to the central 99 % of component values: finer steps for the bulk of the data;
the rare clipped outliers only affect candidate order, which float32 rescoring corrects."""


@dataclass(frozen=True)
class StoreOptions:
    """Tunables passed to `open_store(**options)`; unknown names are an error, not silently ignored.

    Options marked "fixed when a collection is created" shape its storage or index and are ignored
    when an existing collection is opened.
    """

    exact_threshold: int = 10_000
    """Brute-force search when the filtered (or total) point count is at most this: recall 1.0 where
    filtered HNSW (even with ACORN) loses recall on small candidate sets, and a filtered exact search
    costs time proportional to the matches only. Above it, HNSW with `hnsw_ef` (ACORN when filtered).
    Boxes on a cell-indexed store are routed by their cell cover instead (see `planner.CELL_EXACT_SLACK`)."""
    exact_count_limit: int | None = None
    """When the engine's cheap estimate of a filter's matches exceeds `exact_threshold`, an exact count
    (cost proportional to the matches) decides between exact search and HNSW, unless the estimate is above
    this (default 8 x `exact_threshold`); then HNSW is used directly. Geo-box estimates are upper bounds,
    loosest for small boxes, so a box estimated far above the threshold is still counted."""
    hnsw_ef: int = 1024
    """HNSW search breadth: larger reaches more of the true neighbours (recall) for a little more time per
    query; the default is chosen for recall 1.0 on real embeddings (see benchmarks/search.py)."""
    hnsw_m: int = 32
    """HNSW links per node. Fewer links leave dense clusters of near-duplicates (real embeddings) poorly
    connected, so some queries reach none of their true top hits whatever `hnsw_ef`; each link costs graph
    memory per point. Fixed when a collection is created."""
    ef_construct: int = 200
    acorn: bool = True
    vector_datatype: str = "float32"
    """Storage type of the vectors: 'float32', or 'float16' for half the memory and disk. float16 scores
    differ slightly from float32, so near-ties can swap places. Fixed when a collection is created."""
    quantization: str | None = None
    """'int8': scalar-quantized copies (a quarter of float32) kept in RAM drive HNSW search and index
    building, and the best `oversampling * limit` candidates are rescored with the stored vectors.
    Worth it with `on_disk_vectors=True` for stores larger than RAM; exact searches always score the
    stored vectors. None: no quantized copy. Fixed when a collection is created."""
    oversampling: float = 2.0
    """With quantization: quantized HNSW candidates per wanted hit that are rescored."""
    on_disk_vectors: bool = False
    """Leave the stored vectors memory-mapped and read on demand (edge: `Memory.Cold`; server:
    `on_disk`) instead of keeping them in RAM. Saves RAM, but each vector first touched costs a page
    fault, so cold searches are slower. Fixed when a collection is created."""
    optimize_threshold: int | None = None
    """Edge only: `finish_ingest` builds the index only once this many points are unindexed
    (default: `exact_threshold`, since smaller stores are searched exactly anyway)."""
    full_scan_threshold_kb: int = 10_000
    """Qdrant's own planner scans instead of walking HNSW when a filter's *estimated* matches fit in this."""
    indexing_threshold_kb: int | None = None
    """Edge only: segments smaller than this are never indexed (Qdrant default 10,000 KB)."""
    collection: str | None = None
    """Override the per-model collection name (e.g. a shared server collection)."""
    backend: str | None = None
    """'qdrant' to open a filesystem path with qdrant-client's local mode instead of edge."""
    shard_number: int | None = None
    """Server/cluster: shards the chips and scenes collections are split into (spread over the cluster's
    nodes; more shards, more nodes to search in parallel). None: the server's default (1). The embedded
    edge engine is one shard: only 1 is accepted there. Fixed when a collection is created."""
    replication_factor: int | None = None
    """Server/cluster: copies of each shard, on different nodes (a node may fail without losing data or
    availability). None: the server's default (1). Edge: only 1. Fixed when a collection is created."""
    write_consistency_factor: int | None = None
    """Server/cluster: replicas that must acknowledge a write before it succeeds; at most
    `replication_factor` (which must then be given). None: the server's default (1). Edge: only 1.
    Fixed when a collection is created."""
    on_disk_payload: bool | None = None
    """Keep payloads on disk (memory-mapped, read on demand) instead of in RAM; payload indexes, which
    the filters use, stay in memory either way. None: the engine's default (on disk for both a Qdrant
    server and edge). Edge: `payload_memory` Cold (True) or Cached (False). Fixed when a collection is
    created."""
    timeout: int | None = None
    """Server: seconds qdrant-client waits for each request (None: qdrant-client's default)."""

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> StoreOptions:
        """Validated options.

        Raises:
            InvalidInput: an unknown option name or a value out of its range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"unknown store option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        opts = cls(**options)
        opts._validate()
        return opts

    def _validate(self) -> None:
        for name in ("exact_threshold", "hnsw_ef", "hnsw_m", "ef_construct"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidInput(f"store option {name} must be a non-negative integer, got {value!r}")
        if self.quantization not in QUANTIZATIONS:
            raise InvalidInput(f"store option quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.vector_datatype not in DATATYPES:
            raise InvalidInput(f"store option vector_datatype must be one of {DATATYPES}, got {self.vector_datatype!r}")
        limit = self.exact_count_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"store option exact_count_limit must be a non-negative integer, got {limit!r}")
        over = self.oversampling
        if isinstance(over, bool) or not isinstance(over, int | float) or not 1.0 <= over <= 100.0:
            raise InvalidInput(f"store option oversampling must be a number in 1..100, got {over!r}")
        self._validate_cluster()

    def _validate_cluster(self) -> None:
        for name in ("shard_number", "replication_factor", "write_consistency_factor", "timeout"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInput(f"store option {name} must be a positive integer, got {value!r}")
        wcf, rf = self.write_consistency_factor, self.replication_factor
        if wcf is not None and wcf > (rf or 1):
            raise InvalidInput(
                f"store option write_consistency_factor ({wcf}) cannot exceed replication_factor ({rf or 'unset: 1'}): "
                "a write cannot be acknowledged by more replicas than there are"
            )
        if self.on_disk_payload is not None and not isinstance(self.on_disk_payload, bool):
            raise InvalidInput(f"store option on_disk_payload must be true or false, got {self.on_disk_payload!r}")

    def check_engine(self, backend: str) -> None:
        """Refuse options the resolved engine cannot honour, rather than ignore them.

        Raises:
            InvalidInput: shard_number, replication_factor or write_consistency_factor above 1 for the
                embedded edge engine, which is one shard on one node.
        """
        if backend != "edge":
            return
        for name in EDGE_SINGLE:
            value = getattr(self, name)
            if value is not None and value > 1:
                raise InvalidInput(
                    f"store option {name}={value} needs a Qdrant server or cluster (a url); the embedded "
                    "edge store is one shard on one node, so only 1 is accepted"
                )

    @property
    def effective_exact_count_limit(self) -> int:
        return 8 * self.exact_threshold if self.exact_count_limit is None else self.exact_count_limit

    @property
    def effective_optimize_threshold(self) -> int:
        return self.exact_threshold if self.optimize_threshold is None else self.optimize_threshold
