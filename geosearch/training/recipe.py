"""`Recipe`: every choice that determines geosearch-lite-clip's shipped heads."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from geosearch.training.augment import Augment

RecipeT = TypeVar("RecipeT")


def recipe_from_args(cls: type[RecipeT], args: argparse.Namespace) -> RecipeT:
    """The recipe dataclass `cls` with each field that has a command-line option of the same name set
    from it; the other fields keep their defaults."""
    given: dict[str, Any] = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return cls(**given)


@dataclass
class Recipe:
    """Everything that determines the shipped heads (written to metrics.json next to them)."""

    seed: int = 0
    views: int = 6
    """Augmented train views besides the clean one (see augment.Augment)."""
    embed_dim: int = 256
    image_proj: str = "linear"  # open_clip timm_proj: linear | mlp
    text_proj: str = "linear"  # open_clip hf_proj_type: none (MiniLM's own space) | linear | mlp
    steps: int = 3000
    eval_every: int = 250
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    feature_dropout: float = 0.4
    class_caption_prob: float = 0.5
    init_logit_scale: float = math.log(1 / 0.07)
    context_length: int = 64
    augment: Augment = field(default_factory=Augment)
