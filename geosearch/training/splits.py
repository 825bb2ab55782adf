"""A dataset split as the embedder trainer sees it: records plus cached frozen-tower features per view."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geosearch.evaluation.datasets import CaptionRecord, load_records
from geosearch.training.features import FeatureCache
from geosearch.training.recipe import Recipe


@dataclass
class Split:
    """One split of one dataset as cached features: image views, captions and class labels."""

    name: str
    records: list[CaptionRecord]
    views: list[NDArray[np.float16]]
    """Per view, (N, 1280) pooled image features; views[0] is the clean image."""

    @property
    def classes(self) -> list[str]:
        return sorted({r.class_name for r in self.records if r.class_name})


def load_split(cache: FeatureCache, root: Path, split: str, views: int, recipe: Recipe) -> Split:
    """`split` of the dataset at `root` with the clean view and `views` augmented ones (recipe's seed and augment)."""
    records = load_records(root, split)
    feats = [cache.images(records, view=v, seed=recipe.seed, aug=recipe.augment) for v in range(views + 1)]
    return Split(f"{root.name}/{split}", records, feats)
