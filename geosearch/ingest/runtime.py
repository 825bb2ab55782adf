"""The process and thread environment of a run: GDAL's block cache, the GIL switch interval, and the
niceness of the I/O threads.

On a few cores, set OMP_WAIT_POLICY=PASSIVE before torch is imported (`geosearch ingest` does, unless
it is set): by default the model's OpenMP threads spin between operators, and the reader, at a lower
priority, starves.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress

import rasterio


def gdal_env(cache_mb: int | None) -> AbstractContextManager[object]:
    """A rasterio.Env bounding GDAL's (process-wide) block cache, unless the user set GDAL_CACHEMAX."""
    if cache_mb is None or "GDAL_CACHEMAX" in os.environ:
        return nullcontext()
    env: AbstractContextManager[object] = rasterio.Env(GDAL_CACHEMAX=cache_mb)
    return env


@contextmanager
def gil_switch_interval(seconds: float | None) -> Iterator[None]:
    """`sys.setswitchinterval(seconds)` inside the block (unless None or 0), the caller's value after."""
    before = sys.getswitchinterval()
    if seconds:
        sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def lower_thread_priority(nice: int | None) -> None:
    """Renice the calling thread by `nice` (Linux applies setpriority on a thread id to that thread).

    A no-op for None or 0, where the OS has no setpriority, or when the OS refuses.
    """
    if nice and hasattr(os, "setpriority"):
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
