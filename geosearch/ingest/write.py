"""Write stage (its own thread): upsert each batch's chips, and record a scene once its last chip is in.

A scene is recorded as ingested only after its last chip is written, so an interrupted run redoes it
next time.
"""

from __future__ import annotations

import queue
import time
from datetime import UTC, datetime

from geosearch.ingest.flow import DONE, Batch, Job, RunState, SceneEnd, SceneFailed, Stop
from geosearch.ingest.report import SceneStatus
from geosearch.ingest.runtime import lower_thread_priority
from geosearch.schemas import SceneInfo
from geosearch.store import ChipPoint, chip_id


def write_stage(state: RunState, inbox: queue.Queue[object], ingest_params: dict[str, object]) -> None:
    """Write until `DONE`; a failed scene's later batches are dropped. Any error stops the run."""
    lower_thread_priority(state.options.io_nice)
    model_id = state.engine.embedder.model_id
    failed: set[int] = set()  # id() of the jobs that failed
    try:
        while True:
            item = state.get(inbox)
            if item is DONE:
                return
            if isinstance(item, SceneFailed):
                failed.add(id(item.job))
                item.job.result.status = SceneStatus.FAILED
                item.job.result.error = item.error
                _finish_scene(state, item.job)
            elif isinstance(item, Batch):
                if id(item.job) in failed:
                    continue
                t0 = time.perf_counter()
                _write_batch(state, item, model_id)
                state.stage_seconds["write"] += time.perf_counter() - t0
            elif isinstance(item, SceneEnd) and id(item.job) not in failed:
                t0 = time.perf_counter()
                _record_scene(state, item.job, ingest_params, model_id)
                state.stage_seconds["write"] += time.perf_counter() - t0
    except Stop:
        return
    except BaseException as exc:
        state.fail(exc)


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
            ingest_params=ingest_params,
        )
    )
    # The same path with other content is an updated file: its old chips are stale.
    for old in store.list_scenes():
        if old.path == scene.path and old.id != scene.id:
            store.delete_scene(old.id)
    job.result.status = SceneStatus.INGESTED
    _finish_scene(state, job)


def _finish_scene(state: RunState, job: Job) -> None:
    """Close the scene's file and count it done (ingested or failed)."""
    if job.scene is not None:
        job.scene.close()
        job.scene = None
    state.scenes_done += 1
    state.report_progress()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
