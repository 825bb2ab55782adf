"""Ingest: scenes → chips → embeddings (+ captions) → store, as three overlapping stages.

    reader thread ──q──▶ model (calling thread) ──q──▶ writer thread

The reader decodes chip batches with a small thread pool (GDAL releases the GIL), the model stage
embeds and captions, the writer upserts. Queues are bounded, so memory is a few batches whatever the
scene size, and no stage waits for a whole scene. A scene's chips are served only once its last chip
is written and it is recorded complete; an interrupted run leaves it hidden and the next run redoes it
(see `geosearch.store.states`).

`ingest()` is the one driver: `geosearch ingest` and benchmarks/ingest.py call it too (the command only
adds a progress bar and a summary), so every caller gets the same runtime set-up (`runtime`).

Modules, in the order a run uses them:

- `options`: `IngestOptions`, what to chip and how to schedule it.
- `paths`: `expand_paths`, files / folders / globs → raster files.
- `ingestor`: `ingest`, and the `Ingestor` it drives (`plan`, then `run`).
- `runtime`: the process and thread environment of a run (OpenMP wait policy, GDAL cache, GIL
  interval, thread niceness, memory released after the run).
- `threads`: the long-lived stage and read threads runs share.
- `flow`: the messages between the stages and the `RunState` they share.
- `read`, `model`, `write`: the stages (read + tile → embed + caption → write).
- `report`: `IngestReport`, one `SceneResult` and `SceneStatus` per scene.
"""

from geosearch.ingest.ingestor import Ingestor, ingest
from geosearch.ingest.options import IngestOptions
from geosearch.ingest.paths import RASTER_SUFFIXES, expand_paths
from geosearch.ingest.report import IngestReport, SceneResult, SceneStatus

__all__ = [
    "RASTER_SUFFIXES",
    "IngestOptions",
    "IngestReport",
    "Ingestor",
    "SceneResult",
    "SceneStatus",
    "expand_paths",
    "ingest",
]
