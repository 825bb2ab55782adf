"""Read stage (a long-lived stage thread, see `threads`): open each planned scene and send its chips in
batches.

A small pool of read threads decodes the chips of a batch at once (GDAL releases the GIL while it reads).
"""

from __future__ import annotations

import logging
import queue
import time

from geosearch.ingest.flow import (
    DONE,
    Batch,
    Job,
    RunState,
    SceneEnd,
    SceneFailed,
    SceneStart,
    Stop,
    describe_error,
)
from geosearch.ingest.report import SceneStatus
from geosearch.ingest.runtime import lower_thread_priority, runtime_report
from geosearch.ingest.threads import read_pool
from geosearch.tilers import open_scene

log = logging.getLogger(__name__)


def read_stage(state: RunState, jobs: list[Job], out: queue.Queue[object]) -> None:
    """Send every pending scene's `SceneStart`, batches, then `SceneEnd` (or `SceneFailed`), then `DONE`.

    A scene that fails to read is reported and the next one goes on; any other error stops the run.
    Never raises: a fatal error is recorded with `state.fail`.
    """
    try:
        lower_thread_priority(state.options.io_nice)
        state.runtime = runtime_report(state.options)
        log.debug("ingest runtime (reader thread): %s", " ".join(f"{k}={v}" for k, v in state.runtime.items()))
        for job in jobs:
            if job.result.status != SceneStatus.PENDING:
                continue
            try:
                _read_scene(state, job, out)
            except (Stop, KeyboardInterrupt):
                raise
            except Exception as exc:
                log.debug("reading %s failed", job.path, exc_info=True)
                job.failed = True
                state.put(out, SceneFailed(job, describe_error(exc)))
        state.put(out, DONE)
    except Stop:
        return
    except BaseException as exc:
        state.fail(exc)


def _read_scene(state: RunState, job: Job, out: queue.Queue[object]) -> None:
    """Open the scene, send its messages, and close it: only this thread reads it, so only it closes it.
    Stops early once another stage has failed the scene."""
    tile = state.options.tile
    size = state.options.batch_size
    pool = read_pool(state.options.io_nice, state.options.read_workers)
    with open_scene(job.path, tile) as scene:
        job.scene = scene
        state.put(out, SceneStart(job))
        for start in range(0, len(job.specs), size):
            if job.failed:
                return
            t0 = time.perf_counter()
            chips = list(pool.map(scene.read, job.specs[start : start + size]))
            kept = [c for c in chips if c.valid_fraction >= tile.min_valid]
            payloads = [scene.payload(c) for c in kept]
            state.stage_seconds["read"] += time.perf_counter() - t0
            state.put(out, Batch(job, kept, payloads, skipped=len(chips) - len(kept)))
        state.put(out, SceneEnd(job))
