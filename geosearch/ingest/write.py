"""Write stage (a long-lived stage thread, see `threads`): every store write of a run, in scene order.

Per scene (see `geosearch.store.states`): `SceneStart` hides the scene and deletes the chips it already
has (`begin_scene`), its batches are upserted, and `SceneEnd` records it complete (`put_scene`), which
makes its chips served. A scene that fails midway has its partial chips deleted; a run that stops
(error, Ctrl-C, SIGKILL) leaves the scene hidden, and the next ingest of the file redoes it.
"""

from __future__ import annotations

import logging
import queue
import time
from datetime import UTC, datetime

from geosearch.ingest.flow import DONE, Batch, Job, RunState, SceneEnd, SceneFailed, SceneStart, Stop, scene_params
from geosearch.ingest.report import SceneStatus
from geosearch.ingest.runtime import lower_thread_priority
from geosearch.schemas import SceneInfo
from geosearch.store import ChipPoint, chip_id

log = logging.getLogger(__name__)


def write_stage(state: RunState, inbox: queue.Queue[object], ingest_params: dict[str, object]) -> None:
    """Write until `DONE`; a failed scene's later batches are dropped. Any store error stops the run.

    Never raises: a fatal error is recorded with `state.fail`.
    """
    failed: set[int] = set()  # id() of the jobs that failed
    try:
        lower_thread_priority(state.options.io_nice)
        model_id = state.engine.embedder.model_id
        while True:
            item = state.get(inbox)
            if item is DONE:
                return
            t0 = time.perf_counter()
            if isinstance(item, SceneStart):
                _begin_scene(state, item.job)
            elif isinstance(item, SceneFailed) and id(item.job) not in failed:  # the first reason wins
                failed.add(id(item.job))
                _fail_scene(state, item.job, item.error)
            elif isinstance(item, Batch) and id(item.job) not in failed:
                _write_batch(state, item, model_id)
            elif isinstance(item, SceneEnd) and id(item.job) not in failed:
                _record_scene(state, item.job, ingest_params, model_id)
            state.stage_seconds["write"] += time.perf_counter() - t0
    except Stop:
        return
    except BaseException as exc:
        state.fail(exc)


def _begin_scene(state: RunState, job: Job) -> None:
    scene = job.scene
    assert scene is not None
    cleared = state.engine.store.begin_scene(scene.id)
    job.begun = True
    log.debug("begin scene %s (%s): %d old chips cleared", scene.id, job.path, cleared)


def _fail_scene(state: RunState, job: Job, error: str) -> None:
    """Drop what the scene got written (it stays hidden until then) and count it failed."""
    job.result.status = SceneStatus.FAILED
    job.result.error = error
    if job.begun and job.scene is not None:
        state.engine.store.delete_scene(job.scene.id)
    log.debug("scene %s failed: %s", job.path, error)
    _finish_scene(state, job)


def _write_batch(state: RunState, batch: Batch, model_id: str) -> None:
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
        state.engine.store.upsert(points)
        result.chips += len(points)
    state.chips_done += len(batch.chips) + batch.skipped
    log.debug("wrote %d chips of %s (%d chips done)", len(batch.chips), batch.job.path, state.chips_done)
    state.report_progress()


def _record_scene(state: RunState, job: Job, ingest_params: dict[str, object], model_id: str) -> None:
    scene = job.scene
    assert scene is not None
    store = state.engine.store
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
            ingest_params=scene_params(ingest_params, job.path),
        )
    )
    # The same path with other content is an updated file: its old chips are stale.
    for old in store.list_scenes():
        if old.path == scene.path and old.id != scene.id:
            store.delete_scene(old.id)
    job.result.status = SceneStatus.INGESTED
    log.debug("scene %s complete (%s): %d chips", scene.id, job.path, job.result.chips)
    _finish_scene(state, job)


def _finish_scene(state: RunState, job: Job) -> None:
    """Count the scene done (ingested or failed); the reader has closed (or is closing) its file."""
    job.scene = None
    state.scenes_done += 1
    state.report_progress()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
