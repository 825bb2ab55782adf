"""The store interface and the logic both backends share.

Backends only translate a small neutral filter (`Where`) and a handful of primitives (query, count,
scroll, retrieve, upsert, delete) into their engine's types; everything that decides *what* is
correct (exact footprint boxes, exact-vs-HNSW choice, over-fetching, paging tokens, validation)
lives here once, so the embedded and server stores cannot drift apart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np
from numpy.typing import NDArray

from geosearch.errors import InvalidInput, StoreError
from geosearch.schemas.api import SceneInfo
from geosearch.schemas.chips import ChipPayload, Window
from geosearch.store.geo import (
    CELL_LEVELS_META,
    BBox,
    box_cells,
    centre_boxes,
    centre_cells,
    footprint_intersects,
    half_extent,
    normalize_interval,
    split_antimeridian,
    validate_bbox,
)

log = logging.getLogger(__name__)

_CHIP_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/geosearch/geosearch/chip")
_SCENE_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/geosearch/geosearch/scene")

# Payload fields with an index: the geo, scene, datetime and gsd filters all hit these.
INDEXED_FIELDS = {"centre": "geo", "scene_id": "keyword", "datetime": "datetime", "cell": "integer", "gsd": "float"}


CELL_EXACT_SLACK = 2.5
"""A filter whose cell cover holds at most this x `exact_threshold` chips is searched exactly, uncounted:
at 1M chips (2 cores, warm store) exact search walked a 25k-chip cover in ~20 ms, while filtered HNSW
took 25-50 ms on boxes of 0.5-4 % of the chips (it visits many rejected neighbours)."""


def chip_id(scene_id: str, window: Window, chip_size: int, model_id: str, scale: int = 1) -> str:
    """Deterministic id, so re-ingesting a scene overwrites its chips instead of duplicating them.

    A coarser scale's chip gets an id of its own even where its window rounds to a finer one's;
    scale 1 adds nothing to the key, so ids from before multi-scale chips stay valid.
    """
    key = f"{model_id}\n{scene_id}\n{window.col},{window.row},{window.width},{window.height}\n{chip_size}"
    if scale != 1:
        key += f"\nscale={scale}"
    return str(uuid.uuid5(_CHIP_NS, key))


def scene_point_id(scene_id: str) -> str:
    return str(uuid.uuid5(_SCENE_NS, scene_id))


def collection_name(model_id: str) -> str:
    """`chips_<slug>_<hash>`: readable, and the hash keeps two models whose slugs collide apart."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")[:48] or "model"
    digest = hashlib.sha1(model_id.encode()).hexdigest()[:8]
    return f"chips_{slug}_{digest}"


def scenes_name(collection: str) -> str:
    return "scenes_" + collection.removeprefix("chips_")


@dataclass
class ChipPoint:
    id: str
    vector: NDArray[np.float32]
    payload: ChipPayload


@dataclass
class Hit:
    id: str
    score: float | None
    payload: ChipPayload
    relevance: float | None = None
    """Share of the embedder's reference images this hit outscores for the query (0..1); None when
    the embedder has no reference set or the search was not a text query. See `plugins.base.Relevance`."""


