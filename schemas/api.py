"""API request and response bodies."""

from __future__ import annotations

from typing import Any

import msgspec


class SearchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /search``: either a text query ``q`` or ``like`` (a chip id), not both."""

    q: str | None = None
    like: str | None = None
    bbox: list[float] | None = None
    limit: int = 10
    scene: str | None = None
    datetime: str | None = None
    gsd: str | None = None
    """Chip ground resolution range ``min/max`` in metres per pixel, ``..`` for an open end."""


class SearchQuery(msgspec.Struct, kw_only=True):
    """A parsed, validated search, whatever the transport (query string, JSON, CLI)."""

    q: str | None = None
    like: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    limit: int = 10
    scene: str | None = None
    datetime: tuple[str | None, str | None] | None = None
    gsd: tuple[float | None, float | None] | None = None


class CaptionsQuery(msgspec.Struct, kw_only=True):
    bbox: tuple[float, float, float, float] | None = None
    limit: int = 100
    offset: str | None = None
    scene: str | None = None


class SceneInfo(msgspec.Struct, kw_only=True):
    id: str
    path: str
    crs: str
    width: int
    height: int
    chips: int
    skipped: int
    bbox: list[float]
    datetime: str | None = None
    ingested_at: str = ""
    model_id: str = ""
    ingest_params: dict[str, Any] = msgspec.field(default_factory=dict)
    """What the scene was ingested with (`Ingestor.ingest_params`): equal parameters skip a re-ingest.
    Records written before this field was named so hold `settings` instead, which decoding ignores:
    their empty `ingest_params` match nothing, so those scenes are re-ingested once."""


class SceneList(msgspec.Struct):
    scenes: list[SceneInfo]
