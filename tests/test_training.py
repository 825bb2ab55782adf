"""Training pieces of geosearch-lite-clip: field augmentation, feature cache keys, the head trainer,
and that trained heads load into the shipped open_clip model."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from geosearch.plugins import lite_clip

from geosearch.training.data import CaptionRecord, class_phrase
from geosearch.training.embedder import Heads, Recipe, Split, evaluate_split, save_heads, train
from geosearch.training.features import Augment, FeatureCache, field_view


def test_field_view_shapes_and_determinism() -> None:
    img = torch.rand(3, 150, 150)
    clean = field_view(img, 0, random.Random(0), Augment())
    assert clean.shape == (3, 224, 224)
    a = field_view(img, 3, random.Random(7), Augment())
    b = field_view(img, 3, random.Random(7), Augment())
    c = field_view(img, 3, random.Random(8), Augment())
    assert a.shape == (3, 224, 224) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_coarsening_removes_fine_detail() -> None:
    """A view resampled 4x coarser keeps the mean but loses the pixel-level checkerboard."""
    img = torch.zeros(3, 224, 224)
    img[:, ::2, ::2] = 1
    img[:, 1::2, 1::2] = 1
    coarse = field_view(img, 1, random.Random(0), Augment(crop_area=(1.0, 1.0), coarsen=(4.0, 4.0), jitter=0.0))
    assert abs(float(coarse.mean()) - 0.5) < 0.05
    assert float(coarse.std()) < 0.1 < float(img.std())


def _synthetic_splits(n_per_class: int, seed: int) -> Split:
    """Three classes whose pooled features differ in a few directions, captioned by class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, 1280)).astype(np.float32)
    classes = ("beach", "farmland", "storagetanks")
    records, feats = [], []
    for c, name in enumerate(classes):
        for i in range(n_per_class):
            caption = f"there is a {class_phrase(name)} in the picture ."
            records.append(CaptionRecord(len(records), Path(f"{name}_{i}.jpg"), "train", name, (caption,)))
            feats.append(np.maximum(centres[c] + rng.normal(0, 0.5, 1280), 0))
    views = np.stack(feats).astype(np.float16)
    return Split(f"synthetic{seed}", records, [views, views])


def test_train_separates_planted_classes(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    recipe = Recipe(views=1, steps=150, eval_every=50, batch_size=48)
    heads, report = train([_synthetic_splits(30, 0)], [_synthetic_splits(10, 0)], cache, recipe, log=False)
    val = evaluate_split(heads, cache, _synthetic_splits(10, 0))
    assert val["zero_shot"] == {"accuracy": 100.0, "n_classes": 3}
    # Three classes, one caption text each: a caption finds an image of its class at rank 1.
    assert val["t2i"]["R@1"] == 100.0 or val["t2i"]["R@10"] == 100.0
    assert report["best_step"] in (50, 100, 150) and len(report["history"]) == 3


@pytest.mark.parametrize(
    ("image_proj", "text_proj", "dim"), [("linear", "linear", 256), ("mlp", "linear", 128), ("linear", "none", 384)]
)
def test_trained_heads_load_into_the_open_clip_model(tmp_path: Path, image_proj: str, text_proj: str, dim: int) -> None:
    """The state written by training names every trained tensor as open_clip does (load_trained checks both ways)."""
    recipe = Recipe(image_proj=image_proj, text_proj=text_proj, embed_dim=dim)
    heads = Heads(recipe)
    save_heads(heads, recipe, tmp_path)
    model = lite_clip.build_model(config_path=tmp_path / lite_clip.CONFIG_FILE.name)
    lite_clip.load_trained(model, tmp_path / lite_clip.TRAINED_FILE.name)
    feats = torch.rand(2, 1280)
    with torch.no_grad():
        expected = heads.image(feats)
        got = model.visual.head(feats)  # type: ignore[operator]
    assert got.shape == (2, dim)
    assert torch.allclose(got, expected, atol=2e-2)  # heads ship as float16
