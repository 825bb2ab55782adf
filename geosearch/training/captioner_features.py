"""What the captioners train on: the frozen embedder's image vectors of dihedral views, cached on disk.

Rotations and flips keep an aerial scene's caption true, so view v (0..V-1) is `augment.dihedral`
symmetry v; view 0 is the image as is. Cache files are keyed by the embedder's fingerprint (its model
id and outputs on a few images), so a new embedder never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from geosearch.evaluation.datasets import CaptionRecord, load_images, load_records
from geosearch.training.augment import dihedral


def encode_views(embedder: Any, images: NDArray[np.uint8], views: int, batch: int = 64) -> NDArray[np.float32]:
    """(views, N, D) image embeddings of dihedral views 0..views-1 of (N, H, W, 3) `images`."""
    out = []
    for v in range(views):
        vi = dihedral(torch.from_numpy(images), v, dims=(1, 2)).contiguous().numpy()
        parts = [np.asarray(embedder.encode_images(vi[i : i + batch])) for i in range(0, len(vi), batch)]
        out.append(np.concatenate(parts).astype(np.float32))
    return np.stack(out)


def embedder_fingerprint(embedder: Any, probe: NDArray[np.uint8]) -> str:
    """Hash of the model id and its (rounded) outputs on a few images: changes with the weights."""
    vec = np.asarray(embedder.encode_images(probe), dtype=np.float32)
    h = hashlib.sha256(embedder.model_id.encode())
    h.update(np.round(vec, 3).tobytes())
    return h.hexdigest()[:16]


def cached_features(
    embedder: Any, records: list[CaptionRecord], views: int, cache_dir: Path | None, tag: str
) -> NDArray[np.float32]:
    """(views, N, D) features of `records`, cached under `cache_dir` keyed by the embedder's fingerprint
    (a cache hit decodes only the 4 probe images)."""
    if cache_dir is None:
        return encode_views(embedder, load_images(records), views)
    key = embedder_fingerprint(embedder, load_images(records[:4]))
    path = cache_dir / f"{tag}-{key}-v{views}-n{len(records)}.npy"
    if path.is_file():
        arr: NDArray[np.float32] = np.load(path)
        return arr
    feats = encode_views(embedder, load_images(records), views)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


@dataclass
class CaptionData:
    """Train and val records of every dataset with their cached image features."""

    train: list[CaptionRecord]
    """Every dataset's train records, in dataset order."""
    feats: NDArray[np.float32]
    """(views, len(train), D) features of `train`; view 0 is the image as is."""
    val: list[CaptionRecord]
    """Every dataset's scored val records, in dataset order."""
    vals: dict[str, tuple[list[CaptionRecord], NDArray[np.float32]]]
    """Per dataset name, its val records and their (N, D) features."""

    @property
    def val_feats(self) -> NDArray[np.float32]:
        return np.concatenate([f for _, f in self.vals.values()])


def load_caption_data(
    embedder: Any, roots: list[Path], views: int, cache_dir: Path | None, val_per_dataset: int | None = None
) -> CaptionData:
    """`views` views of every train image and the first `val_per_dataset` val images (one view) of each dataset."""
    train: list[CaptionRecord] = []
    val: list[CaptionRecord] = []
    train_parts: list[NDArray[np.float32]] = []
    vals: dict[str, tuple[list[CaptionRecord], NDArray[np.float32]]] = {}
    for root in roots:
        name = root.resolve().name
        recs = load_records(root, "train")
        train += recs
        train_parts.append(cached_features(embedder, recs, views, cache_dir, f"{name}-train"))
        recs = load_records(root, "val")[:val_per_dataset]
        val += recs
        vals[name] = (recs, cached_features(embedder, recs, 1, cache_dir, f"{name}-val")[0])
    return CaptionData(train, np.concatenate(train_parts, axis=1), val, vals)
