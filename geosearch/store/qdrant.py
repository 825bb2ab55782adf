"""qdrant-client backend: a Qdrant server or cluster (`url=`), or qdrant-client's local mode
(`:memory:` / a path), which evaluates filters in Python and stands in for the server API in tests.

Collection metadata (model, dim, footprint margin) lives in Qdrant's collection `metadata`, so every
process sharing the server sees the same margin; it is re-read on each geo query because another
process may be ingesting larger footprints. Scene records live in a sibling `scenes_*` collection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from geosearch.errors import ModelMismatch, NotFound, StoreError, StoreLocked
from geosearch.store.base import ChipStore, UpsertRow
from geosearch.store.collection import INDEXED_FIELDS, Meta, collection_name, scenes_name
from geosearch.store.geo import CELL_LEVELS_META
from geosearch.store.options import INT8_QUANTILE, StoreOptions
from geosearch.store.params import search_params
from geosearch.store.records import Row, Where, record_row
from geosearch.store.states import HIDDEN_STATES, STATE_KEY, hidden_of

log = logging.getLogger(__name__)

UPSERT_BATCH = 256
"""Points per upsert request: bounds a request's size (256 x 512-d float32 is ~0.5 MB of vectors plus
payloads), and so what one failed attempt costs to resend."""
_DATATYPES = {"float16": qm.Datatype.FLOAT16, "float32": qm.Datatype.FLOAT32}
_T = TypeVar("_T")


def batches(rows: Sequence[_T], size: int) -> list[Sequence[_T]]:
    """`rows` in consecutive slices of at most `size` (the last may be shorter), in order."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again: the connection failed or timed out
    (qdrant-client's `ResponseHandlingException`, httpx transport errors, OS connection errors), or the
    server answered 429 (rate limited) or 5xx (overloaded, a shard moving or a replica down). Other
    answers (400 bad request, 404 no collection, 401/403) fail the same way every time."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is not None and (exc.status_code == 429 or 500 <= exc.status_code < 600)
    return isinstance(exc, ResponseHandlingException | httpx.TransportError | ConnectionError | TimeoutError)


@dataclass(frozen=True)
class Retry:
    """Retry a request on transient errors (see `transient`) with exponential backoff: attempt k
    (k = 1..attempts-1) that fails is followed by a pause of min(cap, base x 2^(k-1)) seconds; after
    `attempts` failures, or at the first non-transient error, a StoreError with the reason. Only for
    idempotent requests (an upsert of fixed ids is: resending one that did land rewrites the same points)."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delays(self) -> list[float]:
        """The pauses between attempts, in order (attempts - 1 of them)."""
        return [min(self.cap, self.base * 2.0**k) for k in range(self.attempts - 1)]

    def run(self, request: Callable[[], _T], what: str) -> _T:
        """`request()`'s result.

        Raises:
            StoreError: a non-transient error, or `attempts` transient ones; names `what` and the reason.
        """
        pauses = self.delays()
        for attempt in range(1, self.attempts + 1):
            try:
                return request()
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                if not transient(e):
                    raise StoreError(f"{what} failed: {reason}") from e
                if attempt == self.attempts:
                    raise StoreError(
                        f"{what} failed after {attempt} attempts (transient errors); last: {reason}"
                    ) from e
                log.warning(
                    "%s failed (attempt %d of %d), retrying in %.1f s: %s",
                    what,
                    attempt,
                    self.attempts,
                    pauses[attempt - 1],
                    reason,
                )
                self.sleep(pauses[attempt - 1])
        raise AssertionError("unreachable")  # pragma: no cover


def _index(kind: str) -> qm.PayloadSchemaType | qm.IntegerIndexParams:
    """The server's payload index of an `INDEXED_FIELDS` kind."""
    if kind == "integer":  # cell ids: matched only, never ranged, no filtered sub-graphs
        return qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, lookup=True, range=False, enable_hnsw=False)
    return qm.PayloadSchemaType(kind)


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value is not None else None


def _qdrant_filter(where: Where) -> qm.Filter | None:
    if where.empty:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if where.boxes:
        boxes = [
            qm.FieldCondition(
                key="centre",
                geo_bounding_box=qm.GeoBoundingBox(
                    top_left=qm.GeoPoint(lon=w, lat=n), bottom_right=qm.GeoPoint(lon=e, lat=s)
                ),
            )
            for w, s, e, n in where.boxes
        ]
        must.append(boxes[0] if len(boxes) == 1 else qm.Filter(should=list(boxes)))
    if where.scene is not None:
        must.append(qm.FieldCondition(key="scene_id", match=qm.MatchValue(value=where.scene)))
    if where.interval is not None:
        lo, hi = where.interval
        if lo is None and hi is None:
            must_not.append(qm.IsEmptyCondition(is_empty=qm.PayloadField(key="datetime")))
        else:
            must.append(qm.FieldCondition(key="datetime", range=qm.DatetimeRange(gte=_instant(lo), lte=_instant(hi))))
    if where.exclude:
        must_not.append(qm.HasIdCondition(has_id=list(where.exclude)))
    if where.cells:
        must.append(qm.FieldCondition(key="cell", match=qm.MatchAny(any=list(where.cells))))
    if where.gsd is not None:
        must.append(qm.FieldCondition(key="gsd", range=qm.Range(gte=where.gsd[0], lte=where.gsd[1])))
    if where.hide:
        must_not.append(qm.FieldCondition(key="scene_id", match=qm.MatchAny(any=list(where.hide))))
    return qm.Filter(must=must or None, must_not=must_not or None)


