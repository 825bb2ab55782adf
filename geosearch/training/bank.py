"""The nearest-caption bank (`plugins/nearest_caption.py`): train captions, their n-gram consensus
matrix and the image neighbour count k, chosen on the mean val CIDEr of every dataset.

Val selection scores captions without Java (`caption_metrics(..., use_java=False)`), so k is the
same on every machine.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from geosearch.evaluation.captions import caption_metrics, simple_tokenize
from geosearch.evaluation.datasets import CaptionRecord
from geosearch.plugins.nearest_caption import (
    BANK_METRICS,
    ImageNeighbours,
    NearestCaptioner,
    clean_caption,
    text_vectors,
    write_bank,
)
from geosearch.training.captioner_features import CaptionData


def ngram_matrix(captions: list[str], image_captions: NDArray[np.int64]) -> sparse.csr_matrix:
    """Sparse caption x n-gram matrix V whose V Vᵀ is the consensus the neighbour vote compares
    candidates with: the mean over n = 1..4 of the cosine of tf-idf n-gram vectors.

    CIDEr's weighting (document frequency counted over images' reference sets), without its length
    penalty. Each n block is row-normalised and scaled by 1/2, so the four blocks' dot products sum
    to their mean; stored factorised, the bank grows with its captions, not their square.
    """
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
        s = caption_metrics([list(r.captions) for r in recs], [captions[i] for i in picks], use_java=False)
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


def bank_stage(embedder: Any, data: CaptionData, exclude_classes: list[str], out: Path) -> dict[str, Any]:
    """`build_bank` over the clean train view of every image not in `exclude_classes`."""
    keep = np.array([r.class_name not in exclude_classes for r in data.train])
    bank_train = [r for r, k in zip(data.train, keep, strict=True) if k]
    report = build_bank(embedder, bank_train, data.feats[0][keep], data.vals, out)
    print(f"bank written to {out}: k = {report['neighbours']}", flush=True)
    return report
