"""Train geosearch-lite-capret's prefix mapper (RS-CapRet recipe) on cached embedder features.

The frozen LM sees [BOS] [k soft tokens from the image vector] [caption]; only the linear mapper
learns. The LM runs in bf16 for training by default and the softmax is restricted to the token set
of the train captions, which cuts the LM's full-vocabulary head out of every step; the checkpoint
with the best val CIDEr (Java-free scorer, see `bank`) is kept.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from geosearch.evaluation.captions import caption_metrics
from geosearch.evaluation.datasets import CaptionRecord, load_images
from geosearch.plugins.capret import (
    CONFIG_NAME,
    DEFAULT_LM,
    MAPPER_NAME,
    MODEL_ID,
    CapRetCaptioner,
    DecodeOptions,
    PrefixMapper,
    lm_fingerprint,
    load_lm,
    prefix_out_scale,
    stop_ids_for,
)
from geosearch.plugins.nearest_caption import clean_caption
from geosearch.training.captioner_features import CaptionData, embedder_fingerprint

MAX_NEW_TOKENS = 30


@dataclass(frozen=True)
class MapperRecipe:
    """Every setting of one lite-capret training run (the captioner CLI's flags)."""

    lm: str = DEFAULT_LM
    embedder: str | None = None
    k: int = 6
    """Soft-prefix tokens."""
    views: int = 8
    """Dihedral views per train image (1..8)."""
    steps: int = 1200
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    feature_noise: float = 0.0
    full_vocab: bool = False
    lm_dtype: str = "bfloat16"
    infer_dtype: str = "float32"
    beams: int = 1
    eval_every: int = 150
    max_minutes: float = 30.0
    seed: int = 0


def caption_token_set(tok: Any, captions: list[str]) -> list[int]:
    """Token ids of all train captions + EOS: the vocabulary the restricted softmax covers."""
    ids: set[int] = {int(tok.eos_token_id)}
    for c in captions:
        ids.update(int(t) for t in tok(c, add_special_tokens=False).input_ids)
    return sorted(ids)


@dataclass
class CaptionTokens:
    """The train captions as LM token sequences, and the vocabulary the mapper trains and decodes over."""

    seqs: list[tuple[int, list[int]]]
    """(train image row, caption token ids + EOS) per non-empty cleaned caption."""
    allowed: list[int] | None
    """Token ids the restricted softmax covers (None: the full vocabulary)."""
    stops: list[int]
    eos: int
    bos: int
    col_of: dict[int, int] | None = field(init=False)
    """Token id → column of the restricted head."""

    def __post_init__(self) -> None:
        self.col_of = {t: j for j, t in enumerate(self.allowed)} if self.allowed else None


def tokenize_captions(tok: Any, train: list[CaptionRecord], full_vocab: bool) -> CaptionTokens:
    pairs = [(i, clean_caption(c)) for i, r in enumerate(train) for c in r.captions]
    pairs = [(i, c) for i, c in pairs if c]
    allowed = None if full_vocab else caption_token_set(tok, [c for _, c in pairs])
    eos = int(tok.eos_token_id)
    return CaptionTokens(
        seqs=[(i, [*tok(c, add_special_tokens=False).input_ids, eos]) for i, c in pairs],
        allowed=allowed,
        stops=stop_ids_for(tok, allowed),
        eos=eos,
        bos=tok.bos_token_id if tok.bos_token_id is not None else eos,
    )


def length_bucketed_batches(seqs: list[tuple[int, list[int]]], batch: int) -> list[NDArray[np.int64]]:
    """One epoch of shuffled batches of similar caption length (less padding, so less CPU time),
    drawn from numpy's and Python's global RNGs."""
    perm = np.random.permutation(len(seqs))
    out: list[NDArray[np.int64]] = []
    chunk = batch * 32
    for c in range(0, len(perm), chunk):
        part = sorted(perm[c : c + chunk].tolist(), key=lambda j: len(seqs[j][1]))
        out.extend(np.asarray(part[b : b + batch]) for b in range(0, len(part), batch))
    random.shuffle(out)
    return out


def warmup_cosine(total: int) -> Callable[[int], float]:
    """LR factor per step: linear warm-up over the first 5 % of `total` steps, then cosine to 0."""
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return float((step + 1) / warmup)
        return float(0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    return factor


class MapperTrainer:
    """The frozen LM, its (restricted) output head and the trainable mapper with its optimiser."""

    def __init__(self, lm: Any, tokens: CaptionTokens, feature_dim: int, recipe: MapperRecipe) -> None:
        self.lm = lm
        self.tokens = tokens
        self.k = recipe.k
        self.feature_noise = recipe.feature_noise
        self.dtype = getattr(torch, recipe.lm_dtype)
        head = lm.get_output_embeddings().weight.detach()
        self.head = head[torch.tensor(tokens.allowed)] if tokens.allowed else head
        self.embed = lm.get_input_embeddings()
        self.mapper = PrefixMapper(feature_dim, int(lm.config.hidden_size), recipe.k, prefix_out_scale(lm))
        self.opt = torch.optim.AdamW(self.mapper.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_cosine(int(recipe.steps)))

    def pad(self, batch: list[tuple[int, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids right-padded with EOS, mask of real tokens)."""
        length = max(len(t) for _, t in batch)
        ids = torch.full((len(batch), length), self.tokens.eos, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.bool)
        for r, (_, t) in enumerate(batch):
            ids[r, : len(t)] = torch.tensor(t)
            mask[r, : len(t)] = True
        return ids, mask

    def loss(self, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each caption token given [BOS] [prefix of x] and the tokens before it."""
        prefix = self.mapper(x).to(self.dtype)
        with torch.no_grad():
            tok_emb = self.embed(torch.cat([torch.full((len(ids), 1), self.tokens.bos), ids], dim=1))
        # [BOS] [prefix k] [caption ...]: right padding needs no attention mask in a causal LM.
        inputs = torch.cat([tok_emb[:, :1], prefix, tok_emb[:, 1:]], dim=1)
        h = self.lm.model(inputs_embeds=inputs).last_hidden_state
        h = h[:, self.k : self.k + ids.shape[1]][mask]  # hidden states that predict each caption token
        logits = h.float() @ self.head.float().T
        target = ids[mask]
        if self.tokens.col_of is not None:
            target = torch.tensor([self.tokens.col_of[int(t)] for t in target])
        return torch.nn.functional.cross_entropy(logits, target)

    def step(self, feats: torch.Tensor, idx: NDArray[np.int64]) -> float:
        """One optimiser step on the captions `idx`, each image in a random view (plus feature noise)."""
        batch = [self.tokens.seqs[j] for j in idx]
        views = torch.randint(0, feats.shape[0], (len(batch),))
        x = feats[views, torch.tensor([b[0] for b in batch])]
        if self.feature_noise:
            x = x + self.feature_noise * torch.randn_like(x) / math.sqrt(x.shape[1])
        loss = self.loss(x, *self.pad(batch))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.item())


@dataclass
class FitResult:
    steps_run: int
    best: dict[str, Any]
    """Best val CIDEr, its step and its val scores."""
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]


def validate(trainer: MapperTrainer, embedder: Any, tok: Any, data: CaptionData) -> dict[str, float | None]:
    """Greedy captions of every val image through the current mapper, scored against the references."""
    decoding = DecodeOptions(
        max_new_tokens=MAX_NEW_TOKENS,
        beams=1,
        allowed_token_ids=trainer.tokens.allowed,
        stop_token_ids=trainer.tokens.stops,
    )
    trainer.mapper.eval()
    cap = CapRetCaptioner(embedder, trainer.mapper, trainer.lm, tok, decoding, batch_size=64)
    hyps = cap.caption_vectors(data.val_feats)
    trainer.mapper.train()
    s = caption_metrics([list(r.captions) for r in data.val], hyps, use_java=False)
    print("   e.g.", " | ".join(hyps[:201:100]), flush=True)  # val images 0, 100 and 200 (those there are)
    return s


def fit(trainer: MapperTrainer, embedder: Any, tok: Any, data: CaptionData, recipe: MapperRecipe) -> FitResult:
    """Train for `recipe.steps` steps or `max_minutes`, validating every `eval_every` steps and at the end."""
    feats = torch.from_numpy(data.feats)
    queue: list[NDArray[np.int64]] = []
    result = FitResult(0, {"CIDEr": -1.0}, {}, [])
    t_loop = time.time()
    for step in range(recipe.steps):
        if not queue:
            queue = length_bucketed_batches(trainer.tokens.seqs, recipe.batch)
        loss = trainer.step(feats, queue.pop())
        result.steps_run = step + 1
        elapsed = time.time() - t_loop
        if step % 25 == 0:
            print(f"step {step} loss {loss:.3f} {elapsed / (step + 1):.2f}s/step", flush=True)
        last = step == recipe.steps - 1 or elapsed > recipe.max_minutes * 60
        if (step + 1) % recipe.eval_every == 0 or last:
            s = validate(trainer, embedder, tok, data)
            result.history.append({"step": step + 1, "loss": loss, "val": s})
            print(f"[val] step {step + 1}: BLEU-4 {s['BLEU-4']:.3f} CIDEr {s['CIDEr']:.3f}", flush=True)
            if float(s["CIDEr"] or 0) > result.best["CIDEr"]:
                result.best = {"CIDEr": float(s["CIDEr"] or 0), "step": step + 1, "val": s}
                result.best_state = {k: v.detach().clone() for k, v in trainer.mapper.state_dict().items()}
        if last:
            break
    return result


def mapper_config(
    recipe: MapperRecipe,
    trainer: MapperTrainer,
    embedder: Any,
    data: CaptionData,
    fitted: FitResult,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The lite-capret config.json: model, decoding and vocabulary, and how it was trained (`run` holds
    the run's data description, threads and wall seconds)."""
    allowed = trainer.tokens.allowed
    return {
        "model_id": MODEL_ID,
        "lm": recipe.lm,
        "lm_fingerprint": lm_fingerprint(recipe.lm),
        "lm_dtype": recipe.infer_dtype,
        "hidden_size": int(trainer.lm.config.hidden_size),
        "prefix_tokens": recipe.k,
        "feature_dim": int(data.feats.shape[-1]),
        "out_scale": trainer.mapper.out_scale,
        "embedder_model_id": embedder.model_id,
        "embedder_spec": recipe.embedder,
        "embedder_fingerprint": embedder_fingerprint(embedder, load_images(data.val[:4])),
        "decoding": {
            "method": "beam" if recipe.beams > 1 else "greedy",
            "beams": recipe.beams,
            "max_new_tokens": MAX_NEW_TOKENS,
            "length_penalty": 0.0,
            "stop": "EOS, newline or a token ending in '.'",
        },
        "vocab": "full" if allowed is None else "train-captions",
        "allowed_token_ids": allowed,
        "stop_token_ids": trainer.tokens.stops,
        "training": {
            "data": run["data"],
            "views": recipe.views,
            "steps_run": fitted.steps_run,
            "batch": recipe.batch,
            "lr": recipe.lr,
            "weight_decay": recipe.weight_decay,
            "feature_noise": recipe.feature_noise,
            "lm_dtype": recipe.lm_dtype,
            "seed": recipe.seed,
            "threads": run["threads"],
            "wall_seconds": run["wall_seconds"],
            "best_step": fitted.best.get("step"),
            "best_val": fitted.best.get("val"),
            "history": fitted.history,
        },
    }


def train_mapper(
    embedder: Any, data: CaptionData, recipe: MapperRecipe, out: Path, *, data_names: list[str], t_start: float
) -> None:
    """Train the mapper and write its weights + config.json into `out` (wall time counted from `t_start`)."""
    from safetensors.torch import save_file

    lm, tok = load_lm(recipe.lm, dtype=getattr(torch, recipe.lm_dtype))
    trainer = MapperTrainer(lm, tokenize_captions(tok, data.train, recipe.full_vocab), data.feats.shape[-1], recipe)
    fitted = fit(trainer, embedder, tok, data, recipe)
    train_s = time.time() - t_start
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in fitted.best_state.items()}, str(out / MAPPER_NAME))
    run = {
        "data": " + ".join(data_names) + " train (Karpathy splits), selected on val CIDEr",
        "threads": torch.get_num_threads(),
        "wall_seconds": round(train_s, 1),
    }
    cfg = mapper_config(recipe, trainer, embedder, data, fitted, run)
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=1) + "\n")
    print(f"saved {out} (best step {fitted.best.get('step')}, val CIDEr {fitted.best['CIDEr']:.3f}) in {train_s:.0f}s")
