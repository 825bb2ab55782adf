"""Ingest: scenes → chips → embeddings (+ captions) → store, as three overlapping stages.

    reader thread ──q──▶ model (calling thread) ──q──▶ writer thread

The reader decodes chip batches with a small thread pool (GDAL releases the GIL), the model
stage embeds and captions, the writer upserts. Queues are bounded, so memory is a few batches
whatever the scene size, and no stage waits for a whole scene. A scene is recorded as ingested
only after its last chip is written, so an interrupted run redoes it next time.

On a few cores, set OMP_WAIT_POLICY=PASSIVE before torch is imported (`geosearch ingest` does, unless
it is set): by default the model's OpenMP threads spin between operators, and the reader, at a lower
priority, starved. Measured at 10,000² on 2 cores: end to end 0.78-0.82 of the model-only rate with
spinning, 0.83-0.91 passive (model-only unchanged within the noise).
"""

from __future__ import annotations

import glob
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geosearch.engine import Engine
from geosearch.errors import GeoSearchError, InvalidInput
from geosearch.plugins.base import EmbeddingCaptioner
from geosearch.schemas import ChipPayload, SceneInfo
from geosearch.store import ChipPoint, chip_id
from geosearch.tilers import Chip, ChipSpec, Scene, TileOptions, open_scene

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class IngestOptions:
    tile: TileOptions = field(default_factory=TileOptions)
    batch_size: int = 32
    captions: bool = True
    force: bool = False
    read_workers: int = 2
    queue_batches: int = 4
    io_nice: int | None = 10
    """Niceness of the read and write threads (Linux, per thread). The model's intra-op threads then win
    the cores whenever both want them: on 2 cores a descheduled OpenMP thread stalls the whole batch.
    None: leave every thread at the process's priority."""
    gil_switch_interval: float | None = 0.0005
    """Seconds a thread may hold the GIL while another waits (`sys.setswitchinterval`), during `run` only.
    The model thread needs the GIL back for each of the ~hundreds of operators per batch while the
    reader and writer run Python; at the default 5 ms it waited. Measured at 10,000² on 2 cores (with
    OMP_WAIT_POLICY=PASSIVE): end to end 0.88 and 0.91 of the model-only rate at 0.5 ms, 0.87 and 0.83
    at 5 ms. None: leave the interpreter's setting."""
    gdal_cache_mb: int | None = 64
    """GDAL's block cache while ingesting. GDAL's default (5 % of RAM) fills as a large scene streams
    through once, so peak RSS grew with scene size (measured, 10,000² mosaic: 1,002 → 452 MB over the
    loaded models). None: GDAL's default or $GDAL_CACHEMAX."""


