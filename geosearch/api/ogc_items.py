"""The feature selection behind ``/ogc/collections/chips/items``: filters, paging tokens, ranking.

Pure logic over an `Engine` (no HTTP): `select_items(engine, query)` returns one page of chips and the
token of the next page. Two modes:

* **browse** (no ``q``): chips in a stable order, paged with an opaque token. Without a datetime or
  scene filter the order is the store's id order and the token is a chip id (the store's own browse
  token). With one, the selection is a chain of whole scenes (sorted by id) and the token is
  ``<scene id>:<chip id>`` (``<scene id>:`` for the start of a scene).
* **ranked** (``q``): chips ranked by similarity to the text, paged by rank (the token is the integer
  rank of the first feature); the ranking stops at `MAX_RANKED`.

A ``datetime`` filter keeps the chips of scenes whose acquisition time lies in the interval **and the
chips of scenes that record no time**, as OGC API Features Part 1 requires (/req/core/fc-time-response
C: the parameter matches features without a temporal geometry, too).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from geosearch.engine import Engine
from geosearch.errors import InvalidInput
from geosearch.query import BBox, GsdRange, Interval
from geosearch.schemas import CaptionsQuery, SceneInfo, SearchQuery
from geosearch.store import Hit

MAX_LIMIT = 10_000
"""Largest ``limit`` (the standard's example maximum); larger values are a 400."""
DEFAULT_LIMIT = 10
MAX_RANKED = 10_000
"""Deepest rank a ``q`` search pages to: ``next`` links stop after this many features."""
_SCAN_BATCH = 256
"""Browse batch while a client-side filter (gsd) may reject chips: fewer round trips than ``limit``."""


@dataclass(frozen=True)
class ItemsQuery:
    """A validated items request; every field optional but `limit`."""

    limit: int = DEFAULT_LIMIT
    bbox: BBox | None = None
    datetime: Interval | None = None
    q: str | None = None
    scene: str | None = None
    gsd: GsdRange | None = None
    offset: str | None = None

    @property
    def ranked(self) -> bool:
        return self.q is not None


@dataclass
class ItemsPage:
    """One page: the chips, the token of the next page (None after the last), and the size of the whole
    selection when it is known without scanning (no bbox, gsd or q), else None."""

    hits: list[Hit]
    next_offset: str | None
    number_matched: int | None


def select_items(engine: Engine, query: ItemsQuery) -> ItemsPage:
    """One page of the chips that `query` selects.

    Raises:
        InvalidInput: a page token that this query cannot have produced.
    """
    restricted = query.datetime is not None or query.scene is not None
    scenes = candidate_scenes(engine.scenes(), query.datetime, query.scene) if restricted else SceneSet(None)
    if query.ranked:
        hits, nxt = _ranked_page(engine, query, scenes)
        return ItemsPage(hits, nxt, None)
    hits, nxt = _browse_page(engine, query, scenes)
    return ItemsPage(hits, nxt, _count(engine, query, scenes))


# -- which scenes --------------------------------------------------------------------------------
def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def in_interval(value: str | None, interval: Interval) -> bool:
    """Whether an acquisition time lies in a closed interval (either end open); no time always does."""
    if value is None:
        return True
    try:
        moment = _utc(value)
    except ValueError:
        return True  # an unreadable time is no temporal geometry
    start, end = interval
    return (start is None or _utc(start) <= moment) and (end is None or moment <= _utc(end))


@dataclass(frozen=True)
class SceneSet:
    """The scenes a query may draw chips from: `ids` sorted, or None for the whole store."""

    ids: tuple[str, ...] | None
    undated: frozenset[str] = frozenset()
    """Of `ids`, those without an acquisition time (they match every datetime filter)."""


def candidate_scenes(scenes: list[SceneInfo], interval: Interval | None, scene: str | None) -> SceneSet:
    """The scenes that a datetime and scene filter leave, or None when neither restricts anything."""
    if interval is None and scene is None:
        return SceneSet(None)
    kept = [
        s
        for s in scenes
        if (scene is None or s.id == scene) and (interval is None or in_interval(s.datetime, interval))
    ]
    if scene is None and len(kept) == len(scenes):
        return SceneSet(None)
    if scene is not None and not kept and interval is None:
        kept_ids: tuple[str, ...] = (scene,)  # a scene without a record (still ingesting) is still browsable
    else:
        kept_ids = tuple(sorted(s.id for s in kept))
    return SceneSet(kept_ids, frozenset(s.id for s in kept if s.datetime is None))


# -- browse mode ---------------------------------------------------------------------------------
def _keep(query: ItemsQuery) -> Callable[[Hit], bool] | None:
    """The filter the store cannot apply while browsing (chip gsd range), or None."""
    if query.gsd is None:
        return None
    low, high = query.gsd
    return lambda hit: (low is None or hit.payload.gsd >= low) and (high is None or hit.payload.gsd <= high)


def _fill(
    engine: Engine,
    scene: str | None,
    query: ItemsQuery,
    want: int,
    cursor: str | None,
) -> tuple[list[Hit], str | None]:
    """Up to `want` kept chips of one stream (a scene, or the store) from `cursor` on.

    Returns the chips and a cursor to resume at, which is None when the stream is exhausted. The cursor
    is the id of the next candidate, inclusive, like the store's browse token.
    """
    keep = _keep(query)
    out: list[Hit] = []
    while True:
        need = want - len(out)
        batch = need if keep is None else max(need, _SCAN_BATCH)
        hits, nxt = engine.page_chips(CaptionsQuery(bbox=query.bbox, scene=scene, limit=batch, offset=cursor))
        for i, hit in enumerate(hits):
            if keep is None or keep(hit):
                out.append(hit)
            if len(out) == want:
                return out, hits[i + 1].id if i + 1 < len(hits) else nxt
        if nxt is None:
            return out, None
        cursor = nxt


def _split_token(token: str) -> tuple[str, str | None]:
    scene, sep, chip = token.rpartition(":")
    if not sep or not scene:
        raise InvalidInput(f"invalid page token {token!r}")
    return scene, chip or None


def _browse_page(engine: Engine, query: ItemsQuery, scenes: SceneSet) -> tuple[list[Hit], str | None]:
    if scenes.ids is None:
        if query.offset is not None and ":" in query.offset:
            raise InvalidInput(f"invalid page token {query.offset!r}")
        return _fill(engine, None, query, query.limit, query.offset)
    ids = scenes.ids
    start_scene, cursor = _split_token(query.offset) if query.offset else (ids[0] if ids else "", None)
    out: list[Hit] = []
    for index in range(bisect.bisect_left(ids, start_scene), len(ids)):
        scene = ids[index]
        hits, nxt = _fill(engine, scene, query, query.limit - len(out), cursor if scene == start_scene else None)
        out.extend(hits)
        if nxt is not None:
            return out, f"{scene}:{nxt}"
        if len(out) == query.limit:
            return out, f"{ids[index + 1]}:" if index + 1 < len(ids) else None
    return out, None


def _count(engine: Engine, query: ItemsQuery, scenes: SceneSet) -> int | None:
    """numberMatched when the store can count it exactly (no bbox or gsd filter), else None."""
    if query.bbox is not None or query.gsd is not None:
        return None
    if scenes.ids is None:
        return engine.store.count()
    return sum(engine.store.count(scene=s) for s in scenes.ids)


# -- ranked mode ---------------------------------------------------------------------------------
def _rank_offset(token: str | None) -> int:
    if token is None:
        return 0
    try:
        start = int(token)
    except ValueError:
        raise InvalidInput(f"with q, offset is the rank of the first feature (an integer), got {token!r}") from None
    if start < 0:
        raise InvalidInput(f"offset must not be negative, got {start}")
    return start


def _searches(query: ItemsQuery, scenes: SceneSet, depth: int) -> list[SearchQuery]:
    """Engine searches whose merged ranking is exactly the selection's: one, or one for the dated scenes
    plus one per undated scene (the store's datetime filter leaves undated chips out)."""
    base = SearchQuery(q=query.q, bbox=query.bbox, limit=depth, scene=query.scene, gsd=query.gsd)
    if scenes.ids is None:
        return [base]
    if query.scene is not None:  # at most one candidate: the scene itself, whatever its time
        return [base] if scenes.ids else []
    dated = len(scenes.ids) > len(scenes.undated)
    out = [msgspec.structs.replace(base, datetime=query.datetime)] if dated else []
    out += [msgspec.structs.replace(base, scene=s) for s in sorted(scenes.undated)]
    return out


def _ranked_page(engine: Engine, query: ItemsQuery, scenes: SceneSet) -> tuple[list[Hit], str | None]:
    start = _rank_offset(query.offset)
    end = min(start + query.limit, MAX_RANKED)
    if start >= end:
        return [], None
    depth = min(end + 1, MAX_RANKED)  # one more than the page: is there a next page?
    ranked: dict[str, Hit] = {}
    for search in _searches(query, scenes, depth):
        for hit in engine.search(search):
            ranked.setdefault(hit.id, hit)
    hits = sorted(ranked.values(), key=lambda h: -(h.score or 0.0))[:depth]
    page = hits[start:end]
    return page, str(end) if len(hits) > end else None