class QdrantStore(ChipStore):
    backend = "qdrant"

    def __init__(
        self,
        *,
        model_id: str,
        dim: int,
        create: bool,
        options: StoreOptions,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        memory: bool = False,
    ) -> None:
        super().__init__(model_id=model_id, dim=dim, options=options)
        self.collection = options.collection or collection_name(model_id)
        self.scenes_collection = scenes_name(self.collection)
        self.location = url or path or ":memory:"
        self._lock = threading.RLock()  # local mode evaluates in Python and is not thread-safe
        self.local = url is None
        self.retry = Retry()
        """Retry policy of upserts (only a server fails transiently)."""
        try:
            if url is not None:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=options.timeout)
            elif path is not None:
                self.client = QdrantClient(path=path)
            else:
                if not memory:
                    raise StoreError("qdrant backend needs a url, a path or ':memory:'")
                self.client = QdrantClient(location=":memory:")
        except RuntimeError as e:
            if "already accessed" in str(e):
                raise StoreLocked(f"store {path} is in use by another process") from e
            raise StoreError(f"cannot open Qdrant at {self.location}: {e}") from e
        try:
            with self._errors():
                self.meta = self._open_collection(create)
        except BaseException:
            self.client.close()
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Network and server failures become StoreError naming the server, not a raw httpx trace."""
        guard: contextlib.AbstractContextManager[Any] = self._lock if self.local else contextlib.nullcontext()
        try:
            with guard:
                yield
        except (StoreError, NotFound):
            raise
        except Exception as e:
            raise StoreError(f"Qdrant at {self.location} failed: {type(e).__name__}: {e}") from e

    def _open_collection(self, create: bool) -> Meta:
        if self.client.collection_exists(self.collection):
            meta = self._read_meta()
            if meta.model_id != self.model_id or meta.dim != self.dim:
                raise ModelMismatch(
                    f"collection {self.collection} at {self.location} holds {meta.dim}-d vectors of model "
                    f"{meta.model_id!r}, not {self.dim}-d vectors of model {self.model_id!r}"
                )
            if not self.client.collection_exists(self.scenes_collection):
                self._create_scenes()
            return meta
        if not create:
            raise NotFound(f"no collection for model {self.model_id} in {self.location}; ingest something first")
        meta = Meta.new(self.model_id, self.dim, {"cell_levels": CELL_LEVELS_META})
        opts = self.options
        quantization = (
            qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=INT8_QUANTILE, always_ram=True)
            )
            if opts.quantization == "int8"
            else None
        )
        self.client.create_collection(
            self.collection,
            vectors_config=qm.VectorParams(
                size=self.dim,
                distance=qm.Distance.COSINE,
                on_disk=opts.on_disk_vectors,
                datatype=_DATATYPES[opts.vector_datatype],
            ),
            quantization_config=quantization,
            hnsw_config=qm.HnswConfigDiff(
                m=opts.hnsw_m, ef_construct=opts.ef_construct, full_scan_threshold=opts.full_scan_threshold_kb
            ),
            **self._cluster_kwargs(),
            metadata=meta.to_dict(),
        )
        if not self.local:  # local mode ignores payload indexes (and warns)
            for name, kind in INDEXED_FIELDS.items():
                self.client.create_payload_index(self.collection, name, _index(kind), wait=True)
        self._create_scenes()
        return meta

    def _cluster_kwargs(self) -> dict[str, Any]:
        """`create_collection` arguments of the cluster options, for the chips and scenes collections alike
        (None leaves a setting to the server's default)."""
        opts = self.options
        return {
            "shard_number": opts.shard_number,
            "replication_factor": opts.replication_factor,
            "write_consistency_factor": opts.write_consistency_factor,
            "on_disk_payload": opts.on_disk_payload,
        }

    def _create_scenes(self) -> None:
        self.client.create_collection(
            self.scenes_collection,
            vectors_config=qm.VectorParams(size=1, distance=qm.Distance.DOT),
            **self._cluster_kwargs(),
        )
        if not self.local:  # every read asks for the unfinished scenes (see `_scenes_hidden`)
            self.client.create_payload_index(self.scenes_collection, STATE_KEY, qm.PayloadSchemaType.KEYWORD, wait=True)

    def _read_meta(self) -> Meta:
        raw = self.client.get_collection(self.collection).config.metadata or {}
        if "model_id" not in raw or "dim" not in raw:
            raise ModelMismatch(
                f"collection {self.collection} at {self.location} was not created by geosearch "
                f"(no model metadata); cannot tell whether it holds vectors of model {self.model_id!r}"
            )
        return Meta.from_dict(dict(raw))

    # ---- primitives --------------------------------------------------------------------------
    def _margin(self) -> tuple[float, float]:
        if not self.local:
            with self._errors():
                self.meta = self._read_meta()
        return (self.meta.margin_lon, self.meta.margin_lat)

    def _grow_margin(self, lon: float, lat: float) -> None:
        with self._errors():
            current = self._read_meta() if not self.local else self.meta
            current.margin_lon = max(current.margin_lon, lon)
            current.margin_lat = max(current.margin_lat, lat)
            self.client.update_collection(self.collection, metadata=current.to_dict())
            self.meta = current

    def _upsert_rows(self, rows: list[UpsertRow]) -> None:
        """In batches of `UPSERT_BATCH`, each retried on transient errors (`self.retry`); a batch that
        still fails raises StoreError, leaving the batches before it written."""
        done = 0
        for batch in batches(rows, UPSERT_BATCH):
            points = [qm.PointStruct(id=pid, vector=vec, payload=p) for pid, vec, p in batch]
            what = f"upsert of points {done}..{done + len(batch) - 1} of {len(rows)} to Qdrant at {self.location}"
            with self._errors():
                self.retry.run(partial(self.client.upsert, self.collection, points=points, wait=True), what)
            done += len(batch)

    def _query(self, vector: list[float], where: Where, limit: int, exact: bool) -> list[Row]:
        flt = _qdrant_filter(where)
        params = search_params(qm, self.options, exact=exact, filtered=where.selective)
        with self._errors():
            res = self.client.query_points(
                self.collection,
                query=vector,
                query_filter=flt,
                search_params=None if self.local else params,  # local mode is always exact
                limit=limit,
                with_payload=True,
            )
        return [Row(id=str(p.id), payload=p.payload or {}, score=float(p.score)) for p in res.points]

    def _total(self) -> int:
        with self._errors():
            return int(self.client.count(self.collection, exact=False).count)

    def _count(self, where: Where, *, exact: bool) -> int:
        with self._errors():
            return int(self.client.count(self.collection, count_filter=_qdrant_filter(where), exact=exact).count)

    def _scroll(self, where: Where, limit: int, offset: str | None) -> tuple[list[Row], str | None]:
        with self._errors():
            records, nxt = self.client.scroll(
                self.collection,
                scroll_filter=_qdrant_filter(where),
                limit=limit,
                offset=offset,
                with_payload=True,
                with_vectors=False,
            )
        return [Row(id=str(r.id), payload=r.payload or {}) for r in records], (str(nxt) if nxt is not None else None)

    def _retrieve(self, ids: list[str], with_vector: bool) -> list[Row]:
        with self._errors():
            records = self.client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=with_vector)
        return [record_row(r, r.payload or {}, with_vector=with_vector) for r in records]

    def _delete(self, where: Where) -> None:
        flt = _qdrant_filter(where)
        assert flt is not None, "refusing to delete without a filter"
        with self._errors():
            self.client.delete(self.collection, points_selector=qm.FilterSelector(filter=flt), wait=True)

    def _scene_put(self, point_id: str, payload: dict[str, Any]) -> None:
        with self._errors():
            self.client.upsert(
                self.scenes_collection, points=[qm.PointStruct(id=point_id, vector=[1.0], payload=payload)], wait=True
            )

    def _scene_get(self, point_id: str) -> dict[str, Any] | None:
        with self._errors():
            records = self.client.retrieve(self.scenes_collection, ids=[point_id], with_payload=True)
        return dict(records[0].payload) if records and records[0].payload is not None else None

    def _scene_all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset: Any = None
        while True:
            with self._errors():
                records, offset = self.client.scroll(
                    self.scenes_collection, limit=1000, offset=offset, with_payload=True
                )
            out.extend(dict(r.payload) for r in records if r.payload is not None)
            if offset is None:
                return out

    def _scenes_hidden(self) -> dict[str, str]:
        """Read from the server on every call: another process may be ingesting or deleting."""
        flt = qm.Filter(must=[qm.FieldCondition(key=STATE_KEY, match=qm.MatchAny(any=list(HIDDEN_STATES)))])
        out: list[dict[str, Any]] = []
        offset: Any = None
        while True:
            with self._errors():
                records, offset = self.client.scroll(
                    self.scenes_collection,
                    scroll_filter=flt,
                    limit=1000,
                    offset=offset,
                    with_payload=["id", STATE_KEY],
                )
            out.extend(dict(r.payload) for r in records if r.payload is not None)
            if offset is None:
                return hidden_of(out)

    def _scene_delete(self, point_id: str) -> None:
        with self._errors():
            self.client.delete(self.scenes_collection, points_selector=qm.PointIdsList(points=[point_id]), wait=True)

    def _close(self) -> None:
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client.close()
