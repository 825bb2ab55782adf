"""`ChipStore`: the store interface, and the logic both engines share.

Engines only translate a small neutral filter (`Where`) and a handful of primitives (query, count,
scroll, retrieve, upsert, delete) into their own types; everything that decides *what* is correct
(exact footprint boxes, exact-vs-HNSW choice, over-fetching, paging tokens, validation) lives here and
in `planner` once, so the embedded and server stores cannot drift apart.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from geosearch.errors import InvalidInput, StoreError
from geosearch.query import parse_bbox, parse_datetime
from geosearch.schemas.api import SceneInfo
from geosearch.store import planner
from geosearch.store.collection import Meta
from geosearch.store.geo import (
    CELL_LEVELS_META,
    BBox,
    box_cells,
    centre_boxes,
    centre_cells,
    footprint_intersects,
    half_extent,
    split_antimeridian,
)
from geosearch.store.ids import is_uuid, scene_point_id
from geosearch.store.options import StoreOptions
from geosearch.store.records import ChipPoint, Hit, Row, Where
from geosearch.store.states import COMPLETE, DELETING, INGESTING, READ_RETRIES, STATE_KEY, record_state

UpsertRow = tuple[str, list[float], dict[str, Any]]
"""(id, vector, payload as builtins) of one point to write."""


class ChipStore(ABC):
    """What the pipeline and API see, whichever engine is behind it; engines subclass it and supply
    the primitives. `open_store` returns one; it is a context manager that closes the store."""

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
    def _upsert_rows(self, rows: list[UpsertRow]) -> None: ...

    @abstractmethod
    def _query(self, vector: list[float], where: Where, limit: int, exact: bool) -> list[Row]: ...

    @abstractmethod
    def _total(self) -> int:
        """Cheap point count (may include not-yet-vacuumed deletions): only used to skip exact counts."""

    @abstractmethod
    def _count(self, where: Where, *, exact: bool) -> int:
        """Points matching a filter: exactly, or the engine's cheap estimate (for a geo box, an upper bound)."""

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
    def _scenes_hidden(self) -> dict[str, str]:
        """{scene id: state} of the scenes whose chips must not be served (see `states`), current as of
        the call: an engine caching it updates it before a record hides a scene and after one shows it."""

    @abstractmethod
    def _close(self) -> None: ...

    def finish_ingest(self) -> None:
        """End of an ingest run. Servers index in the background: nothing to do unless the engine overrides it."""
        self._check_open()

    def warm(self) -> None:
        """Make the first searches as fast as later ones (long-running servers call it once after opening).

        Nothing to do unless the engine overrides it: a Qdrant server keeps its own memory warm.
        """
        self._check_open()

    # ---- shared checks -----------------------------------------------------------------------
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
        values: list[float] = arr.tolist()  # exact float32 values as Python floats, faster than a loop
        return values

    @property
    def _has_cells(self) -> bool:
        """Collections created before the cell index (or with other levels) have no usable `cell`."""
        return self.meta.extra.get("cell_levels") == CELL_LEVELS_META

    # ---- writing -----------------------------------------------------------------------------
    def _row(self, point: ChipPoint, with_cells: bool) -> tuple[UpsertRow, tuple[float, float]]:
        """A validated point as a row to write, and its footprint's half-extent around its centre."""
        if not is_uuid(point.id):
            raise InvalidInput(f"chip id must be a UUID string (see chip_id()), got {point.id!r}")
        vec = self._vector(point.vector, f"vector of chip {point.id}")
        payload = msgspec.to_builtins(point.payload)
        if not isinstance(payload, dict):
            raise InvalidInput(f"payload of chip {point.id} is not a ChipPayload")
        c = point.payload.centre
        if not (-180.0 <= c.lon <= 180.0 and -90.0 <= c.lat <= 90.0):
            raise InvalidInput(f"chip {point.id} centre ({c.lon}, {c.lat}) is not a lon/lat point")
        try:
            extent = half_extent(point.payload.footprint, c.lon, c.lat)
        except Exception as e:  # shapely raises several types for malformed GeoJSON
            raise InvalidInput(f"chip {point.id} footprint is not a GeoJSON polygon: {e}") from e
        if with_cells:
            payload["cell"] = centre_cells(c.lon, c.lat)
        return (point.id, vec, payload), extent

    def upsert(self, points: Sequence[ChipPoint]) -> None:
        """Insert or overwrite chips; grows the bbox margin first so no chip is ever missed by a box.

        Raises:
            InvalidInput: a non-UUID id, a vector of the wrong size or not finite, a centre off the
                globe or a footprint that is not a GeoJSON polygon; nothing is written then.
        """
        self._check_open()
        if not points:
            return
        rows: list[UpsertRow] = []
        mlon, mlat = 0.0, 0.0
        with_cells = self._has_cells
        for p in points:
            row, (dlon, dlat) = self._row(p, with_cells)
            mlon, mlat = max(mlon, dlon), max(mlat, dlat)
            rows.append(row)
        cur_lon, cur_lat = self._margin()
        if mlon > cur_lon or mlat > cur_lat:
            self._grow_margin(max(mlon, cur_lon), max(mlat, cur_lat))
        self._upsert_rows(rows)

    # ---- reading -----------------------------------------------------------------------------
    def _where(
        self,
        bbox: BBox | None,
        scene: str | None,
        interval: str | tuple[str | None, str | None] | None,
        exclude: Sequence[str] = (),
        gsd: tuple[float | None, float | None] | None = None,
        hide: frozenset[str] = frozenset(),
    ) -> tuple[Where, list[BBox]]:
        """Build the engine filter and the exact boxes the footprints are checked against."""
        exact_boxes: list[BBox] = []
        boxes: tuple[BBox, ...] = ()
        cells: tuple[int, ...] = ()
        if bbox is not None:
            exact_boxes = split_antimeridian(parse_bbox(bbox))
            boxes = tuple(centre_boxes(exact_boxes, *self._margin()))
            if self._has_cells:
                cells = box_cells(boxes)[0]
        norm = parse_datetime(interval)
        excl = tuple(sorted({e for e in exclude if is_uuid(e)}))
        gsd_range = None if gsd is None or gsd == (None, None) else gsd  # every chip has a gsd
        where = Where(
            boxes=boxes, scene=scene, interval=norm, exclude=excl, cells=cells, gsd=gsd_range, hide=tuple(sorted(hide))
        )
        return where, exact_boxes

    def _hidden(self) -> frozenset[str]:
        return frozenset(self._scenes_hidden())

    def _use_exact(self, where: Where) -> bool:
        # Routing ignores the hidden scenes: they remove few points, and HNSW tests them as it walks.
        return planner.use_exact(
            replace(where, hide=()),
            total=self._total(),
            estimate=partial(self._count, exact=False),
            count=partial(self._count, exact=True),
            threshold=self.options.exact_threshold,
            count_limit=self.options.effective_exact_count_limit,
        )

    def search(
        self,
        vector: NDArray[np.float32],
        *,
        limit: int = 10,
        bbox: BBox | None = None,
        scene: str | None = None,
        datetime: str | tuple[str | None, str | None] | None = None,
        exclude: Sequence[str] = (),
        gsd: tuple[float | None, float | None] | None = None,
    ) -> list[Hit]:
        """Top `limit` chips by cosine similarity (desc) among those matching every filter exactly.

        Chips of every scale share the collection and one ranking; `gsd` keeps those in a range. Chips of
        unfinished scenes (being ingested or deleted, see `states`) are never returned.

        Args:
            vector: the query, `dim` finite values, not all zero.
            limit: most hits returned (at least 1).
            bbox: chips whose footprint touches this (west, south, east, north) box; west > east
                crosses the antimeridian.
            scene: chips of this scene id only.
            datetime: `geosearch.query.parse_datetime`'s text (``2022-01-01/2022-03-10``) or (start, end)
                pair, either end open (None); (None, None): chips with a datetime.
            exclude: chip ids to leave out (ids that are not UUIDs are ignored).
            gsd: (min, max) metres per pixel, inclusive, either open (None).

        Raises:
            InvalidInput: a bad vector, limit, box or date.
        """
        self._check_open()
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        vec = self._vector(vector, "query vector")
        hide = self._hidden()
        for _ in range(READ_RETRIES):
            where, exact_boxes = self._where(bbox, scene, datetime, exclude, gsd, hide)
            rows = self._search_rows(vec, where, exact_boxes, limit)
            now = self._hidden()
            if now <= hide:
                return [r.hit() for r in rows]
            hide |= now  # a scene became hidden while the search ran: run it again without that scene
        return [r.hit() for r in rows if r.payload.get("scene_id") not in hide]

    def _search_rows(self, vec: list[float], where: Where, exact_boxes: list[BBox], limit: int) -> list[Row]:
        """The top `limit` rows of one search: exactly or through HNSW, fetching deeper while the exact
        footprint test drops margin candidates."""
        exact = self._use_exact(where)
        where = planner.query_filter(where, exact)
        fetch = planner.first_fetch(limit, bool(exact_boxes))
        while True:
            rows = self._query(vec, where, fetch, exact)
            if exact_boxes:
                kept = [r for r in rows if footprint_intersects(r.payload["footprint"], exact_boxes)]
            else:
                kept = rows
            if len(kept) >= limit or len(rows) < fetch:
                return kept[:limit]
            # Margin candidates crowded out true hits: fetch deeper, the ranking prefix stays valid.
            fetch *= planner.FETCH_GROWTH

    def _visible(self, chip_id: str, with_vector: bool) -> Row | None:
        """The chip's row, or None when there is none or its scene is unfinished."""
        if not is_uuid(chip_id):
            return None
        rows = self._retrieve([chip_id], with_vector=with_vector)
        if not rows or rows[0].payload.get("scene_id") in self._hidden():
            return None
        return rows[0]

    def get(self, chip_id: str) -> Hit | None:
        """The chip with this id (score None), or None (also while its scene is unfinished)."""
        self._check_open()
        row = self._visible(chip_id, with_vector=False)
        return row.hit() if row is not None else None

    def get_vector(self, chip_id: str) -> NDArray[np.float32] | None:
        """Stored vector (unit length: cosine engines normalise on insert), for "more like this"."""
        self._check_open()
        row = self._visible(chip_id, with_vector=True)
        if row is None or row.vector is None:
            return None
        return np.asarray(row.vector, dtype=np.float32)

    def browse(
        self,
        *,
        bbox: BBox | None = None,
        scene: str | None = None,
        limit: int = 100,
        offset: str | None = None,
    ) -> tuple[list[Hit], str | None]:
        """Page through matching chips in id order; the token is the id of the next candidate, so pages
        never overlap or skip even when the exact footprint test drops some candidates. Chips of
        unfinished scenes are left out.

        Returns:
            Up to `limit` hits (score None) and the token of the next page, None after the last.

        Raises:
            InvalidInput: a limit below 1, a token that is not a chip id, or a bad box.
        """
        self._check_open()
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        if offset is not None and not is_uuid(offset):
            raise InvalidInput(f"invalid page token {offset!r}")
        hide = self._hidden()
        for _ in range(READ_RETRIES):
            where, exact_boxes = self._where(bbox, scene, None, hide=hide)
            page, nxt = self._browse_page(where, exact_boxes, limit, offset)
            now = self._hidden()
            if now <= hide:
                break
            hide |= now
        return [h for h in page if h.payload.scene_id not in hide], nxt

    def _browse_page(
        self, where: Where, exact_boxes: list[BBox], limit: int, offset: str | None
    ) -> tuple[list[Hit], str | None]:
        out: list[Hit] = []
        cursor = offset
        while True:
            rows, nxt = self._scroll(where, planner.browse_page(limit - len(out), bool(exact_boxes)), cursor)
            for i, row in enumerate(rows):
                if exact_boxes and not footprint_intersects(row.payload["footprint"], exact_boxes):
                    continue
                out.append(row.hit())
                if len(out) == limit:
                    return out, (rows[i + 1].id if i + 1 < len(rows) else nxt)
            if nxt is None:
                return out, None
            cursor = nxt

    def count(self, scene: str | None = None) -> int:
        """Chips in the store, or in one scene, leaving out those of unfinished scenes."""
        self._check_open()
        hide = self._hidden()
        for _ in range(READ_RETRIES):
            n = self._count(Where(scene=scene, hide=tuple(sorted(hide))), exact=True)
            now = self._hidden()
            if now <= hide:
                return n
            hide |= now
        return self._count(Where(scene=scene, hide=tuple(sorted(hide))), exact=True)

    # ---- scenes (see `states`) ---------------------------------------------------------------
    def begin_scene(self, scene_id: str) -> int:
        """Start writing a scene's chips: hide the scene, then delete every chip it already has (an older
        version, or what a run that stopped mid-scene left). Its chips are not served until `put_scene`.

        Returns:
            The number of chips deleted.
        """
        self._check_open()
        self._scene_put(scene_point_id(scene_id), {"id": scene_id, STATE_KEY: INGESTING})
        return self._delete_chips(scene_id)

    def put_scene(self, info: SceneInfo) -> None:
        """Mark a scene completely ingested, which makes its chips served; call only after its last chip
        is upserted."""
        self._check_open()
        payload = msgspec.to_builtins(info)
        assert isinstance(payload, dict)
        payload[STATE_KEY] = COMPLETE
        self._scene_put(scene_point_id(info.id), payload)

    def delete_scene(self, scene_id: str) -> int:
        """Remove a scene's chips and its record, in any state: the record is marked deleting first (its
        chips are no longer served), then the chips go, then the record. Idempotent.

        Returns:
            The number of chips deleted.
        """
        self._check_open()
        point_id = scene_point_id(scene_id)
        known = self._scene_get(point_id)
        self._scene_put(point_id, {**(known or {"id": scene_id}), STATE_KEY: DELETING})
        n = self._delete_chips(scene_id)
        self._scene_delete(point_id)
        return n

    def _delete_chips(self, scene_id: str) -> int:
        where = Where(scene=scene_id)
        n = self._count(where, exact=True)
        if n:
            self._delete(where)
        return n

    def get_scene(self, scene_id: str) -> SceneInfo | None:
        """The scene's record if it is completely ingested, else None."""
        self._check_open()
        payload = self._scene_get(scene_point_id(scene_id))
        if payload is None or record_state(payload) != COMPLETE:
            return None
        return msgspec.convert(payload, SceneInfo)

    def list_scenes(self) -> list[SceneInfo]:
        """Every completely ingested scene, by id."""
        self._check_open()
        scenes = [msgspec.convert(p, SceneInfo) for p in self._scene_all() if record_state(p) == COMPLETE]
        return sorted(scenes, key=lambda s: s.id)

    def unfinished_scenes(self) -> dict[str, str]:
        """{scene id: `states.INGESTING` or `states.DELETING`} of the scenes whose chips are hidden: in
        flight now, or left so by a run that stopped (the next ingest of the file, or `delete_scene`,
        clears them)."""
        self._check_open()
        return dict(self._scenes_hidden())

    # ---- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Flush and release the store; idempotent. Afterwards every other method raises StoreError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def __enter__(self) -> ChipStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.backend} {self.location} model={self.model_id} dim={self.dim}>"