@runtime_checkable
class ChipStore(Protocol):
    """What the pipeline and API see, whichever engine is behind it."""

    model_id: str
    dim: int
    backend: str
    location: str

    def upsert(self, points: Sequence[ChipPoint]) -> None: ...

    def search(
        self,
        vector: NDArray[np.float32],
        *,
        limit: int = 10,
        bbox: BBox | None = None,
        scene: str | None = None,
        datetime: tuple[str | None, str | None] | None = None,
        exclude: Sequence[str] = (),
        gsd: tuple[float | None, float | None] | None = None,
    ) -> list[Hit]: ...

    def get(self, chip_id: str) -> Hit | None: ...

    def get_vector(self, chip_id: str) -> NDArray[np.float32] | None: ...

    def browse(
        self,
        *,
        bbox: BBox | None = None,
        scene: str | None = None,
        limit: int = 100,
        offset: str | None = None,
    ) -> tuple[list[Hit], str | None]: ...

    def count(self, scene: str | None = None) -> int: ...

    def delete_scene(self, scene_id: str) -> int: ...

    def put_scene(self, info: SceneInfo) -> None: ...

    def get_scene(self, scene_id: str) -> SceneInfo | None: ...

    def list_scenes(self) -> list[SceneInfo]: ...

    def finish_ingest(self) -> None: ...

    def warm(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> ChipStore: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


QUANTIZATIONS = (None, "int8")
DATATYPES = ("float16", "float32")


@dataclass(frozen=True)
class StoreOptions:
    """Tunables passed to `open_store(**options)`; unknown names are an error, not silently ignored."""

    exact_threshold: int = 10_000
    """Brute-force search when the filtered (or total) point count is at most this: recall 1.0 where
    filtered HNSW is unreliable. Measured on real embeddings (benchmarks/search.py): ACORN lost recall
    on boxes of 1k-5k matches (0.85 at 1k of 1M) but held >= 0.99 from ~10k matches up, while a
    filtered exact search costs ~1-3 us per match. Above it, HNSW with `hnsw_ef` (ACORN when filtered).
    Boxes on a cell-indexed store are routed by their cell cover instead (see `CELL_EXACT_SLACK`)."""
    exact_count_limit: int | None = None
    """When the engine's cheap estimate of a filter's matches exceeds `exact_threshold`, an exact count
    (cost ~1.5 us per match) decides between exact search and HNSW, unless the estimate is above this
    (default 8 x `exact_threshold`); then HNSW is used directly. Geo-box estimates are upper bounds that
    were 1.4-9x the true count for small boxes (18x for boxes of ~10k matches, where HNSW is safe)."""
    hnsw_ef: int = 1024
    """HNSW search breadth. Measured on a 1M-chip store of real embeddings (benchmarks/search.py): at 256,
    recall@10 averaged 0.975-0.99 with single queries at 0.0-0.1 (unfiltered and whole-region boxes);
    at 1024 every one of 400 such queries had recall 1.0, for ~1-4 ms more per query."""
    hnsw_m: int = 32
    """HNSW links per node. At 16, one query in ~100 (100k and 1M stores of real embeddings replicated with
    jitter: dense near-duplicate clusters) reached none of its true top-10 at `hnsw_ef` 1024, filtered or not;
    at 32 the 100k store had recall 1.0 on every filter with no slower queries (HTTP p50/p99 18.3/26.4 ms vs
    19.1/28.7) and a 26 s build. Costs ~128 MB more graph per 1M chips. Fixed when a collection is created."""
    ef_construct: int = 200
    acorn: bool = True
    vector_datatype: str = "float32"
    """Storage type of the vectors: 'float32', or 'float16' for half the memory and disk (a 1M-chip
    store: 1 GB of vectors instead of 2 GB). float16 scores differ from float32 by up to ~1.5e-4, so
    near-ties can swap: recall@10 against float32 brute force measured 0.996-1.0 (1M chips: store RSS
    1.69 GB instead of 2.62 GB, same latency). Fixed when a collection is created."""
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
    fault: a filtered exact search over 1k of 1M points took 23 ms instead of 5 ms. Fixed when a
    collection is created."""
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
    replication_factor: int | None = None
    timeout: int | None = None

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> StoreOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"unknown store option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        opts = cls(**options)
        for name in ("exact_threshold", "hnsw_ef", "hnsw_m", "ef_construct"):
            value = getattr(opts, name)
            if not isinstance(value, int) or value < 0:
                raise InvalidInput(f"store option {name} must be a non-negative integer, got {value!r}")
        if opts.quantization not in QUANTIZATIONS:
            raise InvalidInput(f"store option quantization must be one of {QUANTIZATIONS}, got {opts.quantization!r}")
        if opts.vector_datatype not in DATATYPES:
            raise InvalidInput(f"store option vector_datatype must be one of {DATATYPES}, got {opts.vector_datatype!r}")
        limit = opts.exact_count_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"store option exact_count_limit must be a non-negative integer, got {limit!r}")
        over = opts.oversampling
        if isinstance(over, bool) or not isinstance(over, int | float) or not 1.0 <= over <= 100.0:
            raise InvalidInput(f"store option oversampling must be a number in 1..100, got {over!r}")
        return opts

    @property
    def effective_exact_count_limit(self) -> int:
        return 8 * self.exact_threshold if self.exact_count_limit is None else self.exact_count_limit

    @property
    def effective_optimize_threshold(self) -> int:
        return self.exact_threshold if self.optimize_threshold is None else self.optimize_threshold


@dataclass(frozen=True)
class Where:
    """Backend-neutral filter: centre boxes (OR-ed, each west <= east), scene, datetime, chip gsd range
    (metres per pixel, inclusive, None for an open end), excluded ids, and the grid cells covering the
    boxes (a superset condition that lets the engine walk fewer points)."""

    boxes: tuple[BBox, ...] = ()
    scene: str | None = None
    interval: tuple[str | None, str | None] | None = None
    exclude: tuple[str, ...] = ()
    cells: tuple[int, ...] = ()
    gsd: tuple[float | None, float | None] | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.boxes
            or self.scene is not None
            or self.interval is not None
            or self.exclude
            or self.cells
            or self.gsd is not None
        )


@dataclass
class Row:
    """One record as a backend returns it, before decoding."""

    id: str
    payload: dict[str, Any]
    score: float | None = None
    vector: list[float] | None = None


@dataclass
class Meta:
    """Collection metadata, stored beside the vectors (edge: JSON file; server: collection metadata)."""

    model_id: str
    dim: int
    distance: str = "cosine"
    created: str = ""
    margin_lon: float = 0.0
    margin_lat: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "geosearch": 1,
            "model_id": self.model_id,
            "dim": self.dim,
            "distance": self.distance,
            "created": self.created,
            "margin_lon": self.margin_lon,
            "margin_lat": self.margin_lat,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Meta:
        core = {"geosearch", "model_id", "dim", "distance", "created", "margin_lon", "margin_lat"}
        return cls(
            model_id=str(d["model_id"]),
            dim=int(d["dim"]),
            distance=str(d.get("distance", "cosine")),
            created=str(d.get("created", "")),
            margin_lon=float(d.get("margin_lon", 0.0)),
            margin_lat=float(d.get("margin_lat", 0.0)),
            extra={k: v for k, v in d.items() if k not in core},
        )


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _decode_payload(payload: dict[str, Any]) -> ChipPayload:
    return msgspec.convert(payload, ChipPayload)


def _hit(row: Row) -> Hit:
    return Hit(id=row.id, score=row.score, payload=_decode_payload(row.payload))


class BaseStore(ABC):
    """Shared behaviour; subclasses supply the engine primitives below."""

    backend: str
    location: str
    meta: Meta

    def __init__(self, *, model_id: str, dim: int, options: StoreOptions) -> None:
        self.model_id = model_id
        self.dim = dim
        self.options = options
        self._closed = False
        self._close_lock = threading.Lock()

    # ---- engine primitives -------------------------------------------------------------------
    @abstractmethod
    def _upsert_rows(self, rows: list[tuple[str, list[float], dict[str, Any]]]) -> None: ...

    @abstractmethod
    def _query(self, vector: list[float], where: Where, limit: int, exact: bool) -> list[Row]: ...

    @abstractmethod
    def _count(self, where: Where) -> int: ...

    @abstractmethod
    def _scroll(self, where: Where, limit: int, offset: str | None) -> tuple[list[Row], str | None]: ...

    @abstractmethod
    def _retrieve(self, ids: list[str], with_vector: bool) -> list[Row]: ...

    @abstractmethod
    def _delete(self, where: Where) -> None: ...

    @abstractmethod
    def _margin(self) -> tuple[float, float]:
        """Current footprint margin (lon, lat), as authoritative as the engine allows."""

    @abstractmethod
    def _grow_margin(self, lon: float, lat: float) -> None:
        """Persist a larger margin; called *before* the points that need it become visible."""

    @abstractmethod
    def _scene_put(self, point_id: str, payload: dict[str, Any]) -> None: ...

    @abstractmethod
    def _scene_get(self, point_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def _scene_all(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _scene_delete(self, point_id: str) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def finish_ingest(self) -> None:
        """Servers index in the background: nothing to do unless the engine overrides it."""
        self._check_open()

    def warm(self) -> None:
        """Make the first searches as fast as later ones (long-running servers call it once after opening).

        Nothing to do unless the engine overrides it: a Qdrant server keeps its own memory warm.
        """
        self._check_open()

    # ---- public API --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.location} is closed")

    def _vector(self, vector: NDArray[np.floating[Any]] | Sequence[float], what: str) -> list[float]:
        arr = np.asarray(vector, dtype=np.float32)
        if arr.ndim != 1 or arr.shape[0] != self.dim:
            raise InvalidInput(
                f"{what} has shape {tuple(arr.shape)}, but model {self.model_id} stores {self.dim}-d vectors"
            )
        if not np.all(np.isfinite(arr)) or not np.any(arr):
            raise InvalidInput(f"{what} must be finite and non-zero (cosine similarity is undefined otherwise)")
        values: list[float] = arr.tolist()  # exact float32 values as Python floats, ~10x faster than a loop
        return values

    def upsert(self, points: Sequence[ChipPoint]) -> None:
        """Insert or overwrite chips; grows the bbox margin first so no chip is ever missed by a box."""
        self._check_open()
        if not points:
            return
        rows: list[tuple[str, list[float], dict[str, Any]]] = []
        mlon, mlat = 0.0, 0.0
        with_cells = self._has_cells
        for p in points:
            if not is_uuid(p.id):
                raise InvalidInput(f"chip id must be a UUID string (see chip_id()), got {p.id!r}")
            vec = self._vector(p.vector, f"vector of chip {p.id}")
            payload = msgspec.to_builtins(p.payload)
            if not isinstance(payload, dict):
                raise InvalidInput(f"payload of chip {p.id} is not a ChipPayload")
            c = p.payload.centre
            if not (-180.0 <= c.lon <= 180.0 and -90.0 <= c.lat <= 90.0):
                raise InvalidInput(f"chip {p.id} centre ({c.lon}, {c.lat}) is not a lon/lat point")
            try:
                dlon, dlat = half_extent(p.payload.footprint, c.lon, c.lat)
            except Exception as e:  # shapely raises several types for malformed GeoJSON
                raise InvalidInput(f"chip {p.id} footprint is not a GeoJSON polygon: {e}") from e
            mlon, mlat = max(mlon, dlon), max(mlat, dlat)
            if with_cells:
                payload["cell"] = centre_cells(c.lon, c.lat)
            rows.append((p.id, vec, payload))
        cur_lon, cur_lat = self._margin()
        if mlon > cur_lon or mlat > cur_lat:
            self._grow_margin(max(mlon, cur_lon), max(mlat, cur_lat))
        self._upsert_rows(rows)

    def _where(
        self,
        bbox: BBox | None,
        scene: str | None,
        interval: tuple[str | None, str | None] | None,
        exclude: Sequence[str] = (),
        gsd: tuple[float | None, float | None] | None = None,
    ) -> tuple[Where, list[BBox]]:
        """Build the engine filter and the exact boxes the footprints are checked against."""
        exact_boxes: list[BBox] = []
        boxes: tuple[BBox, ...] = ()
        cells: tuple[int, ...] = ()
        if bbox is not None:
            exact_boxes = split_antimeridian(validate_bbox(bbox))
            boxes = tuple(centre_boxes(exact_boxes, *self._margin()))
            if self._has_cells:
                cells = box_cells(boxes)[0]
        norm = normalize_interval(interval) if interval is not None else None
        excl = tuple(sorted({e for e in exclude if is_uuid(e)}))
        gsd_range = None if gsd is None or gsd == (None, None) else gsd  # every chip has a gsd
        where = Where(boxes=boxes, scene=scene, interval=norm, exclude=excl, cells=cells, gsd=gsd_range)
        return where, exact_boxes

    @property
    def _has_cells(self) -> bool:
        """Collections created before the cell index (or with other levels) have no usable `cell`."""
        return self.meta.extra.get("cell_levels") == CELL_LEVELS_META

    @abstractmethod
    def _total(self) -> int:
        """Cheap point count (may include not-yet-vacuumed deletions): only used to skip exact counts."""

    @abstractmethod
    def _estimate(self, where: Where) -> int:
        """The engine's cheap cardinality estimate for a filter (for a geo box, an upper bound)."""

    def _use_exact(self, where: Where) -> bool:
        """Exact search whenever the candidate set is small enough: filtered HNSW silently loses recall.

        The engine's estimate is cheap but can be 10x off for geo boxes, so a filter estimated above
        the threshold is counted exactly (cost proportional to its matches) unless the estimate is so
        large (`exact_count_limit`) that the set cannot plausibly be small; counting a 20 % box of 1M
        chips took 110 ms, more than the search.
        """
        threshold = self.options.exact_threshold
        if self._total() <= threshold:
            return True
        if where.empty:
            return False
        estimate = self._estimate(replace(where, cells=()))
        if estimate <= threshold:
            return True
        if where.cells:
            # The cover's posting lists bound the box's matches from above (within 3-20 % while the
            # fine cells fit), and those of cells wholly inside the box from below.
            estimate = min(estimate, self._estimate(Where(cells=where.cells)))
            if estimate <= CELL_EXACT_SLACK * threshold:
                return True
            inner = box_cells(where.boxes)[1]
            only_boxes = where == Where(boxes=where.boxes, cells=where.cells)
            if inner and only_boxes and self._estimate(Where(cells=inner)) > threshold:
                return False
        if estimate > self.options.effective_exact_count_limit:
            return False
        return self._count(where) <= threshold

    def search(
        self,
        vector: NDArray[np.float32],
        *,
        limit: int = 10,
        bbox: BBox | None = None,
        scene: str | None = None,
        datetime: tuple[str | None, str | None] | None = None,
        exclude: Sequence[str] = (),
        gsd: tuple[float | None, float | None] | None = None,
    ) -> list[Hit]:
        """Top `limit` chips by cosine similarity (desc) among those matching every filter exactly.

        Chips of every scale share the collection and one ranking; `gsd` keeps those in a range."""
        self._check_open()
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        vec = self._vector(vector, "query vector")
        where, exact_boxes = self._where(bbox, scene, datetime, exclude, gsd)
        exact = self._use_exact(where)
        if not exact:
            # The cells speed up walking a filter's matches; HNSW + ACORN instead tests each visited
            # point, where a second condition only adds work (the 20 % box of 1M took 60 ms, not 24).
            where = replace(where, cells=())
        fetch = limit if not exact_boxes else max(2 * limit, limit + 16)
        while True:
            rows = self._query(vec, where, fetch, exact)
            if exact_boxes:
                kept = [r for r in rows if footprint_intersects(r.payload["footprint"], exact_boxes)]
            else:
                kept = rows
            if len(kept) >= limit or len(rows) < fetch:
                return [_hit(r) for r in kept[:limit]]
            # Margin candidates crowded out true hits: fetch deeper, the ranking prefix stays valid.
            fetch *= 4

    def get(self, chip_id: str) -> Hit | None:
        self._check_open()
        if not is_uuid(chip_id):
            return None
        rows = self._retrieve([chip_id], with_vector=False)
        return _hit(rows[0]) if rows else None

    def get_vector(self, chip_id: str) -> NDArray[np.float32] | None:
        """Stored vector (unit length: cosine engines normalise on insert), for "more like this"."""
        self._check_open()
        if not is_uuid(chip_id):
            return None
        rows = self._retrieve([chip_id], with_vector=True)
        if not rows or rows[0].vector is None:
            return None
        return np.asarray(rows[0].vector, dtype=np.float32)

    def browse(
        self,
        *,
        bbox: BBox | None = None,
        scene: str | None = None,
        limit: int = 100,
        offset: str | None = None,
    ) -> tuple[list[Hit], str | None]:
        """Page through matching chips in id order; the token is the id of the next candidate, so pages
        never overlap or skip even when the exact footprint test drops some candidates."""
        self._check_open()
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        if offset is not None and not is_uuid(offset):
            raise InvalidInput(f"invalid page token {offset!r}")
        where, exact_boxes = self._where(bbox, scene, None)
        out: list[Hit] = []
        cursor = offset
        while True:
            want = limit - len(out)
            page = want if not exact_boxes else max(2 * want, 16)
            rows, nxt = self._scroll(where, page, cursor)
            for i, row in enumerate(rows):
                if exact_boxes and not footprint_intersects(row.payload["footprint"], exact_boxes):
                    continue
                out.append(Hit(id=row.id, score=None, payload=_decode_payload(row.payload)))
                if len(out) == limit:
                    return out, (rows[i + 1].id if i + 1 < len(rows) else nxt)
            if nxt is None:
                return out, None
            cursor = nxt

    def count(self, scene: str | None = None) -> int:
        self._check_open()
        return self._count(Where(scene=scene))

    def delete_scene(self, scene_id: str) -> int:
        """Remove a scene's chips and its record (record first: a half-deleted scene is not 'ingested')."""
        self._check_open()
        where = Where(scene=scene_id)
        self._scene_delete(scene_point_id(scene_id))
        n = self._count(where)
        if n:
            self._delete(where)
        return n

    def put_scene(self, info: SceneInfo) -> None:
        """Mark a scene completely ingested; call only after its last chip is upserted."""
        self._check_open()
        payload = msgspec.to_builtins(info)
        assert isinstance(payload, dict)
        self._scene_put(scene_point_id(info.id), payload)

    def get_scene(self, scene_id: str) -> SceneInfo | None:
        self._check_open()
        payload = self._scene_get(scene_point_id(scene_id))
        return None if payload is None else msgspec.convert(payload, SceneInfo)

    def list_scenes(self) -> list[SceneInfo]:
        self._check_open()
        scenes = [msgspec.convert(p, SceneInfo) for p in self._scene_all()]
        return sorted(scenes, key=lambda s: s.id)

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def __enter__(self) -> BaseStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} {self.location} model={self.model_id} dim={self.dim}>"
