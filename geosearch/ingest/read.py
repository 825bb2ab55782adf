"""Read stage (its own thread): open each planned scene and send its chips in batches.

A small thread pool decodes the chips of a batch at once (GDAL releases the GIL while it reads).
"""

from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor

from geosearch.ingest.flow import DONE, Batch, Job, RunState, SceneEnd, SceneFailed, Stop, describe_error
from geosearch.ingest.report import SceneStatus
from geosearch.ingest.runtime import lower_thread_priority
from geosearch.tilers import open_scene


def read_stage(state: RunState, jobs: list[Job], out: queue.Queue[object]) -> None:
    """Send every pending scene's batches, then `SceneEnd` (or `SceneFailed`), then `DONE`.

    A scene that fails to read is reported and the next one goes on; any other error stops the run.
    """
    nice = state.options.io_nice
    lower_thread_priority(nice)
    try:
        with ThreadPoolExecutor(
            state.options.read_workers,
            thread_name_prefix="geosearch-read",
            initializer=lower_thread_priority,
            initargs=(nice,),
        ) as pool:
            for job in jobs:
                if job.result.status != SceneStatus.PENDING:
                    continue
                try:
                    _read_scene(state, job, pool, out)
                except (Stop, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    state.put(out, SceneFailed(job, describe_error(exc)))
        state.put(out, DONE)
    except Stop:
        return
    except BaseException as exc:
        state.fail(exc)


def _read_scene(state: RunState, job: Job, pool: ThreadPoolExecutor, out: queue.Queue[object]) -> None:
    store = state.engine.store
    tile = state.options.tile
    size = state.options.batch_size
    scene = open_scene(job.path, tile)
    job.scene = scene
    if store.get_scene(scene.id) is not None:
        # Re-ingest (forced or with other ingest parameters): chips of the old windows must not linger.
        store.delete_scene(scene.id)
    for start in range(0, len(job.specs), size):
        t0 = time.perf_counter()
        chips = list(pool.map(scene.read, job.specs[start : start + size]))
        kept = [c for c in chips if c.valid_fraction >= tile.min_valid]
        payloads = [scene.payload(c) for c in kept]
        state.stage_seconds["read"] += time.perf_counter() - t0
        state.put(out, Batch(job, kept, payloads, skipped=len(chips) - len(kept)))
    state.put(out, SceneEnd(job))
