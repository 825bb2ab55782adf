"""Embedded default: Qdrant's Rust engine in-process (qdrant-edge), one directory per collection.

Layout of `{store_dir}/{collection}/`: `chips/` (edge shard of chip vectors), `scenes/` (edge shard of
scene records, 1-d dummy vectors), `meta.json` (model, dim, footprint margin) and `.geosearch.lock`.

`EdgeShard.optimize()` (qdrant-edge-py 0.9) holds the GIL for its whole run, so a background thread
would freeze every thread of the process, API included, just the same. Hence `finish_ingest` indexes
only when enough points are unindexed to make HNSW worth it (`optimize_threshold`), and does so in the
caller's thread: searches over an unindexed segment are exact brute force and stay correct meanwhile.

Chip footprints are stored as a GeoJSON *string* in the edge payload and parsed back on read: edge
converts nested Python lists element by element while holding the GIL, so a densified polygon made
`qe.Point(...)` several times dearer than its string, which bounded upserts and stalled the ingest
reader and model threads. Nothing filters on the footprint inside the engine (filters use the indexed
`centre`), and payloads written with an object footprint still read back unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from geosearch.errors import ModelMismatch, NotFound, StoreError, StoreLocked
from geosearch.store.base import ChipStore, UpsertRow
from geosearch.store.collection import INDEXED_FIELDS, Meta, collection_name
from geosearch.store.geo import CELL_LEVELS_META
from geosearch.store.options import INT8_QUANTILE, StoreOptions
from geosearch.store.params import search_params
from geosearch.store.records import Row, Where, record_row
from geosearch.store.states import COMPLETE, hidden_of, record_state

log = logging.getLogger(__name__)

_BATCH = 512
_DATATYPES = {"float16": qe.VectorStorageDatatype.Float16, "float32": qe.VectorStorageDatatype.Float32}
_PAYLOAD_MEMORY = {True: qe.Memory.Cold, False: qe.Memory.Cached}  # StoreOptions.on_disk_payload
_SCHEMA: dict[str, qe.PayloadSchemaType | qe.IntegerIndexParams] = {
    "geo": qe.PayloadSchemaType.Geo,
    "keyword": qe.PayloadSchemaType.Keyword,
    "datetime": qe.PayloadSchemaType.Datetime,
    "float": qe.PayloadSchemaType.Float,
    # Cell ids are matched only, never ranged, and get no filtered sub-graphs (see INDEXED_FIELDS).
    "integer": qe.IntegerIndexParams(lookup=True, range=False, enable_hnsw=False),
}


class _DirLock:
    """flock on `.geosearch.lock` naming its owner's pid, so a second opener gets a clear StoreLocked
    ("store ... is locked by PID n"), not a WAL error.

    The kernel drops an flock when its holder dies, however it dies (SIGKILL included), so a lock file
    left by a killed process is stale by construction: the next open takes it and writes its own pid.
    The descriptor is not inherited by child processes (O_CLOEXEC), so none can keep a dead owner's lock.
    """

    def __init__(self, path: Path, store: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(self._fd)
            raise StoreLocked(
                f"store {store} is locked by PID {owner} (another geosearch process); try again when it has finished"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace: a crash leaves the old or the new file, never half of one."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _geo_box(west: float, south: float, east: float, north: float) -> qe.FieldCondition:
    return qe.FieldCondition(
        "centre", geo_bounding_box=qe.GeoBoundingBox(qe.GeoPoint(west, north), qe.GeoPoint(east, south))
    )


def _edge_filter(where: Where) -> qe.Filter | None:
    if where.empty:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if where.boxes:
        boxes = [_geo_box(*b) for b in where.boxes]
        must.append(boxes[0] if len(boxes) == 1 else qe.Filter(should=list(boxes)))
    if where.scene is not None:
        must.append(qe.FieldCondition("scene_id", match=qe.MatchValue(where.scene)))
    if where.interval is not None:
        lo, hi = where.interval
        if lo is None and hi is None:
            must_not.append(qe.IsEmptyCondition("datetime"))
        else:
            must.append(qe.FieldCondition("datetime", range=qe.RangeDateTime(gte=lo, lte=hi)))
    if where.exclude:
        must_not.append(qe.HasIdCondition({uuid.UUID(i) for i in where.exclude}))
    if where.cells:
        must.append(qe.FieldCondition("cell", match=qe.MatchAny(list(where.cells))))
    if where.gsd is not None:
        must.append(qe.FieldCondition("gsd", range=qe.RangeFloat(gte=where.gsd[0], lte=where.gsd[1])))
    if where.hide:
        must_not.append(qe.FieldCondition("scene_id", match=qe.MatchAny(list(where.hide))))
    return qe.Filter(must=must or None, must_not=must_not or None)


def _prefetch(root: Path) -> None:
    """Ask the kernel to read a shard's files into the page cache in the background (Linux).

    Payloads and payload indexes are read on demand; on a machine that reclaims idle page cache, a
    server's first searches would otherwise pay a disk read per result. Skipped when the files would
    take more than half of the available memory.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    files = [p for p in root.rglob("*") if p.is_file()]
    try:
        meminfo = Path("/proc/meminfo").read_text().split()
        available = int(meminfo[meminfo.index("MemAvailable:") + 1]) * 1024
        if sum(p.stat().st_size for p in files) > available // 2:
            return
    except (OSError, ValueError, IndexError):
        return
    for path in files:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)


