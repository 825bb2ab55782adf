"""Validation of trained heads on cached features, with the metrics `geosearch eval` reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from geosearch.evaluation.datasets import flatten_captions
from geosearch.evaluation.retrieval import retrieval_metrics, zero_shot_accuracy
from geosearch.plugins.caption_memory import CaptionMemory
from geosearch.training.features import FeatureCache
from geosearch.training.heads import Heads
from geosearch.training.splits import Split


def image_vectors(heads: Heads, split: Split) -> NDArray[np.float32]:
    """Unit image vectors of the split's clean view."""
    with torch.no_grad():
        return heads.encode_images(torch.from_numpy(split.views[0])).numpy()  # type: ignore[no-any-return]


def evaluate_split(
    heads: Heads, cache: FeatureCache, split: Split, memory: CaptionMemory | None = None
) -> dict[str, Any]:
    """t2i/i2t recall on the split's captions and zero-shot accuracy over its own classes
    (image vectors through `memory` when given, as the shipped embedder returns them)."""
    heads.eval()
    with torch.no_grad():
        img = image_vectors(heads, split)
        if memory is not None:
            img = memory.expand(img)
        texts, owner = flatten_captions(split.records)
        out = retrieval_metrics(img, heads.encode_texts(torch.from_numpy(cache.texts(texts))).numpy(), owner)
        if split.classes:
            out["zero_shot"] = zero_shot_accuracy(
                img,
                [r.class_name for r in split.records],
                lambda t: heads.encode_texts(torch.from_numpy(cache.texts(t))).numpy(),
            )
    return out


def score(report: dict[str, dict[str, Any]]) -> float:
    """Selection score: mean over the evaluated splits of t2i mR and zero-shot accuracy."""
    values = [m["mR"] for m in report.values()]
    values += [m["zero_shot"]["accuracy"] for m in report.values() if "zero_shot" in m]
    return float(np.mean(values))
