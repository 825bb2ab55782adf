"""The head-training loop: a masked CLIP loss on cached features, the checkpoint picked on val.

Each batch pairs every image with one of its captions or, with probability `class_caption_prob`, a
class-name caption ("an aerial image of a pond."): the class name is clean where RSICD's sentences
are noisy. Pairs of the same concept are not negatives of each other (their logits are masked), so
"a pond" is never pushed away from another pond.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geosearch.evaluation.datasets import class_phrase
from geosearch.training.features import FeatureCache
from geosearch.training.heads import Heads
from geosearch.training.recipe import Recipe
from geosearch.training.scoring import evaluate_split, score
from geosearch.training.splits import Split

TRAIN_TEMPLATES = (
    "an aerial image of {}.",
    "a satellite image of {}.",
    "a remote sensing image of {}.",
    "{}.",
    "an aerial view of {}.",
    "a photo of {} taken from above.",
)
"""Class-name captions used in training (zero-shot evaluation uses `retrieval.ZERO_SHOT_TEMPLATES`)."""


def concept(class_id: str) -> str:
    """Datasets name one concept differently ('parking' / 'parkinglot'); the spoken name unifies them."""
    return class_phrase(class_id).removesuffix(" area")


@dataclass
class PairPool:
    """What a batch is drawn from: every image view, every text, and the texts each image pairs with."""

    views: torch.Tensor
    """(views + 1, N, 1280) pooled image features of the training images."""
    text_feats: torch.Tensor
    """(T, 384) features of every real caption and every class name in every training template."""
    caption_rows: list[list[int]]
    """Per image, the rows of its own captions in `text_feats`."""
    prompt_rows: list[list[int]]
    """Per image, the rows of its class-name captions (empty without a class)."""
    image_concept: torch.Tensor
    """Per image, its concept id (a unique negative id for images without a class)."""


def build_pool(splits: Sequence[Split], cache: FeatureCache, views: int) -> PairPool:
    records = [r for s in splits for r in s.records]
    stacked = torch.stack([torch.from_numpy(np.concatenate([s.views[v] for s in splits])) for v in range(views + 1)])
    classes = sorted({r.class_name for r in records if r.class_name})
    prompts = {c: [t.format(class_phrase(c)) for t in TRAIN_TEMPLATES] for c in classes}
    texts = sorted({c for r in records for c in r.captions} | {p for ps in prompts.values() for p in ps})
    text_row = {t: i for i, t in enumerate(texts)}
    concept_ids = {c: i for i, c in enumerate(sorted({concept(r.class_name) for r in records}))}
    return PairPool(
        views=stacked,
        text_feats=torch.from_numpy(cache.texts(texts)),
        caption_rows=[[text_row[c] for c in r.captions] for r in records],
        prompt_rows=[[text_row[p] for p in prompts[r.class_name]] if r.class_name else [] for r in records],
        image_concept=torch.tensor(
            [concept_ids[concept(r.class_name)] if r.class_name else -1 - i for i, r in enumerate(records)]
        ),
    )


def sample_batch(
    pool: PairPool, rng: np.random.Generator, recipe: Recipe
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image indices, their features in a random view each, one paired text row each)."""
    idx = torch.from_numpy(rng.choice(len(pool.caption_rows), size=recipe.batch_size, replace=False))
    x = pool.views[torch.from_numpy(rng.integers(0, recipe.views + 1, size=recipe.batch_size)), idx].float()
    rows = []
    for i in idx.tolist():
        use_prompt = bool(pool.prompt_rows[i]) and rng.random() < recipe.class_caption_prob
        candidates = pool.prompt_rows[i] if use_prompt else pool.caption_rows[i]
        rows.append(candidates[int(rng.integers(len(candidates)))])
    return idx, x, torch.tensor(rows)


def masked_clip_loss(
    heads: Heads,
    image: torch.Tensor,
    text: torch.Tensor,
    text_rows: torch.Tensor,
    concepts: torch.Tensor,
    dropout: float,
) -> torch.Tensor:
    """Symmetric CLIP cross-entropy over the batch, with the logits of other pairs of the same concept
    or the same text masked out (they are not negatives)."""
    img = F.normalize(heads.image(F.dropout(image, dropout, training=True)), dim=-1)
    txt = F.normalize(heads.text(F.dropout(text, dropout, training=True)), dim=-1)
    logits = heads.logit_scale.exp().clamp(max=100) * img @ txt.T
    n = len(text_rows)
    same = (concepts[:, None] == concepts[None, :]) | (text_rows[:, None] == text_rows[None, :])
    logits = logits.masked_fill(same & ~torch.eye(n, dtype=torch.bool), float("-inf"))
    labels = torch.arange(n)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to 0 (steps count from 1)."""
    warm = max(1, recipe.steps // 20)
    return recipe.lr * min(1.0, step / warm) * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))


def _progress(entry: dict[str, Any], seconds: float) -> str:
    parts = "; ".join(
        f"{k} mR {m['mR']:.1f}" + (f" zs {m['zero_shot']['accuracy']:.1f}" if "zero_shot" in m else "")
        for k, m in entry["val"].items()
    )
    return f"step {entry['step']} loss {entry['loss']:.3f} score {entry['score']:.2f} | {parts} ({seconds:.0f}s)"


def train(
    train_splits: Sequence[Split],
    val_splits: Sequence[Split],
    cache: FeatureCache,
    recipe: Recipe,
    *,
    log: bool = True,
) -> tuple[Heads, dict[str, Any]]:
    """Fit the heads with the masked CLIP loss; keep the checkpoint with the best val `score`."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    pool = build_pool(train_splits, cache, recipe.views)
    heads = Heads(recipe)
    opt = torch.optim.AdamW(heads.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    history: list[dict[str, Any]] = []
    t0 = time.time()
    losses: list[float] = []
    for step in range(1, recipe.steps + 1):
        heads.train()
        idx, x, cap = sample_batch(pool, rng, recipe)
        for g in opt.param_groups:
            g["lr"] = learning_rate(recipe, step)
        loss = masked_clip_loss(heads, x, pool.text_feats[cap], cap, pool.image_concept[idx], recipe.feature_dropout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % recipe.eval_every == 0 or step == recipe.steps:
            report = {s.name: evaluate_split(heads, cache, s) for s in val_splits}
            history.append({"step": step, "loss": float(np.mean(losses)), "score": score(report), "val": report})
            losses = []
            if log:
                print(_progress(history[-1], time.time() - t0), flush=True)
            if history[-1]["score"] > best[0]:
                best = (history[-1]["score"], step, {k: v.detach().clone() for k, v in heads.state_dict().items()})
    heads.load_state_dict(best[2])
    return heads, {
        "recipe": asdict(recipe),
        "best_step": best[1],
        "best_score": best[0],
        "history": history,
        "train_seconds": round(time.time() - t0, 1),
    }