def _pack(payload: dict[str, Any]) -> dict[str, Any]:
    footprint = payload.get("footprint")
    if isinstance(footprint, dict):
        payload = {**payload, "footprint": json.dumps(footprint, separators=(",", ":"))}
    return payload


def _unpack(payload: dict[str, Any] | None) -> dict[str, Any]:
    if not payload:
        return {}
    footprint = payload.get("footprint")
    if isinstance(footprint, str):
        payload = {**payload, "footprint": json.loads(footprint)}
    return payload


class EdgeStore(ChipStore):
    backend = "edge"

    def __init__(self, store_dir: Path, *, model_id: str, dim: int, create: bool, options: StoreOptions) -> None:
        super().__init__(model_id=model_id, dim=dim, options=options)
        self.collection = options.collection or collection_name(model_id)
        self.dir = Path(store_dir).expanduser() / self.collection
        self.location = str(self.dir)
        self._lock = threading.RLock()  # update/query/meta; never held during optimize()
        self._optimize_lock = threading.Lock()
        self._hidden_scenes: dict[str, str] = {}
        """Unfinished scenes (see `states`): this process owns the store, so memory is authoritative.
        Replaced, never mutated, so readers need no lock."""
        meta_path = self.dir / "meta.json"
        if not meta_path.exists() and not create:
            raise NotFound(f"no collection for model {model_id} in {store_dir}; ingest something first")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._dirlock = _DirLock(self.dir / ".geosearch.lock", self.dir)
        try:
            if meta_path.exists():
                self.meta = self._read_meta(meta_path)
                self._chips = self._load(self.dir / "chips")
                self._scenes = self._load(self.dir / "scenes")
                self._hidden_scenes = hidden_of(self._scene_all())
            else:
                self.meta = self._create(meta_path)
        except BaseException:
            for name in ("_chips", "_scenes"):
                shard = getattr(self, name, None)
                if shard is not None:
                    shard.close()
            self._dirlock.release()
            raise

    # ---- opening -----------------------------------------------------------------------------
    def _read_meta(self, meta_path: Path) -> Meta:
        try:
            meta = Meta.from_dict(json.loads(meta_path.read_text()))
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"unreadable store metadata {meta_path}: {e}") from e
        if meta.model_id != self.model_id or meta.dim != self.dim:
            raise ModelMismatch(
                f"store {self.dir} holds {meta.dim}-d vectors of model {meta.model_id!r}, "
                f"not {self.dim}-d vectors of model {self.model_id!r}; use another store or collection"
            )
        return meta

    def _create(self, meta_path: Path) -> Meta:
        # meta.json is written last, so shards without it are a creation that crashed: nothing was
        # ever ingested into them (upsert needs an open store, which needs meta.json).
        for sub in ("chips", "scenes"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        self._chips, self._scenes = self._create_shards()
        meta = Meta.new(
            self.model_id,
            self.dim,
            {
                "hnsw_m": self.options.hnsw_m,
                "ef_construct": self.options.ef_construct,
                "vector_datatype": self.options.vector_datatype,
                "quantization": self.options.quantization,
                "on_disk_vectors": self.options.on_disk_vectors,
                "cell_levels": CELL_LEVELS_META,
            },
        )
        _write_json(meta_path, meta.to_dict())
        return meta

    def _create_shards(self) -> tuple[qe.EdgeShard, qe.EdgeShard]:
        opts = self.options
        optimizers = (
            qe.EdgeOptimizersConfig(indexing_threshold=opts.indexing_threshold_kb)
            if opts.indexing_threshold_kb is not None
            else None
        )
        quantization = (
            qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=INT8_QUANTILE, always_ram=True)
            if opts.quantization == "int8"
            else None
        )
        chips = qe.EdgeShard.create(
            str(self.dir / "chips"),
            qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(
                    size=self.dim,
                    distance=qe.Distance.Cosine,
                    memory=qe.Memory.Cold if opts.on_disk_vectors else qe.Memory.Cached,
                    datatype=_DATATYPES[opts.vector_datatype],
                    quantization_config=quantization,
                ),
                hnsw_config=qe.HnswIndexConfig(
                    m=opts.hnsw_m, ef_construct=opts.ef_construct, full_scan_threshold=opts.full_scan_threshold_kb
                ),
                optimizers=optimizers,
                payload_memory=None if opts.on_disk_payload is None else _PAYLOAD_MEMORY[opts.on_disk_payload],
            ),
        )
        for name, kind in INDEXED_FIELDS.items():
            chips.update(qe.UpdateOperation.create_field_index(name, _SCHEMA[kind]))
        chips.flush()
        scenes = qe.EdgeShard.create(
            str(self.dir / "scenes"),
            qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=1, distance=qe.Distance.Dot)),
        )
        scenes.flush()
        return chips, scenes

    def _load(self, path: Path) -> qe.EdgeShard:
        try:
            return qe.EdgeShard.load(str(path))
        except Exception as e:
            if "WouldBlock" in str(e):
                raise StoreLocked(f"store {self.dir} is locked by another process (its WAL is held)") from e
            raise StoreError(f"cannot open store {path}: {e}") from e

    # ---- primitives --------------------------------------------------------------------------
    def _margin(self) -> tuple[float, float]:
        return (self.meta.margin_lon, self.meta.margin_lat)

    def _grow_margin(self, lon: float, lat: float) -> None:
        with self._lock:
            self.meta.margin_lon = max(self.meta.margin_lon, lon)
            self.meta.margin_lat = max(self.meta.margin_lat, lat)
            _write_json(self.dir / "meta.json", self.meta.to_dict())

    def _upsert_rows(self, rows: list[UpsertRow]) -> None:
        for i in range(0, len(rows), _BATCH):
            points = [qe.Point(pid, vec, _pack(payload)) for pid, vec, payload in rows[i : i + _BATCH]]
            with self._lock:
                self._chips.update(qe.UpdateOperation.upsert_points(points))

    def _query(self, vector: list[float], where: Where, limit: int, exact: bool) -> list[Row]:
        flt = _edge_filter(where)
        req = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector),
            filter=flt,
            with_payload=True,
            params=search_params(qe, self.options, exact=exact, filtered=where.selective),
        )
        with self._lock:
            points = self._chips.query(req)
        return [Row(id=str(p.id), payload=_unpack(p.payload), score=float(p.score)) for p in points]

    def _total(self) -> int:
        with self._lock:
            return int(self._chips.info().points_count)

    def _count(self, where: Where, *, exact: bool) -> int:
        with self._lock:
            return int(self._chips.count(qe.CountRequest(exact=exact, filter=_edge_filter(where))))

    def _scroll(self, where: Where, limit: int, offset: str | None) -> tuple[list[Row], str | None]:
        req = qe.ScrollRequest(
            offset=uuid.UUID(offset) if offset is not None else None,
            limit=limit,
            filter=_edge_filter(where),
            with_payload=True,
            with_vector=False,
        )
        with self._lock:
            records, nxt = self._chips.scroll(req)
        rows = [Row(id=str(r.id), payload=_unpack(r.payload)) for r in records]
        return rows, (str(nxt) if nxt is not None else None)

    def _retrieve(self, ids: list[str], with_vector: bool) -> list[Row]:
        with self._lock:
            records = self._chips.retrieve([uuid.UUID(i) for i in ids], with_payload=True, with_vector=with_vector)
        return [record_row(r, _unpack(r.payload), with_vector=with_vector) for r in records]

    def _delete(self, where: Where) -> None:
        flt = _edge_filter(where)
        assert flt is not None, "refusing to delete without a filter"
        with self._lock:
            self._chips.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def _scene_put(self, point_id: str, payload: dict[str, Any]) -> None:
        scene_id, state = str(payload.get("id")), record_state(payload)
        with self._lock:
            if state != COMPLETE:  # hidden before the record says so, and before any chip changes
                self._hidden_scenes = {**self._hidden_scenes, scene_id: state}
            if state == COMPLETE:  # chips first: a complete record claims they are all there
                self._chips.flush()
            self._scenes.update(qe.UpdateOperation.upsert_points([qe.Point(point_id, [1.0], payload)]))
            self._scenes.flush()
            if state == COMPLETE:  # shown only once the record is down
                self._forget_hidden(scene_id)

    def _scene_get(self, point_id: str) -> dict[str, Any] | None:
        with self._lock:
            records = self._scenes.retrieve([uuid.UUID(point_id)], with_payload=True, with_vector=False)
        return records[0].payload if records and records[0].payload is not None else None

    def _scene_all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset: Any = None
        while True:
            with self._lock:
                records, offset = self._scenes.scroll(
                    qe.ScrollRequest(offset=offset, limit=1000, with_payload=True, with_vector=False)
                )
            out.extend(r.payload for r in records if r.payload is not None)
            if offset is None:
                return out

    def _scene_delete(self, point_id: str) -> None:
        with self._lock:
            records = self._scenes.retrieve([uuid.UUID(point_id)], with_payload=True, with_vector=False)
            self._scenes.update(qe.UpdateOperation.delete_points([uuid.UUID(point_id)]))
            self._scenes.flush()
            for record in records:
                self._forget_hidden(str((record.payload or {}).get("id")))

    def _forget_hidden(self, scene_id: str) -> None:
        if scene_id in self._hidden_scenes:
            self._hidden_scenes = {k: v for k, v in self._hidden_scenes.items() if k != scene_id}

    def _scenes_hidden(self) -> dict[str, str]:
        return self._hidden_scenes

    # ---- lifecycle ---------------------------------------------------------------------------
    def unindexed(self) -> int:
        """Points not yet in an HNSW graph (searched by brute force until `finish_ingest` indexes them)."""
        with self._lock:
            info = self._chips.info()
        return max(0, int(info.points_count) - int(info.indexed_vectors_count))

    def finish_ingest(self) -> None:
        """Flush, and build the HNSW index when `optimize_threshold` or more points are unindexed.

        Blocks the calling thread (and, through the GIL, the process) while indexing: see the module
        docstring. Below the threshold the store is searched exactly, so there is nothing to gain.
        """
        self._check_open()
        with self._lock:
            self._chips.flush()
        pending = self.unindexed()
        if pending == 0 or pending < self.options.effective_optimize_threshold:
            return
        with self._optimize_lock:
            if self._closed:
                return
            t0 = time.monotonic()
            log.info("indexing %d points in %s (blocks this process)", pending, self.dir)
            self._chips.optimize()
            with self._lock:
                self._chips.flush()
            log.info("indexed in %.1f s", time.monotonic() - t0)

    def warm(self) -> None:
        """One exact scan of every vector, in the engine's own reading path.

        The engine maps the vector file twice and prefaults only the mapping HNSW reads, so the first
        exact search over a region is several times slower than a repeat. The scan (time proportional
        to the store's size) maps those pages once; they are the same page-cache pages, not new memory.
        """
        self._check_open()
        _prefetch(self.dir / "chips")
        probe = [1.0] + [0.0] * (self.dim - 1)
        req = qe.QueryRequest(
            limit=1,
            query=qe.Query.Nearest(probe),
            with_payload=False,
            params=search_params(qe, self.options, exact=True, filtered=False),
        )
        with self._lock:
            self._chips.query(req)

    def _close(self) -> None:
        with self._optimize_lock, self._lock:
            try:
                for shard in (self._chips, self._scenes):
                    shard.flush()
                    shard.close()
            finally:
                self._dirlock.release()
