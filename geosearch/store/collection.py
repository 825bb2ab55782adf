"""What a collection is called and what it records about itself: its name, its metadata and the
payload fields it indexes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

INDEXED_FIELDS = {"centre": "geo", "scene_id": "keyword", "datetime": "datetime", "cell": "integer", "gsd": "float"}
"""Payload fields with an index, by kind: the geo, scene, datetime, cell and gsd filters all hit these.

`gsd` is ranged by multi-scale searches, which unindexed would scan every point. `cell` is matched only,
never ranged, and gets no filtered HNSW sub-graphs: those would make every index build much slower for
a condition that is dropped from HNSW searches anyway (see `planner.query_filter`)."""


def collection_name(model_id: str) -> str:
    """`chips_<slug>_<hash>`: readable, and the hash keeps two models whose slugs collide apart."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")[:48] or "model"
    digest = hashlib.sha1(model_id.encode()).hexdigest()[:8]
    return f"chips_{slug}_{digest}"


def scenes_name(collection: str) -> str:
    """The sibling collection that holds a chip collection's scene records."""
    return "scenes_" + collection.removeprefix("chips_")


_CORE = ("geosearch", "model_id", "dim", "distance", "created", "margin_lon", "margin_lat")


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

    @classmethod
    def new(cls, model_id: str, dim: int, extra: dict[str, Any]) -> Meta:
        """Metadata of a collection created now (UTC, to the second)."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(model_id=model_id, dim=dim, created=created, extra=extra)

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
        """Raises KeyError without `model_id` or `dim`, ValueError/TypeError for values of the wrong type."""
        return cls(
            model_id=str(d["model_id"]),
            dim=int(d["dim"]),
            distance=str(d.get("distance", "cosine")),
            created=str(d.get("created", "")),
            margin_lon=float(d.get("margin_lon", 0.0)),
            margin_lat=float(d.get("margin_lat", 0.0)),
            extra={k: v for k, v in d.items() if k not in _CORE},
        )
