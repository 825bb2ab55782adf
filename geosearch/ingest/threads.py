"""Long-lived threads for the read and write stages, shared by every run in the process.

A run used to start its reader, writer and read-worker threads and let them exit at its end. glibc
serves each thread from an arena, and what a thread frees there (decoded GDAL blocks, chips, batches)
stays with the arena after the thread is gone; the next run's fresh threads were handed those arenas
in another order and fragmented them further, so a process calling `ingest()` again and again kept
growing (measured: about 10 MB a call with the tiny test model, 100 MB over the first ten calls).
Threads that live as long as the process keep their arenas, and each run reuses what the last freed.

Pools are keyed by niceness (a thread cannot be reniced back up without privileges) and size; idle
threads cost nothing but their stacks. After a fork the child starts with no pools.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from geosearch.ingest.runtime import lower_thread_priority

STAGE_THREADS = 8
"""Most stage threads (reader + writer per run): runs beyond four at once in one process wait their turn."""

_lock = threading.Lock()
_pools: dict[tuple[str, int | None, int], ThreadPoolExecutor] = {}


def stage_pool(nice: int | None) -> ThreadPoolExecutor:
    """Threads for the read and write stages of runs, at niceness `nice`."""
    return _pool("stage", nice, STAGE_THREADS)


def read_pool(nice: int | None, workers: int) -> ThreadPoolExecutor:
    """`workers` threads decoding chips (GDAL releases the GIL while it reads), at niceness `nice`."""
    return _pool("read", nice, workers)


def _pool(kind: str, nice: int | None, workers: int) -> ThreadPoolExecutor:
    key = (kind, nice, workers)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ThreadPoolExecutor(
                workers, thread_name_prefix=f"geosearch-{kind}", initializer=lower_thread_priority, initargs=(nice,)
            )
            _pools[key] = pool
        return pool


def _forget_pools() -> None:
    """In a forked child the pools' threads do not exist: start afresh."""
    global _lock
    _lock = threading.Lock()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)
