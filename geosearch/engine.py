"""The engine facade: one embedder, one store, an optional captioner.

The API, the CLI and the ingest pipeline all go through an `Engine`, so search semantics
(text vs. "more like this", bbox exactness, limits) live in exactly one place.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geosearch.config import Config
from geosearch.errors import InvalidInput, NotFound
from geosearch.models import load_captioner, load_embedder
from geosearch.plugins.base import Captioner, Embedder, Relevance
from geosearch.schemas import CaptionsQuery, SceneInfo, SearchQuery
from geosearch.store import ChipStore, Hit, open_store


class _TextCache:
    """Small LRU of query vectors: map clients repeat the same query on every pan and zoom."""

    def __init__(self, embedder: Embedder, size: int = 512) -> None:
        self._embedder = embedder
        self._size = size
        self._items: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> NDArray[np.float32]:
        with self._lock:
            if text in self._items:
                self._items.move_to_end(text)
                return self._items[text]
        vector: NDArray[np.float32] = self._embedder.encode_texts([text])[0]
        with self._lock:
            self._items[text] = vector
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return vector


class Engine:
    def __init__(
        self,
        embedder: Embedder,
        store: ChipStore,
        *,
        captioner: Captioner | None = None,
        captioner_spec: str | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self._captioner = captioner
        self._captioner_spec = captioner_spec
        self._model_options = model_options or {}
        self._captioner_lock = threading.Lock()
        self._text_vector = _TextCache(embedder)

    @classmethod
    def open(cls, config: Config, *, create: bool = True) -> Engine:
        """Load the embedder named in `config` and open its collection."""
        options: dict[str, Any] = {"batch_size": config.batch_size}
        if config.device:
            options["device"] = config.device
        runtime = {"runtime": config.model_runtime} if config.model_runtime else {}
        embedder = load_embedder(config.model, **options, **runtime)
        store = open_store(
            config.store,
            model_id=embedder.model_id,
            dim=embedder.dim,
            url=config.qdrant_url,
            api_key=config.qdrant_api_key,
            create=create,
            **config.store_options,
        )
        return cls(embedder, store, captioner_spec=config.captioner, model_options=options)

    @property
    def captioner(self) -> Captioner:
        """Loaded on first use: searching never pays for the caption model."""
        with self._captioner_lock:
            if self._captioner is None:
                # Captioners that work in the embedder's space reuse the loaded one instead of a copy.
                self._captioner = load_captioner(self._captioner_spec, embedder=self.embedder, **self._model_options)
            return self._captioner

    # -- search -----------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> list[Hit]:
        if (query.q is None) == (query.like is None):
            raise InvalidInput("give exactly one of q (text) or like (a chip id)")
        exclude: list[str] = []
        if query.like is not None:
            vector = self.store.get_vector(_chip_uuid(query.like))
            if vector is None:
                raise NotFound(f"no chip with id {query.like!r}")
            exclude.append(query.like)
        else:
            vector = self._text_vector(query.q or "")
        hits = self.store.search(
            vector,
            limit=query.limit,
            bbox=query.bbox,
            scene=query.scene,
            datetime=query.datetime,
            exclude=exclude,
            gsd=query.gsd,
        )
        relevance = getattr(self.embedder, "relevance", None)
        if query.q is not None and isinstance(relevance, Relevance) and hits:
            for hit, share in zip(hits, relevance(vector, [h.score or 0.0 for h in hits]), strict=True):
                hit.relevance = share
        return hits

    def page_chips(self, query: CaptionsQuery) -> tuple[list[Hit], str | None]:
        return self.store.browse(bbox=query.bbox, scene=query.scene, limit=query.limit, offset=query.offset)

    # -- chips and scenes -------------------------------------------------------------------
    def chip(self, chip_id: str) -> Hit:
        hit = self.store.get(_chip_uuid(chip_id))
        if hit is None:
            raise NotFound(f"no chip with id {chip_id!r}")
        return hit

    def chip_png(self, chip_id: str) -> bytes:
        """Re-render the chip from its source scene, exactly as it was embedded."""
        from PIL import Image

        from geosearch.tilers import render_chip

        pixels = render_chip(self.chip(chip_id).payload)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    def scenes(self) -> list[SceneInfo]:
        return self.store.list_scenes()

    def scene(self, scene_id: str) -> SceneInfo:
        info = self.store.get_scene(scene_id)
        if info is None:
            raise NotFound(f"no scene with id {scene_id!r}")
        return info

    def delete_scene(self, scene_id: str) -> int:
        """Delete a scene, complete or left unfinished by a stopped run; NotFound if the store has neither."""
        if self.store.get_scene(scene_id) is None and scene_id not in self.store.unfinished_scenes():
            raise NotFound(f"no scene with id {scene_id!r}")
        return self.store.delete_scene(scene_id)

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "model": self.embedder.model_id,
            "dim": self.embedder.dim,
            "backend": self.store.backend,
            "store": self.store.location,
            "chips": self.store.count(),
        }

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chip_uuid(chip_id: str) -> str:
    """Chip ids are UUIDs; anything else cannot name a chip, so it is 'not found', not a 500."""
    try:
        return str(uuid.UUID(chip_id))
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no chip with id {chip_id!r}") from None
