"""What an ingest reports: one `SceneResult` per scene, with a `SceneStatus`, in an `IngestReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SceneStatus(StrEnum):
    """The outcome of one scene. A `str` subclass, so `status == "failed"` keeps working."""

    PENDING = "pending"
    """Planned and not finished yet; never left in a returned report."""
    INGESTED = "ingested"
    """Every chip was written and the scene recorded in the store."""
    ALREADY = "already"
    """Recorded in the store with the same ingest parameters: skipped (unless `force`)."""
    FAILED = "failed"
    """Not ingested; `SceneResult.error` says why. The other scenes go on."""


@dataclass
class SceneResult:
    path: str
    status: SceneStatus
    scene_id: str | None = None
    chips: int = 0
    skipped: int = 0
    """Chips left out for holding less valid data than `TileOptions.min_valid`."""
    error: str | None = None


@dataclass
class IngestReport:
    scenes: list[SceneResult]
    seconds: float
    stage_seconds: dict[str, float]
    """Time spent in each stage ("read", "embed", "caption", "write"); the stages run at the same time,
    so these need not add up to `seconds`."""
    runtime: dict[str, object] = field(default_factory=dict)
    """What the run ran with, read back from the process in the reader thread (`runtime.runtime_report`):
    GDAL's block cache cap in bytes, the GIL switch interval, OMP_WAIT_POLICY, the I/O threads' niceness."""

    @property
    def ok(self) -> bool:
        return all(s.status != SceneStatus.FAILED for s in self.scenes)

    @property
    def chips(self) -> int:
        return sum(s.chips for s in self.scenes)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.scenes)

    def count(self, status: SceneStatus) -> int:
        return sum(s.status == status for s in self.scenes)
