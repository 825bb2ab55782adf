"""Train geosearch-lite-capret's prefix mapper (RS-CapRet recipe) and build the nearest-caption bank.

    python -m geosearch.training.captioner --data ../shared/data/ucm-captions \
        --out plugins/weights/lite_capret --bank-out plugins/weights/nearest_caption
    python -m geosearch.training.captioner --stage bank \
        --data ../shared/data/ucm-captions --data ../shared/data/aid-rsicd

The bank stage takes every dataset's train split, picks k on the mean of their val CIDErs, and
writes the bank (default: the shipped one) + metrics.json, with the current default embedder
(or --embedder). Image features are cached under the user cache dir, keyed by the embedder's
fingerprint, so a new embedder never reuses stale vectors.

CPU recipe: image features are computed once by the frozen embedder over the 8 dihedral views
(rotations/flips keep an aerial scene's caption true); the frozen LM runs in bf16 (2x faster on
AVX512-BF16 CPUs) and the softmax is restricted to the token set of the train captions, which cuts
the 262k-row LM head out of every step; the checkpoint with the best val CIDEr is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import sparse

from geosearch.plugins.base import cache_root
from geosearch.plugins.capret import (
    CONFIG_NAME,
    DEFAULT_LM,
    MAPPER_NAME,
    MODEL_ID,
    CapRetCaptioner,
    DecodeSettings,
    PrefixMapper,
    lm_fingerprint,
    load_lm,
    prefix_out_scale,
    stop_ids_for,
)
from geosearch.plugins.nearest_caption import (
    BANK_METRICS,
    ImageNeighbours,
    NearestCaptioner,
    clean_caption,
    text_vectors,
    write_bank,
)
from geosearch.plugins.nearest_caption import WEIGHTS_DIR as NEAREST_WEIGHTS
from geosearch.training.data import CaptionRecord, load_images, load_records


def dihedral(images: NDArray[np.uint8], view: int) -> NDArray[np.uint8]:
    """View 0..7 of the dihedral group: rot90^(v%4), then a horizontal flip for v>=4."""
    out = np.rot90(images, k=view % 4, axes=(1, 2))
    if view >= 4:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def encode_views(embedder: Any, images: NDArray[np.uint8], views: int, batch: int = 64) -> NDArray[np.float32]:
    """(views, N, D) image embeddings."""
    out = []
    for v in range(views):
        vi = dihedral(images, v)
        parts = [np.asarray(embedder.encode_images(vi[i : i + batch])) for i in range(0, len(vi), batch)]
        out.append(np.concatenate(parts).astype(np.float32))
    return np.stack(out)


def embedder_fingerprint(embedder: Any, probe: NDArray[np.uint8]) -> str:
    """Hash of the model id and its (rounded) outputs on a few images: changes with the weights."""
    vec = np.asarray(embedder.encode_images(probe), dtype=np.float32)
    h = hashlib.sha256(embedder.model_id.encode())
    h.update(np.round(vec, 3).tobytes())
    return h.hexdigest()[:16]


def cached_features(
    embedder: Any, records: list[CaptionRecord], views: int, cache_dir: Path | None, tag: str
) -> NDArray[np.float32]:
    """(views, N, D) features of `records`, cached under `cache_dir` keyed by the embedder's fingerprint
    (a cache hit decodes only the 4 probe images)."""
    if cache_dir is None:
        return encode_views(embedder, load_images(records), views)
    key = embedder_fingerprint(embedder, load_images(records[:4]))
    path = cache_dir / f"{tag}-{key}-v{views}-n{len(records)}.npy"
    if path.is_file():
        arr: NDArray[np.float32] = np.load(path)
        return arr
    feats = encode_views(embedder, load_images(records), views)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


def caption_token_set(tok: Any, captions: list[str]) -> list[int]:
    """Token ids of all train captions + EOS: the vocabulary the restricted softmax covers."""
    ids: set[int] = {int(tok.eos_token_id)}
    for c in captions:
        ids.update(int(t) for t in tok(c, add_special_tokens=False).input_ids)
    return sorted(ids)


def val_scores(refs: list[list[str]], hyps: list[str]) -> dict[str, float | None]:
    from geosearch.evaluation import caption_metrics

    return caption_metrics(refs, hyps, use_java=False)


def ngram_matrix(captions: list[str], image_captions: NDArray[np.int64]) -> sparse.csr_matrix:
    """Sparse caption x n-gram matrix V whose V Vᵀ is the consensus the neighbour vote compares
    candidates with: the mean over n = 1..4 of the cosine of tf-idf n-gram vectors.

    CIDEr's weighting (document frequency counted over images' reference sets), without its length
    penalty. Each n block is row-normalised and scaled by 1/2, so the four blocks' dot products sum
    to their mean; stored factorised, the bank grows with its captions, not their square.
    """
    from geosearch.evaluation import simple_tokenize

    words = [simple_tokenize(c).split() for c in captions]
    n_images = len(image_captions)
    blocks = []
    for n in range(1, 5):
        grams = [[tuple(w[i : i + n]) for i in range(len(w) - n + 1)] for w in words]
        df: Counter[tuple[str, ...]] = Counter()
        for row in image_captions:
            df.update({g for c in row if c >= 0 for g in grams[c]})
        col = {g: j for j, g in enumerate(sorted(df))}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, gs in enumerate(grams):
            for g, count in Counter(gs).items():
                if g in col:
                    rows.append(i)
                    cols.append(col[g])
                    vals.append(count / len(gs) * math.log(n_images / df[g]))
        x = sparse.csr_matrix((vals, (rows, cols)), shape=(len(captions), len(col)), dtype=np.float64)
        norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        blocks.append(sparse.diags(0.5 / np.maximum(norm, 1e-12)) @ x)
    out: sparse.csr_matrix = sparse.hstack(blocks, format="csr", dtype=np.float32)
    out.eliminate_zeros()  # n-grams every image has (idf 0) carry no information
    return out


def caption_ids(records: list[CaptionRecord]) -> tuple[list[str], NDArray[np.int64]]:
    """Distinct cleaned captions (sorted) and each image's caption ids (-1 pads)."""
    captions = sorted({clean_caption(c) for r in records for c in r.captions} - {""})
    row_of = {c: i for i, c in enumerate(captions)}
    image_captions = np.full((len(records), max(len(r.captions) for r in records)), -1, np.int64)
    for i, r in enumerate(records):
        ids = [row_of[c] for c in map(clean_caption, r.captions) if c]
        image_captions[i, : len(ids)] = ids
    return captions, image_captions


