"""`Ingestor`: plan the scenes, then run the three stages; `ingest` does both for a list of paths."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from geosearch.engine import Engine
from geosearch.ingest.flow import Job, Progress, RunState, Stop, describe_error
from geosearch.ingest.model import model_stage
from geosearch.ingest.options import IngestOptions
from geosearch.ingest.paths import expand_paths
from geosearch.ingest.read import read_stage
from geosearch.ingest.report import IngestReport, SceneResult, SceneStatus
from geosearch.ingest.runtime import gdal_env, gil_switch_interval
from geosearch.ingest.write import write_stage
from geosearch.tilers import open_scene


class Ingestor:
    """Runs one ingest: `plan()` the scenes, then `run()` them for a report. Construct once per invocation."""

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

        A scene that cannot be opened is planned as failed, with the reason; the others go on.
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
                if known is not None and known.ingest_params == params and not self.options.force:
                    job.result.status = SceneStatus.ALREADY
                    job.result.chips = known.chips
                    return job
                job.specs = list(scene.windows())
        except Exception as exc:  # an unreadable file must not stop the others
            job.result.status = SceneStatus.FAILED
            job.result.error = describe_error(exc)
        return job

    def run(self, jobs: list[Job]) -> IngestReport:
        """Read, embed (+ caption) and write the planned scenes as three overlapping stages:

            reader thread ──q──▶ model (calling thread) ──q──▶ writer thread

        Raises the first error that stopped a stage (e.g. the store failing, or KeyboardInterrupt);
        scenes finished before it stay ingested.
        """
        started = time.perf_counter()
        state = RunState(self.engine, self.options, self.progress, self.total_chips)
        to_model: queue.Queue[object] = queue.Queue(self.options.queue_batches)
        to_store: queue.Queue[object] = queue.Queue(self.options.queue_batches)
        reader = threading.Thread(target=read_stage, args=(state, jobs, to_model), name="geosearch-reader", daemon=True)
        writer = threading.Thread(
            target=write_stage, args=(state, to_store, self.ingest_params()), name="geosearch-writer", daemon=True
        )
        with gil_switch_interval(self.options.gil_switch_interval):
            reader.start()
            writer.start()
            try:
                model_stage(state, to_model, to_store)
            except Stop:
                pass
            except BaseException as exc:
                state.fail(exc)
            finally:
                reader.join()
                writer.join()
        if state.fatal is not None:
            raise state.fatal
        self.engine.store.finish_ingest()
        _fail_unfinished(jobs)
        return IngestReport(
            scenes=[j.result for j in jobs],
            seconds=time.perf_counter() - started,
            stage_seconds=dict(state.stage_seconds),
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
    """Ingest files, folders or globs (see `expand_paths`) with a bounded GDAL cache; see `Ingestor.run`.

    Raises:
        InvalidInput: `paths` name no raster at all.
    """
    options = options or IngestOptions()
    ingestor = Ingestor(engine, options, progress)
    with gdal_env(options.gdal_cache_mb):
        jobs = ingestor.plan(expand_paths(paths))
        return ingestor.run(jobs)
