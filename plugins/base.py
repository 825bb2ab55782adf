"""The two model interfaces the engine talks to (anything with these attributes plugs in), and the
vector helpers the plugins share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

ImageBatch = NDArray[np.uint8]
"""uint8 RGB chips, shape (N, H, W, 3)."""

Vectors = NDArray[np.float32]
"""float32 L2-normalised rows, shape (N, D)."""


@runtime_checkable
class Embedder(Protocol):
    """Maps chips and text queries into one joint space (cosine similarity)."""

    model_id: str
    """Stable identifier: equal ids mean interchangeable vectors (it names the Qdrant collection)."""
    dim: int

    def encode_images(self, images: ImageBatch) -> Vectors: ...

    def encode_texts(self, texts: Sequence[str]) -> Vectors: ...


@runtime_checkable
class Captioner(Protocol):
    """Writes one English caption per chip."""

    model_id: str

    def caption(self, images: ImageBatch) -> list[str]: ...


@runtime_checkable
class EmbeddingCaptioner(Captioner, Protocol):
    """A captioner that reads its embedder's image vectors, so ingest can embed each chip only once."""

    embedder: Embedder

    def caption_vectors(self, vectors: Vectors) -> list[str]: ...


class Relevance:
    """Raw cosine scores are not comparable across queries (each query's best possible score differs),
    so a user cannot tell "nothing here matches" from a match. This maps a hit's score for a
    query to the share of a broad reference image set (the embedder's train images, as stored) that
    scores lower for the same query: 0.99 means "more like the query than 99 % of reference scenes".
    """

    def __init__(self, reference: Vectors) -> None:
        self.reference = unit_rows(reference)

    def __call__(self, query: Vectors, scores: Sequence[float]) -> list[float]:
        """`query`: one unit vector (D,); `scores`: cosine scores of hits for it."""
        ref = np.sort(self.reference @ np.asarray(query, dtype=np.float32))
        ranks = np.searchsorted(ref, np.asarray(scores, dtype=np.float32), side="right")
        return [float(r) / len(ref) for r in ranks]


def cache_root() -> Path:
    """Where derived files (ONNX exports, converted LM weights, re-encoded captions, training
    features) are cached: ``$GEOSEARCH_CACHE``, else the user cache dir. Never the repository."""
    import platformdirs

    return Path(os.environ.get("GEOSEARCH_CACHE", platformdirs.user_cache_dir("geosearch")))


def check_image_batch(images: object) -> ImageBatch:
    """Validate the (N, H, W, 3) uint8 contract once, so every plugin fails the same way."""
    from geosearch.errors import InvalidInput

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise InvalidInput("images must be a uint8 numpy array of shape (N, H, W, 3)")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidInput(f"images must have shape (N, H, W, 3), got {images.shape}")
    return images


def unit_rows(vectors: object) -> Vectors:
    """float32 rows scaled to unit length (all-zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    out: Vectors = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def nearest_rows(queries: Vectors, bank: Vectors, k: int) -> tuple[NDArray[np.intp], Vectors]:
    """The k most similar bank rows per (unit) query, unordered, with similarity weights floored at a
    tiny positive value, so a query unlike every bank row still gets its k neighbours."""
    sim = queries @ bank.T
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    weight: Vectors = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0) + 1e-6
    return top, weight
