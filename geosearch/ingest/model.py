"""Model stage (the calling thread): embed each batch's chips, then caption them."""

from __future__ import annotations

import logging
import queue
import time

import numpy as np

from geosearch.engine import Engine
from geosearch.errors import GeoSearchError
from geosearch.ingest.flow import DONE, Batch, RunState, SceneFailed
from geosearch.plugins.base import EmbeddingCaptioner, ImageBatch, Vectors

log = logging.getLogger(__name__)


def model_stage(state: RunState, inbox: queue.Queue[object], out: queue.Queue[object]) -> None:
    """Pass every message on, with vectors (and captions) filled into the batches, until `DONE`.

    A model error the engine reports (`GeoSearchError`) fails the batch's scene; any other error is
    raised to `Ingestor.run`, which stops the run.
    """
    while True:
        item = state.get(inbox)
        if item is DONE:
            state.put(out, DONE)
            return
        if isinstance(item, Batch) and item.chips:
            item = _embed_and_caption(state, item)
        state.put(out, item)


def _embed_and_caption(state: RunState, batch: Batch) -> Batch | SceneFailed:
    engine = state.engine
    pixels = np.stack([c.pixels for c in batch.chips])
    try:
        t0 = time.perf_counter()
        batch.vectors = engine.embedder.encode_images(pixels)
        t1 = time.perf_counter()
        state.stage_seconds["embed"] += t1 - t0
        if state.options.captions:
            captions = _caption(engine, pixels, batch.vectors)
            state.stage_seconds["caption"] += time.perf_counter() - t1
            for payload, caption in zip(batch.payloads, captions, strict=True):
                payload.caption = caption
    except GeoSearchError as exc:
        log.debug("model failed on a batch of %s", batch.job.path, exc_info=True)
        batch.job.failed = True
        return SceneFailed(batch.job, str(exc))
    return batch


def _caption(engine: Engine, pixels: ImageBatch, vectors: Vectors) -> list[str]:
    """A captioner working in the embedder's own space captions the vectors: no second image pass."""
    captioner = engine.captioner
    if isinstance(captioner, EmbeddingCaptioner) and captioner.embedder.model_id == engine.embedder.model_id:
        return captioner.caption_vectors(vectors)
    return captioner.caption(pixels)
