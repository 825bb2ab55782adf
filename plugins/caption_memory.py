"""Caption memory: image vectors pulled toward the captions of their nearest train images.

With a few thousand train images, a small image head on frozen ImageNet features ranks the images
of one class nearly at random for a caption; text-text similarity inside the text tower is far
sharper. So, at indexing time, each image vector v becomes ``normalise(v + weight * c)``, where c is
the similarity-weighted mean of the caption vectors (mean of each image's five unit caption vectors)
of v's k nearest train images. Queries are untouched, the dimension stays, the store sees one
ordinary vector per chip; what it gains on val and test is in the lite-clip model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geosearch.errors import ModelError
from geosearch.plugins.base import nearest_rows, unit_rows

EXPAND_CHUNK = 1024


class CaptionMemory:
    """Train image vectors (raw, from the same embedder) + their caption vectors, k and weight."""

    def __init__(self, image_vectors: NDArray[np.float32], caption_vectors: NDArray[np.float32], k: int, weight: float):
        if image_vectors.ndim != 2 or image_vectors.shape != caption_vectors.shape:
            raise ModelError(
                f"caption memory: image vectors {image_vectors.shape} and caption vectors "
                f"{caption_vectors.shape} must have the same (N, dim) shape"
            )
        if k < 1 or weight < 0:
            raise ModelError(f"caption memory: need k >= 1 and weight >= 0 (got {k}, {weight})")
        self.image_vectors = unit_rows(image_vectors)
        self.caption_vectors = unit_rows(caption_vectors)
        self.k = min(int(k), len(image_vectors))
        self.weight = float(weight)

    @property
    def dim(self) -> int:
        return int(self.image_vectors.shape[1])

    def expand(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        """Unit (N, dim) image vectors → unit vectors mixed with their neighbours' captions."""
        if len(vectors) > EXPAND_CHUNK:  # bounds the (rows x memory) similarity matrix
            return np.concatenate(
                [self.expand(vectors[i : i + EXPAND_CHUNK]) for i in range(0, len(vectors), EXPAND_CHUNK)]
            )
        if len(vectors) == 0 or self.weight == 0:
            return vectors
        top, w = nearest_rows(vectors, self.image_vectors, self.k)
        mixed = np.einsum("nk,nkd->nd", w, self.caption_vectors[top]) / w.sum(axis=1, keepdims=True)
        return unit_rows(vectors + self.weight * unit_rows(mixed))

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        meta = {"k": str(self.k), "weight": json.dumps(self.weight)}
        tensors = {
            "image_vectors": self.image_vectors.astype(np.float16),
            "caption_vectors": self.caption_vectors.astype(np.float16),
        }
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> CaptionMemory:
        from safetensors import safe_open

        if not path.is_file():
            raise ModelError(f"caption memory missing: {path}")
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if "k" not in meta or "weight" not in meta:
                raise ModelError(f"caption memory {path} lacks its k/weight metadata")
            images = f.get_tensor("image_vectors").astype(np.float32)
            captions = f.get_tensor("caption_vectors").astype(np.float32)
        return cls(images, captions, int(meta["k"]), float(json.loads(meta["weight"])))
