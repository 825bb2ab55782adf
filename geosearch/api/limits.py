"""Limits on what one request may ask of the server; each refusal is a 4xx (or 503) with a reason.

=========================  =====================================================  ======
limit                      where                                                  status
=========================  =====================================================  ======
body size 64 KiB           every geosearch route (``POST /search`` is the only    413
                           one that reads a body)
query text 512 chars       ``q`` of /search (GET, POST), /ogc items, /tiles       400
``limit``                  /search, /captions: clamped to 1000; /ogc items:       400
                           1..10000; /tiles: 1..10000 (values below 1: 400)
bbox                       finite, lon -180..180, lat -90..90, south <= north     400
ids in paths               chip ids are UUIDs, scene ids 32 hex digits: anything  404
                           else (``..``, ``%2e%2e``, a path) names nothing
time                       searches, tiles and chip renderings run in a bounded   503
                           pool of worker threads for at most
                           ``GEOSEARCH_REQUEST_TIMEOUT`` seconds (default 30)
=========================  =====================================================  ======

A timed-out worker thread cannot be killed: the client gets its 503 at the deadline and the thread
finishes (or not) on its own, holding one of the `WORKER_THREADS` slots meanwhile, so a model that
hangs for good degrades the bounded routes to prompt 503s, never the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from litestar.params import Parameter

from geosearch.api.errors import RequestTimeout
from geosearch.config import DEFAULT_REQUEST_TIMEOUT
from geosearch.errors import InvalidInput, NotFound
from geosearch.query import parse_text

MAX_BODY_BYTES = 64 * 1024
"""Largest request body a geosearch route reads (a search request is a few hundred bytes)."""
MAX_QUERY_CHARS = 512
"""Longest query text: the text encoders read at most 77 tokens, a few hundred characters."""
WORKER_THREADS = 8
"""Threads that run the bounded work (model inference, raster reads) at once; more requests wait."""

SCENE_ID = re.compile(r"[0-9a-f]{32}")
"""A scene id: the blake2b-128 hex digest of the file's bytes (`geosearch.tilers.ids.scene_id`)."""
SceneIdParam = Annotated[
    str, Parameter(description="scene id: 32 lowercase hex digits", schema_extra={"pattern": r"^[0-9a-f]{32}$"})
]
"""A scene id path parameter, documented (`check_scene_id` checks it, with a reason)."""
ChipFileParam = Annotated[
    str,
    Parameter(description="<chip id>.png; chip ids are UUIDs", schema_extra={"pattern": r"^[0-9a-f-]{36}\.png$"}),
]

T = TypeVar("T")


def api_text(q: str | None) -> str:
    """The query text of a request: not empty, at most `MAX_QUERY_CHARS` characters."""
    if q is not None and len(q.strip()) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query text q is longer than {MAX_QUERY_CHARS} characters ({len(q.strip())})")
    return parse_text(q)


def optional_text(q: str | None) -> str | None:
    """`api_text`, with a missing or blank `q` meaning no query."""
    return api_text(q) if q is not None and q.strip() else None


def check_scene_id(scene_id: str) -> str:
    """`scene_id` when it has the form of one, else NotFound (it names nothing; it is never a path)."""
    if not SCENE_ID.fullmatch(scene_id):
        raise NotFound(f"no scene with id {scene_id!r} (scene ids are 32 lowercase hex digits)")
    return scene_id


class Worker:
    """Runs blocking work in a bounded thread pool with a deadline (`request_timeout` seconds)."""

    def __init__(self, request_timeout: float = DEFAULT_REQUEST_TIMEOUT, threads: int = WORKER_THREADS) -> None:
        self.request_timeout = request_timeout
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created in the server's event loop, on first use
            self._limiter = anyio.CapacityLimiter(self.threads)
        return self._limiter

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread; RequestTimeout when it (or its wait for a thread) runs too long."""
        with anyio.move_on_after(self.request_timeout):
            return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=self.limiter)
        raise RequestTimeout(
            f"the request took longer than {self.request_timeout:g} s (GEOSEARCH_REQUEST_TIMEOUT); "
            "the server is busy or the query too costly: try again, or ask for less",
            {"Retry-After": "1"},
        )


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_QUERY_CHARS",
    "SCENE_ID",
    "ChipFileParam",
    "SceneIdParam",
    "Worker",
    "api_text",
    "check_scene_id",
    "optional_text",
]
