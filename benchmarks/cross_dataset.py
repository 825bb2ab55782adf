"""Cross-dataset table: the shipped lite-clip recipe trained on one dataset, scored on the other.

    python benchmarks/cross_dataset.py [--steps N] [--split test|val] [--out benchmarks/results/cross_dataset.json]

Rows: UCM-only, AID-only and both (the shipped training set); columns: t2i mR and zero-shot
accuracy on UCM-Captions and AID/RSICD. The off-diagonal cells (a model scored on a dataset it never
saw: other sensors, countries and a 7-100x range of ground resolution) are this project's visible
proxies for imagery users bring; every recipe choice is made on them (val split) and on val, never on
one test split. Heads train on cached frozen-tower features, so once the feature cache exists the
table is quick to redo; the first run computes the features of every augmented view, which dominates
its time. The caption memory is scored too, built from the training datasets' train images only, so
the off-diagonal cells show what it does to a dataset it does not cover.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from geosearch.plugins.caption_memory import CaptionMemory
from geosearch.training.augment import Augment
from geosearch.training.features import FeatureCache
from geosearch.training.loop import train
from geosearch.training.memory import memory_bank
from geosearch.training.recipe import Recipe
from geosearch.training.scoring import evaluate_split
from geosearch.training.splits import load_split

DATASETS = {"UCM": C.UCM_DIR, "AID": C.SHARED_DATA / "aid-rsicd"}
TRAIN_SETS = {"UCM only": ("UCM",), "AID only": ("AID",), "UCM + AID": ("UCM", "AID")}


def shipped_recipe() -> Recipe:
    """The recipe of the shipped weights (metrics.json beside them), else the defaults."""
    from geosearch.plugins.lite_clip import WEIGHTS_DIR

    path = WEIGHTS_DIR / "metrics.json"
    if not path.is_file():
        return Recipe()
    saved = json.loads(path.read_text()).get("recipe", {})
    fields = {k: v for k, v in saved.items() if k in Recipe.__dataclass_fields__}
    if "augment" in fields:  # JSON wrote the ranges as lists
        ranges: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields["augment"].items()}
        fields["augment"] = Augment(**ranges)
    return Recipe(**fields)


def shipped_memory() -> CaptionMemory | None:
    from geosearch.plugins.lite_clip import MEMORY_NAME, WEIGHTS_DIR

    path = WEIGHTS_DIR / MEMORY_NAME
    return CaptionMemory.load(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=("val", "test"), default="test", help="where the table is scored")
    p.add_argument("--steps", type=int, default=None, help="override the shipped recipe's steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=C.RESULTS / "cross_dataset.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    recipe = shipped_recipe()
    if a.steps:
        recipe.steps = a.steps
    cache = FeatureCache()
    setting = shipped_memory()
    trains = {k: load_split(cache, root, "train", recipe.views, recipe) for k, root in DATASETS.items()}
    vals = {k: load_split(cache, root, "val", 0, recipe) for k, root in DATASETS.items()}
    scored = {k: load_split(cache, root, a.split, 0, recipe) for k, root in DATASETS.items()}
    rows: dict[str, Any] = {}
    for row, names in TRAIN_SETS.items():
        heads, report = train([trains[n] for n in names], [vals[n] for n in names], cache, recipe, log=False)
        memory = None
        if setting is not None:  # the shipped memory's k and weight, over this row's train images only
            memory = CaptionMemory(*memory_bank(heads, cache, [trains[n] for n in names]), setting.k, setting.weight)
        cells = {
            name: {
                "plain": evaluate_split(heads, cache, split),
                "memory": None if memory is None else evaluate_split(heads, cache, split, memory),
                "seen": name in names,
            }
            for name, split in scored.items()
        }
        rows[row] = {"best_step": report["best_step"], "cells": cells}
    print(f"{a.split} split: t2i mR / zero-shot accuracy (%); in brackets with the caption memory; * never seen")
    C.print_table(
        [("trained on", "<11"), *((name, "<27") for name in DATASETS)],
        [[row, *(_cell(r["cells"][name]) for name in DATASETS)] for row, r in rows.items()],
        sep="| ",
    )
    out = {
        "machine": C.machine(),
        "split": a.split,
        "recipe": asdict(recipe),
        "rows": rows,
    }
    C.write_json(a.out, out)
    return 0


def _cell(c: dict[str, Any]) -> str:
    """mR / zero-shot accuracy, with the caption memory in brackets; * where the row never saw the dataset."""
    cell = f"{c['plain']['mR']:5.1f} / {c['plain']['zero_shot']['accuracy']:5.1f}"
    if c["memory"] is not None:
        cell += f" ({c['memory']['mR']:4.1f} / {c['memory']['zero_shot']['accuracy']:4.1f})"
    return cell + ("" if c["seen"] else " *")


if __name__ == "__main__":
    raise SystemExit(main())