NEIGHBOUR_GRID = (1, 5, 10, 20, 30, 40, 60, 80, 120)


def build_bank(
    embedder: Any,
    train: list[CaptionRecord],
    train_feats: NDArray[np.float32],
    vals: dict[str, tuple[list[CaptionRecord], NDArray[np.float32]]],
    out: Path,
) -> dict[str, Any]:
    """Write the nearest-caption bank with the neighbour count k that scores the best mean val CIDEr
    over the datasets in `vals` (one dataset's val alone would tune k to its own caption style)."""
    captions, image_captions = caption_ids(train)
    neighbours = ImageNeighbours(train_feats, image_captions, ngram_matrix(captions, image_captions), 1)
    report: dict[str, Any] = {
        "embedder_model_id": embedder.model_id,
        "n_captions": len(captions),
        "n_images": len(train),
        "ngram_nonzeros": int(neighbours.ngrams.nnz),
        "val": {},
    }

    def score(name: str, picks: NDArray[np.int64] | list[int]) -> tuple[float, float]:
        """(CIDEr, BLEU-4) of the picked captions on dataset `name`'s val split."""
        recs = vals[name][0]
        s = val_scores([list(r.captions) for r in recs], [captions[i] for i in picks])
        return float(s["CIDEr"] or 0.0), float(s["BLEU-4"] or 0.0)

    text_only = NearestCaptioner(embedder, captions, text_vectors(embedder, captions))  # cached for the plugin
    for name, (_, feats) in vals.items():
        cider, bleu = score(name, text_only.choose(feats))
        report["val"][name] = {"text": {"BLEU-4": bleu, "CIDEr": cider}}
        print(f"{name} val, nearest caption text (joint space): BLEU-4 {bleu:.3f} CIDEr {cider:.3f}", flush=True)
    best: tuple[float, int] = (-1.0, 1)
    for k in NEIGHBOUR_GRID:
        neighbours.k = min(k, len(train))
        ciders = []
        for name, (_, feats) in vals.items():
            cider, bleu = score(name, neighbours.choose(feats))
            report["val"][name][f"k{k}"] = {"BLEU-4": bleu, "CIDEr": cider}
            ciders.append(cider)
            print(f"{name} val, image neighbours k={k}: BLEU-4 {bleu:.3f} CIDEr {cider:.3f}", flush=True)
        best = max(best, (float(np.mean(ciders)), k))
    report["neighbours"] = neighbours.k = best[1]
    report["val_mean_CIDEr"] = best[0]
    write_bank(out, embedder.model_id, captions, neighbours)
    (out / BANK_METRICS).write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, action="append", required=True, help="Karpathy-format dataset (repeatable)")
    p.add_argument("--stage", choices=("capret", "bank", "all"), default=None, help="what to build (default: capret)")
    p.add_argument("--out", type=Path, default=None, help="output weights dir for lite-capret")
    p.add_argument("--bank-out", type=Path, default=None, help="nearest-caption bank dir (default: the shipped one)")
    p.add_argument("--bank-only", action="store_true", help="same as --stage bank")
    p.add_argument("--exclude-class", action="append", default=[], help="leave this class out of the bank")
    p.add_argument("--lm", default=DEFAULT_LM, help="HF causal LM id or local dir (default: packaged Gemma)")
    p.add_argument("--embedder", default=None, help="embedder spec (default: the default embedder)")
    p.add_argument("--k", type=int, default=6, help="soft-prefix tokens")
    p.add_argument("--views", type=int, default=8, help="dihedral views per train image (1..8)")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--feature-noise", type=float, default=0.0, help="Gaussian noise on unit features")
    p.add_argument("--full-vocab", action="store_true", help="train/decode over the whole LM vocabulary")
    p.add_argument("--lm-dtype", default="bfloat16", choices=("bfloat16", "float32"), help="training dtype")
    p.add_argument("--infer-dtype", default="float32", choices=("bfloat16", "float32"))
    p.add_argument("--beams", type=int, default=1, help="decoding beams written to the config")
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument(
        "--val-per-dataset", type=int, default=None, help="score lite-capret on the first N val images of each dataset"
    )
    p.add_argument("--max-minutes", type=float, default=30.0, help="wall-clock cap for the training loop")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-cache", type=Path, default=cache_root() / "caption-features", help="image feature cache")
    args = p.parse_args(argv)
    stage = "bank" if args.bank_only else args.stage or ("all" if args.bank_out else "capret")
    if stage != "bank" and args.out is None:
        p.error("--out is required to train lite-capret")

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.time()

    from geosearch.models import load_embedder

    embedder = load_embedder(args.embedder)
    views = 1 if stage == "bank" else args.views
    train: list[CaptionRecord] = []
    val: list[CaptionRecord] = []
    train_parts: list[NDArray[np.float32]] = []
    vals: dict[str, tuple[list[CaptionRecord], NDArray[np.float32]]] = {}
    for root in args.data:
        name = root.resolve().name
        recs = load_records(root, "train")
        train += recs
        train_parts.append(cached_features(embedder, recs, views, args.feature_cache, f"{name}-train"))
        recs = load_records(root, "val")[: args.val_per_dataset]
        val += recs
        vals[name] = (recs, cached_features(embedder, recs, 1, args.feature_cache, f"{name}-val")[0])
    feats = np.concatenate(train_parts, axis=1)  # (V, N, D); view 0 = as is
    val_feats = np.concatenate([f for _, f in vals.values()])
    print(f"features {feats.shape} in {time.time() - t_start:.0f}s", flush=True)
    if stage in ("bank", "all"):
        keep = np.array([r.class_name not in args.exclude_class for r in train])
        bank_train = [r for r, k in zip(train, keep, strict=True) if k]
        bank_out = args.bank_out or NEAREST_WEIGHTS
        bank_report = build_bank(embedder, bank_train, feats[0][keep], vals, bank_out)
        print(f"bank written to {bank_out}: k = {bank_report['neighbours']}", flush=True)
        if stage == "bank":
            return 0

    lm, tok = load_lm(args.lm, dtype=getattr(torch, args.lm_dtype))
    hidden = int(lm.config.hidden_size)
    pairs = [(i, clean_caption(c)) for i, r in enumerate(train) for c in r.captions]
    pairs = [(i, c) for i, c in pairs if c]
    allowed = None if args.full_vocab else caption_token_set(tok, [c for _, c in pairs])
    stops = stop_ids_for(tok, allowed)
    col_of = {t: j for j, t in enumerate(allowed)} if allowed else None
    eos = int(tok.eos_token_id)
    seqs = []
    for i, c in pairs:
        seqs.append((i, [*tok(c, add_special_tokens=False).input_ids, eos]))
    head_w = lm.get_output_embeddings().weight.detach()
    head = head_w[torch.tensor(allowed)] if allowed else head_w
    bos_id = tok.bos_token_id if tok.bos_token_id is not None else eos
    embed = lm.get_input_embeddings()

    mapper = PrefixMapper(feats.shape[-1], hidden, args.k, prefix_out_scale(lm))
    opt = torch.optim.AdamW(mapper.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total: int = int(args.steps)
    warmup = max(1, total // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return float((step + 1) / warmup)
        return float(0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    feats_t = torch.from_numpy(feats)
    dtype = getattr(torch, args.lm_dtype)
    settings = DecodeSettings(max_new_tokens=30, beams=1, allowed_token_ids=allowed, stop_token_ids=stops)
    refs = [list(r.captions) for r in val]

    def evaluate() -> dict[str, float | None]:
        mapper.eval()
        cap = CapRetCaptioner(embedder, mapper, lm, tok, settings, batch_size=64)
        hyps = cap.caption_vectors(val_feats)
        mapper.train()
        s = val_scores(refs, hyps)
        print("   e.g.", hyps[0], "|", hyps[100], "|", hyps[200], flush=True)
        return s

    def epoch_batches() -> list[NDArray[np.int64]]:
        """Shuffled batches of similar caption length: padding, and so CPU time, roughly halves."""
        perm = np.random.permutation(len(seqs))
        out: list[NDArray[np.int64]] = []
        chunk = args.batch * 32
        for c in range(0, len(perm), chunk):
            part = sorted(perm[c : c + chunk].tolist(), key=lambda j: len(seqs[j][1]))
            out.extend(np.asarray(part[b : b + args.batch]) for b in range(0, len(part), args.batch))
        random.shuffle(out)
        return out

    queue: list[NDArray[np.int64]] = []
    best: dict[str, Any] = {"CIDEr": -1.0}
    best_state: dict[str, torch.Tensor] = {}
    history = []
    t_loop = time.time()
    step = 0
    for step in range(args.steps):
        if not queue:
            queue = epoch_batches()
        idx = queue.pop()
        batch = [seqs[j] for j in idx]
        views = torch.randint(0, feats.shape[0], (len(batch),))
        x = feats_t[views, torch.tensor([b[0] for b in batch])]
        if args.feature_noise:
            x = x + args.feature_noise * torch.randn_like(x) / math.sqrt(x.shape[1])
        length = max(len(b[1]) for b in batch)
        ids = torch.full((len(batch), length), eos, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.bool)
        for r, (_, t) in enumerate(batch):
            ids[r, : len(t)] = torch.tensor(t)
            mask[r, : len(t)] = True
        prefix = mapper(x).to(dtype)
        with torch.no_grad():
            tok_emb = embed(torch.cat([torch.full((len(batch), 1), bos_id), ids], dim=1))
        # [BOS] [prefix k] [caption ...]: right padding needs no attention mask in a causal LM.
        inputs = torch.cat([tok_emb[:, :1], prefix, tok_emb[:, 1:]], dim=1)
        h = lm.model(inputs_embeds=inputs).last_hidden_state
        h = h[:, args.k : args.k + length][mask]  # hidden states that predict each caption token
        logits = h.float() @ head.float().T
        target = ids[mask]
        if col_of is not None:
            target = torch.tensor([col_of[int(t)] for t in target])
        loss = torch.nn.functional.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        elapsed = time.time() - t_loop
        if step % 25 == 0:
            print(f"step {step} loss {loss.item():.3f} {elapsed / (step + 1):.2f}s/step", flush=True)
        last = step == args.steps - 1 or elapsed > args.max_minutes * 60
        if (step + 1) % args.eval_every == 0 or last:
            s = evaluate()
            history.append({"step": step + 1, "loss": float(loss.item()), "val": s})
            print(f"[val] step {step + 1}: BLEU-4 {s['BLEU-4']:.3f} CIDEr {s['CIDEr']:.3f}", flush=True)
            if float(s["CIDEr"] or 0) > best["CIDEr"]:
                best = {"CIDEr": float(s["CIDEr"] or 0), "step": step + 1, "val": s}
                best_state = {k: v.detach().clone() for k, v in mapper.state_dict().items()}
        if last:
            break
    train_s = time.time() - t_start

    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in best_state.items()}, str(args.out / MAPPER_NAME))
    cfg = {
        "model_id": MODEL_ID,
        "lm": args.lm,
        "lm_fingerprint": lm_fingerprint(args.lm),
        "lm_dtype": args.infer_dtype,
        "hidden_size": hidden,
        "prefix_tokens": args.k,
        "feature_dim": int(feats.shape[-1]),
        "out_scale": mapper.out_scale,
        "embedder_model_id": embedder.model_id,
        "embedder_spec": args.embedder,
        "embedder_fingerprint": embedder_fingerprint(embedder, load_images(val[:4])),
        "decoding": {
            "method": "beam" if args.beams > 1 else "greedy",
            "beams": args.beams,
            "max_new_tokens": 30,
            "length_penalty": 0.0,
            "stop": "EOS, newline or a token ending in '.'",
        },
        "vocab": "full" if allowed is None else "train-captions",
        "allowed_token_ids": allowed,
        "stop_token_ids": stops,
        "training": {
            "data": " + ".join(r.resolve().name for r in args.data) + " train (Karpathy splits), selected on val CIDEr",
            "views": args.views,
            "steps_run": step + 1,
            "batch": args.batch,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "feature_noise": args.feature_noise,
            "lm_dtype": args.lm_dtype,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "wall_seconds": round(train_s, 1),
            "best_step": best.get("step"),
            "best_val": best.get("val"),
            "history": history,
        },
    }
    (args.out / CONFIG_NAME).write_text(json.dumps(cfg, indent=1) + "\n")
    print(f"saved {args.out} (best step {best.get('step')}, val CIDEr {best['CIDEr']:.3f}) in {train_s:.0f}s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
