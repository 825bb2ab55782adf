"""Image augmentation shared by the trainers: the dihedral group and the embedder's field views.

`dihedral` is the one implementation of the 8 rotations/flips (overhead imagery has no 'up'): the
embedder trainer draws one per augmented view, the captioner trainer encodes views 0..V-1 in order.
`field_view` follows how chips arrive in the field (`Augment`): a random-resized crop over a wide
area range (a chip shows part of a scene), down-then-up resampling (the same ground seen coarser),
a dihedral transform and colour jitter (sensors and processing differ in colour).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE_SIZE = 224


def dihedral(x: torch.Tensor, k: int, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """Symmetry ``k`` (0..7) of the square over the (height, width) ``dims``: for k >= 4 a flip of the
    width axis, then k % 4 quarter turns (`torch.rot90`'s direction). k = 0 is the identity."""
    if k >= 4:
        x = x.flip(dims[1])
    return torch.rot90(x, k % 4, dims=dims)


@dataclass(frozen=True)
class Augment:
    """Field-like augmentation of one training view (view 0 is always the clean image)."""

    crop_area: tuple[float, float] = (0.25, 1.0)
    """Random-resized crop: fraction of the image area kept."""
    coarsen: tuple[float, float] = (1.0, 4.0)
    """Down-then-up resampling factor range (log-uniform): 1x-4x coarser ground resolution."""
    jitter: float = 0.3
    """Brightness, contrast and saturation each scaled by 1 +- jitter."""


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) → (C, size, size), bilinear with antialiasing."""
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def random_crop(img: torch.Tensor, rng: random.Random, area_range: tuple[float, float]) -> torch.Tensor:
    """A crop of a random area fraction in `area_range` and aspect ratio in 3/4..4/3 (at least 8 px a side)."""
    _, h, w = img.shape
    area = rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    ch = max(8, min(h, round(math.sqrt(area * aspect) * h)))
    cw = max(8, min(w, round(math.sqrt(area / aspect) * w)))
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    return img[:, top : top + ch, left : left + cw]


def colour_jitter(x: torch.Tensor, rng: random.Random, jitter: float) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor drawn from 1 +- jitter."""
    b, c, s = (1 + rng.uniform(-jitter, jitter) for _ in range(3))
    x = x * b
    mean = x.mean()
    x = (x - mean) * c + mean
    grey = x.mean(dim=0, keepdim=True)
    return (x - grey) * s + grey


def field_view(img: torch.Tensor, view: int, rng: random.Random, aug: Augment, size: int = IMAGE_SIZE) -> torch.Tensor:
    """float (3, H, W) in [0, 1] → (3, size, size): view 0 clean, other views augmented (deterministic in `rng`)."""
    if view == 0:
        return resize(img, size) if img.shape[-2:] != (size, size) else img
    x = resize(random_crop(img, rng, aug.crop_area), size)
    factor = math.exp(rng.uniform(math.log(aug.coarsen[0]), math.log(aug.coarsen[1])))
    if factor > 1.05:
        x = resize(resize(x, max(8, round(size / factor))), size)
    if aug.jitter > 0:
        x = colour_jitter(x, rng, aug.jitter)
    return dihedral(x.clamp(0, 1), rng.randrange(8))
