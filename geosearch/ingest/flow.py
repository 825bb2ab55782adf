"""What flows between the stages, and the state of one run they share.

Each stage sends `SceneStart`, `Batch`, `SceneEnd` and `SceneFailed` messages in scene order, then `DONE`.
Queues are polled, so every stage notices within a fraction of a second when another one has failed (`Stop`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geosearch.engine import Engine
from geosearch.errors import GeoSearchError
from geosearch.ingest.options import IngestOptions
from geosearch.ingest.report import SceneResult
from geosearch.schemas import ChipPayload
from geosearch.tilers import Chip, ChipSpec, Scene

Progress = Callable[[int, int, int], None]
"""Called as (chips_done, scenes_done, chips_total) once when the run starts (0, 0, total), then after each
batch written and each scene finished, from the writer thread."""

_POLL_SECONDS = 0.2


def scene_params(params: dict[str, object], path: Path) -> dict[str, object]:
    """The ingest parameters recorded with one scene: the run's, plus the area its chips were limited to
    (`--bbox`), so a box-limited ingest is never taken for the whole scene, nor the other way round."""
    area = getattr(path, "area", None)
    return params if area is None else {**params, "area": [float(v) for v in area]}


@dataclass
class Job:
    """One scene through the run: planned with its chip windows, opened and closed by the reader (its
    metadata stays readable after close, for the writer's record)."""

    path: Path
    result: SceneResult
    scene: Scene | None = None
    specs: list[ChipSpec] = field(default_factory=list)
    begun: bool = False
    """The writer has hidden the scene and cleared its old chips (`ChipStore.begin_scene`)."""
    failed: bool = False
    """Set by the stage that fails the scene first (reader or model): the reader stops reading it and
    the writer ignores its later messages."""


@dataclass
class SceneStart:
    """The scene is open and its batches follow: the writer hides it and clears its old chips first."""

    job: Job


@dataclass
class Batch:
    """Up to `batch_size` chips of one scene; the model stage fills in `vectors` and the captions."""

    job: Job
    chips: list[Chip]
    payloads: list[ChipPayload]
    skipped: int
    vectors: np.ndarray[Any, np.dtype[np.float32]] | None = None


@dataclass
class SceneEnd:
    """The scene's last batch has been sent."""

    job: Job


@dataclass
class SceneFailed:
    """The scene cannot be finished; its later batches are dropped."""

    job: Job
    error: str


DONE = object()
"""Sent after the last scene: the receiving stage passes it on and returns."""


class Stop(Exception):
    """Raised inside a stage when another stage has failed fatally."""


def describe_error(exc: BaseException) -> str:
    """The reason a scene failed: our own errors speak for themselves, others are named by type."""
    return str(exc) if isinstance(exc, GeoSearchError) else f"{type(exc).__name__}: {exc}"


class RunState:
    """What the three stages of one run share: engine, options, the stop flag, timings and progress."""

    def __init__(self, engine: Engine, options: IngestOptions, progress: Progress | None, total_chips: int) -> None:
        self.engine = engine
        self.options = options
        self.progress = progress
        self.total_chips = total_chips
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self.stage_seconds = {"read": 0.0, "embed": 0.0, "caption": 0.0, "write": 0.0}
        self.chips_done = 0
        self.scenes_done = 0
        self.runtime: dict[str, object] = {}
        """What the run ran with, as the reader thread observed it (`runtime.runtime_report`)."""

    def put(self, q: queue.Queue[object], item: object) -> None:
        """Block until `item` is queued. Raises `Stop` once a stage has failed."""
        while True:
            if self.stop.is_set():
                raise Stop
            try:
                q.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue[object]) -> object:
        """Block until an item arrives. Raises `Stop` once a stage has failed."""
        while True:
            if self.stop.is_set():
                raise Stop
            try:
                return q.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue

    def fail(self, exc: BaseException) -> None:
        """Record the first fatal error (re-raised by `Ingestor.run`) and stop every stage."""
        if self.fatal is None:
            self.fatal = exc
        self.stop.set()

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.chips_done, self.scenes_done, self.total_chips)
