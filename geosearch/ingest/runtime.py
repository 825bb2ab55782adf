"""The process and thread environment of an ingest run, set up here once for every driver: the library's
`ingest()`, `geosearch ingest` (which only adds its progress bar and summary) and benchmarks/ingest.py.

- `prepare_process()`, before any model loads: OMP_WAIT_POLICY=PASSIVE unless set. By default the
  model's OpenMP threads spin between operators, and on a few cores the reader, at a lower priority,
  starves. OpenMP reads it when torch loads, so it only takes effect if called before that.
- `ingest_runtime(options)`, around a run: GDAL's block cache bounded to `gdal_cache_mb`, GDAL's HTTP
  config options for remote scenes (`REMOTE_GDAL_CONFIG`), the short GIL switch interval, and, when the run
  ends, freed heap memory handed back to the OS.
- `lower_thread_priority`: the niceness of the read and write threads (see `threads`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from functools import cache

import rasterio
import rasterio.env

from geosearch.ingest.options import IngestOptions
from geosearch.sources.remote import REMOTE_GDAL_CONFIG as REMOTE_GDAL_CONFIG  # what `remote_env` applies
from geosearch.sources.remote import remote_gdal_env

OMP_WAIT_POLICY = "PASSIVE"
"""What `prepare_process` sets OMP_WAIT_POLICY to, unless the environment sets it."""


def prepare_process() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE unless it is set: call before torch (or ONNX Runtime) is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)


def gdal_env(cache_mb: int | None) -> AbstractContextManager[object]:
    """A rasterio.Env bounding GDAL's (process-wide) block cache to `cache_mb` MiB, unless None or the
    user set GDAL_CACHEMAX. rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, in bytes."""
    if cache_mb is None or "GDAL_CACHEMAX" in os.environ:
        return nullcontext()
    env: AbstractContextManager[object] = rasterio.Env(GDAL_CACHEMAX=cache_mb * 1024 * 1024)
    return env


def gdal_cache_bytes() -> int | None:
    """GDAL's block cache cap right now, in bytes, as GDAL itself reports it (GDALGetCacheMax64)."""
    value = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def remote_env() -> AbstractContextManager[object]:
    """GDAL's config options for remote scenes (`sources.remote.REMOTE_GDAL_CONFIG`) for the whole run; the reader
    also applies them around each remote open, so `open_scene` and `render_chip` get them outside a run."""
    return remote_gdal_env()


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


@contextmanager
def ingest_runtime(options: IngestOptions) -> Iterator[None]:
    """The environment of one run (planning included): GDAL cache and GIL switch interval inside the
    block, the caller's values after it, and freed heap memory returned to the OS at the end."""
    try:
        with gdal_env(options.gdal_cache_mb), remote_env(), gil_switch_interval(options.gil_switch_interval):
            yield
    finally:
        release_memory()


def runtime_report(options: IngestOptions) -> dict[str, object]:
    """What a run actually runs with, read back from the process (call it inside the run's threads):
    GDAL's cache cap in bytes, the GIL switch interval, OMP_WAIT_POLICY and the I/O threads' niceness."""
    return {
        "gdal_cache_bytes": gdal_cache_bytes(),
        "switch_interval_s": sys.getswitchinterval(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "io_nice": thread_niceness(),
        "read_workers": options.read_workers,
    }


def thread_niceness() -> int | None:
    """The calling thread's niceness (Linux), or None where the OS cannot tell."""
    if not hasattr(os, "getpriority"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return None


def lower_thread_priority(nice: int | None) -> None:
    """Renice the calling thread by `nice` (Linux applies setpriority on a thread id to that thread).

    A no-op for None or 0, where the OS has no setpriority, or when the OS refuses.
    """
    if nice and hasattr(os, "setpriority"):
        with suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return lib


def release_memory() -> None:
    """Return the heap memory a run freed to the OS (glibc `malloc_trim`; elsewhere a no-op).

    Chips, batches and GDAL blocks are freed in the stage threads' arenas; without this the process
    keeps them resident after the run.
    """
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)
