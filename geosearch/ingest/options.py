"""`IngestOptions`: how to chip, batch and schedule one ingest."""

from __future__ import annotations

from dataclasses import dataclass, field

from geosearch.tilers import TileOptions


@dataclass(frozen=True)
class IngestOptions:
    tile: TileOptions = field(default_factory=TileOptions)
    """How each scene is cut into chips; part of a scene's ingest parameters."""
    batch_size: int = 32
    """Chips per embedding batch, and per message between the stages."""
    captions: bool = True
    """Caption every chip (the captioner then becomes part of a scene's ingest parameters)."""
    force: bool = False
    """Re-ingest scenes the store already holds with the same ingest parameters."""
    read_workers: int = 2
    """Threads decoding the chips of a batch (GDAL releases the GIL while it reads)."""
    queue_batches: int = 4
    """Batches each queue between two stages holds: memory stays a few batches whatever the scene size."""
    io_nice: int | None = 10
    """Niceness of the read and write threads (Linux, per thread). The model's intra-op threads then win
    the cores whenever both want them: on a few cores a descheduled OpenMP thread stalls the whole batch.
    None: leave every thread at the process's priority."""
    gil_switch_interval: float | None = 0.0005
    """Seconds a thread may hold the GIL while another waits (`sys.setswitchinterval`), during `run` only.
    The model thread needs the GIL back for each of the many operators of a batch while the reader and
    writer run Python; at the interpreter's default (5 ms) it waits. None: leave the interpreter's setting."""
    gdal_cache_mb: int | None = 64
    """GDAL's block cache while ingesting. GDAL's default (5 % of RAM) fills as a large scene streams
    through once, so peak memory grew with scene size; a bounded cache keeps it flat.
    None: GDAL's default or $GDAL_CACHEMAX."""
