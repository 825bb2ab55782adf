"""The records that cross the store boundary: points in, hits out, and the neutral rows and filter
the engines translate to and from their own types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from geosearch.schemas.chips import ChipPayload
from geosearch.store.geo import BBox


@dataclass
class ChipPoint:
    """One chip to upsert: its id (see `ids.chip_id`), embedding and payload."""

    id: str
    vector: NDArray[np.float32]
    payload: ChipPayload


@dataclass
class Hit:
    """One chip found: `score` is the cosine similarity to the query (None for get and browse)."""

    id: str
    score: float | None
    payload: ChipPayload
    relevance: float | None = None
    """Share of the embedder's reference images this hit outscores for the query (0..1); None when
    the embedder has no reference set or the search was not a text query. See `plugins.base.Relevance`."""


@dataclass(frozen=True)
class Where:
    """Backend-neutral filter: centre boxes (OR-ed, each west <= east), scene, datetime, chip gsd range
    (metres per pixel, inclusive, None for an open end), excluded ids, the grid cells covering the
    boxes (a superset condition that lets the engine walk fewer points), and the scenes whose chips
    are hidden (unfinished: being ingested or deleted, see `store.states`)."""

    boxes: tuple[BBox, ...] = ()
    scene: str | None = None
    interval: tuple[str | None, str | None] | None = None
    exclude: tuple[str, ...] = ()
    cells: tuple[int, ...] = ()
    gsd: tuple[float | None, float | None] | None = None
    hide: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.selective or self.hide)

    @property
    def selective(self) -> bool:
        """Whether a condition other than `hide` is set: hiding the few unfinished scenes keeps nearly
        every point, so it neither makes a search selective (planner) nor calls for ACORN."""
        return bool(
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

    def hit(self) -> Hit:
        """The decoded hit (raises msgspec.ValidationError for a payload that is not a ChipPayload)."""
        return Hit(id=self.id, score=self.score, payload=msgspec.convert(self.payload, ChipPayload))


def record_row(record: Any, payload: dict[str, Any], *, with_vector: bool) -> Row:
    """A Row from an engine's retrieved record (`.id`, `.vector`: a list or a dict keyed by vector name).

    Args:
        record: a qdrant-edge or qdrant-client record.
        payload: its payload, already unpacked by the engine.
        with_vector: whether the vector was requested; the unnamed vector is taken.
    """
    vector = record.vector if with_vector else None
    if isinstance(vector, dict):
        vector = vector.get("")
    return Row(id=str(record.id), payload=payload, vector=[float(v) for v in vector] if vector is not None else None)
