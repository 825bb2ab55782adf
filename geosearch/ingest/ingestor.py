"""`ingest`, the one ingest driver (the library, `geosearch ingest` and benchmarks/ingest.py all call it),
and `Ingestor`, which it drives: `plan` the scenes, then `run` the three stages."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Sequence
from concurrent.futures import Future, wait
from pathlib import Path

from geosearch.engine import Engine
from geosearch.ingest.flow import Job, Progress, RunState, Stop, describe_error, scene_params
from geosearch.ingest.model import model_stage
from geosearch.ingest.options import IngestOptions
from geosearch.ingest.paths import expand_paths
from geosearch.ingest.read import read_stage
from geosearch.ingest.report import IngestReport, SceneResult, SceneStatus
from geosearch.ingest.runtime import ingest_runtime
from geosearch.ingest.threads import stage_pool
from geosearch.ingest.write import write_stage
from geosearch.store.states import DELETING
from geosearch.tilers import open_scene

log = logging.getLogger(__name__)


class Ingestor:
    """Runs one ingest: `plan()` the scenes, then `run()` them for a report. Construct once per invocation.

    Call both inside `runtime.ingest_runtime(options)`, as `ingest` does.
    """

    def __init__(self, engine: Engine, options: IngestOptions, progress: Progress | None = None) -> None:
        self.engine = engine
        self.options = options
        self.progress = progress
        self.total_chips = 0
        """Chips the planned scenes will read (set by `plan`)."""

    def ingest_params(self) -> dict[str, object]:
        """JSON-able fingerprint recorded with each scene: a scene recorded with equal parameters (and the
        same file hash, its id) is not redone unless `force`. Loads the captioner when captioning."""
        captioner = self.engine.captioner.model_id if self.options.captions else None
        return {**self.options.tile.chip_params(), "captioner": captioner}

    def plan(self, paths: Sequence[Path]) -> list[Job]:
        """Open every scene once (metadata only) to decide what to do and how many chips there are.

        A scene that cannot be opened is planned as failed, with the reason; the others go on. A scene
        whose record is not complete (a run stopped in it) is planned for ingest again.
        """
        params = self.ingest_params()
        jobs = [self._plan_scene(path, params) for path in paths]
        self.total_chips = sum(len(j.specs) for j in jobs if j.result.status == SceneStatus.PENDING)
        return jobs

    def _plan_scene(self, path: Path, params: dict[str, object]) -> Job:
        job = Job(path=path, result=SceneResult(path=str(path), status=SceneStatus.PENDING))
        try:
            with open_scene(path, self.options.tile) as scene:
                job.result.scene_id = scene.id
                known = self.engine.store.get_scene(scene.id)
                if known is not None and known.ingest_params == scene_params(params, path) and not self.options.force:
                    job.result.status = SceneStatus.ALREADY
                    job.result.chips = known.chips
                    return job
                job.specs = list(scene.windows())
        except Exception as exc:  # an unreadable file must not stop the others
            log.debug("planning %s failed", path, exc_info=True)
            job.result.status = SceneStatus.FAILED
            job.result.error = describe_error(exc)
        return job

    def run(self, jobs: list[Job]) -> IngestReport:
        """Read, embed (+ caption) and write the planned scenes as three overlapping stages:

            reader thread ──q──▶ model (calling thread) ──q──▶ writer thread

        Deletions a stopped run left unfinished are finished first. Raises the first error that stopped
        a stage (e.g. the store failing, or KeyboardInterrupt); scenes finished before it stay ingested,
        the one in progress stays hidden until the next run redoes it.
        """
        started = time.perf_counter()
        store = self.engine.store
        for scene_id, scene_state in store.unfinished_scenes().items():
            if scene_state == DELETING:
                store.delete_scene(scene_id)
        state = RunState(self.engine, self.options, self.progress, self.total_chips)
        state.report_progress()
        to_model: queue.Queue[object] = queue.Queue(self.options.queue_batches)
        to_store: queue.Queue[object] = queue.Queue(self.options.queue_batches)
        pool = stage_pool(self.options.io_nice)
        stages: list[Future[None]] = [
            pool.submit(read_stage, state, jobs, to_model),
            pool.submit(write_stage, state, to_store, self.ingest_params()),
        ]
        try:
            model_stage(state, to_model, to_store)
        except Stop:
            pass
        except BaseException as exc:
            state.fail(exc)
        finally:
            wait(stages)  # the stages return within a poll interval once the run has stopped
        if state.fatal is not None:
            raise state.fatal
        store.finish_ingest()
        _fail_unfinished(jobs)
        return IngestReport(
            scenes=[j.result for j in jobs],
            seconds=time.perf_counter() - started,
            stage_seconds=dict(state.stage_seconds),
            runtime=dict(state.runtime),
        )


def _fail_unfinished(jobs: list[Job]) -> None:
    for job in jobs:
        if job.result.status == SceneStatus.PENDING:  # defensive: a run that raised nothing finished them all
            job.result.status = SceneStatus.FAILED
            job.result.error = job.result.error or "ingest stopped before this scene finished"


def ingest(
    engine: Engine,
    paths: Sequence[str | Path],
    options: IngestOptions | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest files, folders or globs (see `expand_paths`): plan, then run (see `Ingestor.run`), inside
    the run's runtime (`runtime.ingest_runtime`: bounded GDAL cache, short GIL switch interval, memory
    released at the end) on the long-lived stage threads (`threads`).

    Raises:
        InvalidInput: `paths` name no raster at all.
    """
    options = options or IngestOptions()
    ingestor = Ingestor(engine, options, progress)
    with ingest_runtime(options):
        jobs = ingestor.plan(expand_paths(paths))
        return ingestor.run(jobs)