@dataclass
class SceneResult:
    path: str
    status: str  # "ingested" | "already" | "failed"
    scene_id: str | None = None
    chips: int = 0
    skipped: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    scenes: list[SceneResult]
    seconds: float
    stage_seconds: dict[str, float]

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.scenes)

    @property
    def chips(self) -> int:
        return sum(s.chips for s in self.scenes)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.scenes)

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.scenes)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files, folders (searched recursively for rasters) and glob patterns, in a stable order.

    A path that matches nothing is returned as is, so it is reported as a failed scene with the
    reason rather than silently ignored.
    """
    found: list[Path] = []
    for item in paths:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES))
        elif glob.has_magic(text):
            found.extend(sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()))
        else:
            found.append(path)
    if not found:
        raise InvalidInput("no raster files found in the given paths")
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(str(path.resolve()), path)
    return list(unique.values())


# -- messages between the stages -------------------------------------------------------------
@dataclass
class _Job:
    path: Path
    result: SceneResult
    scene: Scene | None = None
    specs: list[ChipSpec] = field(default_factory=list)
    started: str = ""


@dataclass
class _Batch:
    job: _Job
    chips: list[Chip]
    payloads: list[ChipPayload]
    skipped: int
    vectors: np.ndarray[Any, np.dtype[np.float32]] | None = None


@dataclass
class _SceneEnd:
    job: _Job


@dataclass
class _SceneFailed:
    job: _Job
    error: str


_DONE = object()


class _Stop(Exception):
    """Raised inside a stage when another stage has failed fatally."""


class Ingestor:
    """Runs one ingest; `run()` returns a report. Construct once per invocation."""

    def __init__(
        self,
        engine: Engine,
        options: IngestOptions,
        progress: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.options = options
        self.progress = progress  # (chips_done, scenes_done, chips_total)
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._times = {"read": 0.0, "embed": 0.0, "caption": 0.0, "write": 0.0}
        self._chips_done = 0
        self._scenes_done = 0
        self.total_chips = 0

    # -- planning ---------------------------------------------------------------------------
    def settings(self) -> dict[str, object]:
        captioner = self.engine.captioner.model_id if self.options.captions else None
        return {**self.options.tile.settings(), "captioner": captioner}

    def plan(self, paths: Sequence[Path]) -> list[_Job]:
        """Open every scene once (metadata only) to decide what to do and how many chips there are."""
        settings = self.settings()
        jobs: list[_Job] = []
        for path in paths:
            job = _Job(path=path, result=SceneResult(path=str(path), status="pending"))
            jobs.append(job)
            try:
                with open_scene(path, self.options.tile) as scene:
                    job.result.scene_id = scene.id
                    known = self.engine.store.get_scene(scene.id)
                    if known is not None and known.settings == settings and not self.options.force:
                        job.result.status = "already"
                        job.result.chips = known.chips
                        continue
                    job.specs = list(scene.windows())
            except GeoSearchError as exc:
                job.result.status = "failed"
                job.result.error = str(exc)
            except Exception as exc:  # an unreadable file must not stop the others
                job.result.status = "failed"
                job.result.error = f"{type(exc).__name__}: {exc}"
        self.total_chips = sum(len(j.specs) for j in jobs if j.result.status == "pending")
        return jobs

    # -- stages -----------------------------------------------------------------------------
    def _put(self, q: queue.Queue[object], item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[object]) -> object:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                continue

    def _lower_priority(self) -> None:
        """Renice the calling thread by `io_nice` (Linux applies setpriority on a thread id to that thread)."""
        if self.options.io_nice and hasattr(os, "setpriority"):
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.options.io_nice)

    def _read(self, jobs: list[_Job], out: queue.Queue[object]) -> None:
        size = self.options.batch_size
        self._lower_priority()
        try:
            with ThreadPoolExecutor(
                self.options.read_workers, thread_name_prefix="geosearch-read", initializer=self._lower_priority
            ) as pool:
                for job in jobs:
                    if job.result.status != "pending":
                        continue
                    try:
                        self._read_scene(job, pool, out, size)
                    except (_Stop, KeyboardInterrupt):
                        raise
                    except Exception as exc:
                        message = str(exc) if isinstance(exc, GeoSearchError) else f"{type(exc).__name__}: {exc}"
                        self._put(out, _SceneFailed(job, message))
            self._put(out, _DONE)
        except _Stop:
            return
        except BaseException as exc:
            self._fail(exc)

    def _read_scene(
        self,
        job: _Job,
        pool: ThreadPoolExecutor,
        out: queue.Queue[object],
        size: int,
    ) -> None:
        store = self.engine.store
        scene = open_scene(job.path, self.options.tile)
        job.scene = scene
        job.started = _now()
        if store.get_scene(scene.id) is not None:
            # Re-ingest (forced or with other settings): chips of the old windows must not linger.
            store.delete_scene(scene.id)
        for start in range(0, len(job.specs), size):
            t0 = time.perf_counter()
            chips = list(pool.map(scene.read, job.specs[start : start + size]))
            kept = [c for c in chips if c.valid_fraction >= self.options.tile.min_valid]
            payloads = [scene.payload(c) for c in kept]
            self._times["read"] += time.perf_counter() - t0
            self._put(out, _Batch(job, kept, payloads, skipped=len(chips) - len(kept)))
        self._put(out, _SceneEnd(job))

    def _model(self, inbox: queue.Queue[object], out: queue.Queue[object]) -> None:
        engine = self.engine
        while True:
            item = self._get(inbox)
            if item is _DONE:
                self._put(out, _DONE)
                return
            if isinstance(item, _Batch) and item.chips:
                pixels = np.stack([c.pixels for c in item.chips])
                try:
                    t0 = time.perf_counter()
                    item.vectors = engine.embedder.encode_images(pixels)
                    t1 = time.perf_counter()
                    self._times["embed"] += t1 - t0
                    if self.options.captions:
                        captioner = engine.captioner
                        if (
                            isinstance(captioner, EmbeddingCaptioner)
                            and captioner.embedder.model_id == engine.embedder.model_id
                        ):
                            captions = captioner.caption_vectors(item.vectors)  # no second image pass
                        else:
                            captions = captioner.caption(pixels)
                        self._times["caption"] += time.perf_counter() - t1
                        for payload, caption in zip(item.payloads, captions, strict=True):
                            payload.caption = caption
                except GeoSearchError as exc:
                    item = _SceneFailed(item.job, str(exc))
            self._put(out, item)

    def _write(self, inbox: queue.Queue[object]) -> None:
        self._lower_priority()
        model_id = self.engine.embedder.model_id
        settings = self.settings()
        failed: set[int] = set()
        try:
            while True:
                item = self._get(inbox)
                if item is _DONE:
                    return
                if isinstance(item, _SceneFailed):
                    failed.add(id(item.job))
                    item.job.result.status = "failed"
                    item.job.result.error = item.error
                    self._finish(item.job)
                elif isinstance(item, _Batch):
                    if id(item.job) in failed:
                        continue
                    t0 = time.perf_counter()
                    self._write_batch(item, model_id)
                    self._times["write"] += time.perf_counter() - t0
                elif isinstance(item, _SceneEnd) and id(item.job) not in failed:
                    t0 = time.perf_counter()
                    self._record_scene(item.job, settings, model_id)
                    self._times["write"] += time.perf_counter() - t0
        except _Stop:
            return
        except BaseException as exc:
            self._fail(exc)

    def _write_batch(self, batch: _Batch, model_id: str) -> None:
        result = batch.job.result
        result.skipped += batch.skipped
        if batch.chips:
            assert batch.vectors is not None
            stamp = _now()
            points = []
            for chip, payload, vector in zip(batch.chips, batch.payloads, batch.vectors, strict=True):
                payload.ingested_at = stamp
                payload.model_id = model_id
                pid = chip_id(payload.scene_id, chip.spec.window, payload.chip_size, model_id, payload.scale)
                points.append(ChipPoint(id=pid, vector=vector, payload=payload))
            self.engine.store.upsert(points)
            result.chips += len(points)
        self._chips_done += len(batch.chips) + batch.skipped
        self._report()

    def _record_scene(self, job: _Job, settings: dict[str, object], model_id: str) -> None:
        scene = job.scene
        assert scene is not None
        store = self.engine.store
        store.put_scene(
            SceneInfo(
                id=scene.id,
                path=scene.path,
                crs=scene.crs,
                width=scene.width,
                height=scene.height,
                chips=job.result.chips,
                skipped=job.result.skipped,
                bbox=list(scene.bbox),
                datetime=scene.datetime,
                ingested_at=_now(),
                model_id=model_id,
                settings=settings,
            )
        )
        # The same path with other content is an updated file: its old chips are stale.
        for old in store.list_scenes():
            if old.path == scene.path and old.id != scene.id:
                store.delete_scene(old.id)
        job.result.status = "ingested"
        self._finish(job)

    def _finish(self, job: _Job) -> None:
        if job.scene is not None:
            job.scene.close()
            job.scene = None
        self._scenes_done += 1
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self._chips_done, self._scenes_done, self.total_chips)

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stop.set()

    # -- driver -----------------------------------------------------------------------------
    def run(self, jobs: list[_Job]) -> IngestReport:
        started = time.perf_counter()
        to_model: queue.Queue[object] = queue.Queue(self.options.queue_batches)
        to_store: queue.Queue[object] = queue.Queue(self.options.queue_batches)
        reader = threading.Thread(target=self._read, args=(jobs, to_model), name="geosearch-reader", daemon=True)
        writer = threading.Thread(target=self._write, args=(to_store,), name="geosearch-writer", daemon=True)
        interval = sys.getswitchinterval()
        if self.options.gil_switch_interval:
            sys.setswitchinterval(self.options.gil_switch_interval)
        reader.start()
        writer.start()
        try:
            self._model(to_model, to_store)
        except _Stop:
            pass
        except BaseException as exc:
            self._fail(exc)
        finally:
            reader.join()
            writer.join()
            sys.setswitchinterval(interval)
        if self._fatal is not None:
            raise self._fatal
        self.engine.store.finish_ingest()
        for job in jobs:
            if job.result.status == "pending":  # only reachable after a fatal error
                job.result.status = "failed"
                job.result.error = job.result.error or "ingest stopped before this scene finished"
        return IngestReport(
            scenes=[j.result for j in jobs],
            seconds=time.perf_counter() - started,
            stage_seconds=dict(self._times),
        )


def ingest(
    engine: Engine,
    paths: Sequence[str | Path],
    options: IngestOptions | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> IngestReport:
    """Ingest files, folders or globs; see `Ingestor` for the stages."""
    options = options or IngestOptions()
    ingestor = Ingestor(engine, options, progress)
    with _gdal_env(options.gdal_cache_mb):
        jobs = ingestor.plan(expand_paths(paths))
        return ingestor.run(jobs)


def _gdal_env(cache_mb: int | None) -> AbstractContextManager[object]:
    """A rasterio.Env bounding GDAL's (process-wide) block cache, unless the user set GDAL_CACHEMAX."""
    if cache_mb is None or "GDAL_CACHEMAX" in os.environ:
        return nullcontext()
    env: AbstractContextManager[object] = rasterio.Env(GDAL_CACHEMAX=cache_mb)
    return env


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
