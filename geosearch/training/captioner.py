"""Train geosearch-lite-capret's prefix mapper (RS-CapRet recipe) and build the nearest-caption bank.

    geosearch-train captioner --data ../shared/data/ucm-captions \
        --out plugins/weights/lite_capret --bank-out plugins/weights/nearest_caption
    geosearch-train captioner --stage bank \
        --data ../shared/data/ucm-captions --data ../shared/data/aid-rsicd

The bank stage takes every dataset's train split, picks k on the mean of their val CIDErs, and
writes the bank (default: the shipped one) + metrics.json, with the current default embedder
(or --embedder). Image features are cached under the user cache dir, keyed by the embedder's
fingerprint, so a new embedder never reuses stale vectors.

CPU recipe: image features are computed once by the frozen embedder over the dihedral views
(rotations/flips keep an aerial scene's caption true); the frozen LM runs in bf16 and the softmax
is restricted to the token set of the train captions, which cuts the LM's full-vocabulary head out
of every step; the checkpoint with the best val CIDEr is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from geosearch.training.extra import require_train_extra

if TYPE_CHECKING:
    from geosearch.training.mapper import MapperRecipe


def build_parser() -> argparse.ArgumentParser:
    from geosearch.plugins.base import cache_root
    from geosearch.training.mapper import MapperRecipe

    d = MapperRecipe()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, action="append", required=True, help="Karpathy-format dataset (repeatable)")
    p.add_argument("--stage", choices=("capret", "bank", "all"), default=None, help="what to build (default: capret)")
    p.add_argument("--out", type=Path, default=None, help="output weights dir for lite-capret")
    p.add_argument("--bank-out", type=Path, default=None, help="nearest-caption bank dir (default: the shipped one)")
    p.add_argument("--bank-only", action="store_true", help="same as --stage bank")
    p.add_argument("--exclude-class", action="append", default=[], help="leave this class out of the bank")
    p.add_argument("--lm", default=d.lm, help="HF causal LM id or local dir (default: packaged Gemma)")
    p.add_argument("--embedder", default=d.embedder, help="embedder spec (default: the default embedder)")
    p.add_argument("--k", type=int, default=d.k, help="soft-prefix tokens")
    p.add_argument("--views", type=int, default=d.views, help="dihedral views per train image (1..8)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--feature-noise", type=float, default=d.feature_noise, help="Gaussian noise on unit features")
    p.add_argument("--full-vocab", action="store_true", help="train/decode over the whole LM vocabulary")
    p.add_argument("--lm-dtype", default=d.lm_dtype, choices=("bfloat16", "float32"), help="training dtype")
    p.add_argument("--infer-dtype", default=d.infer_dtype, choices=("bfloat16", "float32"))
    p.add_argument("--beams", type=int, default=d.beams, help="decoding beams written to the config")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument(
        "--val-per-dataset", type=int, default=None, help="score lite-capret on the first N val images of each dataset"
    )
    p.add_argument("--max-minutes", type=float, default=d.max_minutes, help="wall-clock cap for the training loop")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--feature-cache", type=Path, default=cache_root() / "caption-features", help="image feature cache")
    return p


def recipe_from_args(args: argparse.Namespace) -> MapperRecipe:
    from geosearch.training.mapper import MapperRecipe
    from geosearch.training.recipe import recipe_from_args as from_args

    return from_args(MapperRecipe, args)


def seed_everything(seed: int, threads: int) -> None:
    """Torch threads (0: keep torch's default) and the Python, numpy and torch global RNGs."""
    import random

    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv: list[str] | None = None) -> int:
    """CLI: embedder features (cached), then the nearest-caption bank and/or lite-capret's mapper."""
    require_train_extra()
    import time

    from geosearch.models import load_embedder
    from geosearch.plugins.nearest_caption import WEIGHTS_DIR as NEAREST_WEIGHTS
    from geosearch.training.bank import bank_stage
    from geosearch.training.captioner_features import load_caption_data
    from geosearch.training.mapper import train_mapper

    p = build_parser()
    args = p.parse_args(argv)
    stage = "bank" if args.bank_only else args.stage or ("all" if args.bank_out else "capret")
    if stage != "bank" and args.out is None:
        p.error("--out is required to train lite-capret")
    seed_everything(args.seed, args.threads)
    t_start = time.time()
    embedder = load_embedder(args.embedder)
    views = 1 if stage == "bank" else args.views
    data = load_caption_data(embedder, args.data, views, args.feature_cache, args.val_per_dataset)
    print(f"features {data.feats.shape} in {time.time() - t_start:.0f}s", flush=True)
    if stage in ("bank", "all"):
        bank_stage(embedder, data, args.exclude_class, args.bank_out or NEAREST_WEIGHTS)
        if stage == "bank":
            return 0
    data_names = [r.resolve().name for r in args.data]
    train_mapper(embedder, data, recipe_from_args(args), args.out, data_names=data_names, t_start=t_start)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
