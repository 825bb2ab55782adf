"""Train geosearch-lite-clip's heads on one or more Karpathy-format datasets (UCM-Captions, AID + RSICD).

    geosearch-train embedder --data ../shared/data/ucm-captions --data ../shared/data/aid-rsicd \
        --out plugins/weights/lite_clip

Why it is built this way: both pretrained towers stay frozen (the CNN dominates the cost on CPU, and
tuning their upper layers overfit the small caption datasets), so every augmented view and every
distinct text runs through them once (`geosearch.training.features`) and training fits only the two
projection heads on cached pooled features (`geosearch.training.loop`: class-name captions, masked
same-concept negatives). The step count is chosen on the val splits of every dataset (t2i mR and
zero-shot accuracy), and so is the caption memory shipped beside the heads.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geosearch.training.extra import require_train_extra

if TYPE_CHECKING:
    from geosearch.plugins.caption_memory import CaptionMemory
    from geosearch.training.heads import Heads
    from geosearch.training.recipe import Recipe


def build_parser() -> argparse.ArgumentParser:
    from geosearch.training.recipe import Recipe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, action="append", required=True, help="Karpathy-format dataset folder")
    p.add_argument("--out", type=Path, required=True, help="where trained.safetensors + config go")
    p.add_argument("--threads", type=int, default=2)
    d = Recipe()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--views", type=int, default=d.views)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--feature-dropout", type=float, default=d.feature_dropout)
    p.add_argument("--class-caption-prob", type=float, default=d.class_caption_prob)
    p.add_argument("--image-proj", choices=("linear", "mlp"), default=d.image_proj)
    p.add_argument("--text-proj", choices=("none", "linear", "mlp"), default=d.text_proj)
    p.add_argument("--embed-dim", type=int, default=d.embed_dim)
    p.add_argument("--no-memory", action="store_true", help="ship no caption memory")
    return p


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    from geosearch.training.recipe import Recipe
    from geosearch.training.recipe import recipe_from_args as from_args

    return from_args(Recipe, args)


def write_outputs(
    heads: Heads, recipe: Recipe, memory: CaptionMemory | None, report: dict[str, object], out: Path
) -> None:
    """Heads + config, the caption memory (removed when none ships) and metrics.json into `out`."""
    from geosearch.plugins.lite_clip import MEMORY_NAME
    from geosearch.training.heads import save_heads

    save_heads(heads, recipe, out)
    (out / MEMORY_NAME).unlink(missing_ok=True)
    if memory is not None:
        memory.save(out / MEMORY_NAME)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: cache frozen features (resumable), train the heads, build the memory, write weights + metrics."""
    require_train_extra()
    import random

    import torch

    from geosearch.evaluation.retrieval import format_metrics
    from geosearch.training.features import FeatureCache
    from geosearch.training.loop import train
    from geosearch.training.memory import build_memory
    from geosearch.training.scoring import evaluate_split
    from geosearch.training.splits import load_split

    a = build_parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    recipe = recipe_from_args(a)
    cache = FeatureCache()
    train_splits = [load_split(cache, root, "train", recipe.views, recipe) for root in a.data]
    val_splits = [load_split(cache, root, "val", 0, recipe) for root in a.data]
    test_splits = [load_split(cache, root, "test", 0, recipe) for root in a.data]
    heads, report = train(train_splits, val_splits, cache, recipe)
    memory, report["memory"] = (None, {}) if a.no_memory else build_memory(heads, cache, train_splits, val_splits)
    report["test"] = {s.name: evaluate_split(heads, cache, s, memory) for s in test_splits}
    report["test_without_memory"] = {s.name: evaluate_split(heads, cache, s) for s in test_splits}
    for name, m in report["test"].items():
        print(f"test {name}: {format_metrics(m)} zero-shot {m.get('zero_shot')}")
    write_outputs(heads, recipe, memory, report, a.out)


if __name__ == "__main__":
    main()
