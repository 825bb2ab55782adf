"""The caption memory shipped beside the heads: built over the train images, its k and mixing
weight chosen on val (`plugins/caption_memory.py` applies it at runtime)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from geosearch.evaluation.datasets import CaptionRecord, flatten_captions
from geosearch.plugins.caption_memory import CaptionMemory
from geosearch.training.features import FeatureCache
from geosearch.training.heads import Heads
from geosearch.training.scoring import evaluate_split, image_vectors, score
from geosearch.training.splits import Split

MEMORY_KS = (5, 10, 20)
MEMORY_WEIGHTS = (0.5, 1.0, 2.0)
"""The caption-memory grid searched on val (k nearest train images x mixing weight)."""


def caption_vectors(heads: Heads, cache: FeatureCache, records: Sequence[CaptionRecord]) -> NDArray[np.float32]:
    """Per image, the mean of its unit caption vectors (what the caption memory mixes in)."""
    texts, owner = flatten_captions(list(records))
    with torch.no_grad():
        vec = heads.encode_texts(torch.from_numpy(cache.texts(texts))).numpy()
    out = np.zeros((len(records), vec.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vec)
    out /= np.bincount(owner, minlength=len(records))[:, None].astype(np.float32)
    return out


def memory_bank(
    heads: Heads, cache: FeatureCache, splits: Sequence[Split]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(image vectors, caption vectors) of every image in `splits`: what a `CaptionMemory` holds."""
    images = np.concatenate([image_vectors(heads, s) for s in splits])
    return images, np.concatenate([caption_vectors(heads, cache, s.records) for s in splits])


def build_memory(
    heads: Heads, cache: FeatureCache, train_splits: Sequence[Split], val_splits: Sequence[Split]
) -> tuple[CaptionMemory | None, dict[str, Any]]:
    """The caption memory over every train split, with k and weight chosen on val `score`; None when
    no setting beats the plain model on val (then none ships)."""
    images, captions = memory_bank(heads, cache, train_splits)
    plain = score({s.name: evaluate_split(heads, cache, s) for s in val_splits})
    report: dict[str, Any] = {"val_score_without": plain, "grid": []}
    best: tuple[float, CaptionMemory | None] = (plain, None)
    for k in MEMORY_KS:
        for weight in MEMORY_WEIGHTS:
            memory = CaptionMemory(images, captions, k, weight)
            sc = score({s.name: evaluate_split(heads, cache, s, memory) for s in val_splits})
            report["grid"].append({"k": k, "weight": weight, "val_score": sc})
            print(f"memory k={k} weight={weight}: val score {sc:.2f} (without {plain:.2f})", flush=True)
            if sc > best[0]:
                best = (sc, memory)
    chosen = best[1]
    report["chosen"] = None if chosen is None else {"k": chosen.k, "weight": chosen.weight, "val_score": best[0]}
    return chosen, report
