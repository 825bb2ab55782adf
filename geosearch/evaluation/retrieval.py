"""Standard cross-modal retrieval metrics (R@K both ways, mR) for UCM/RSICD-style benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from geosearch.evaluation.datasets import class_phrase

KS = (1, 5, 10)


def retrieval_metrics(img_emb: ArrayLike, txt_emb: ArrayLike, txt_to_img: ArrayLike) -> dict[str, Any]:
    """Recall@{1,5,10} in percent for text→image and image→text, plus the two mean recalls.

    t2i: each caption queries all images; a hit when its own image is in the top K.
    i2t: each image queries all captions; a hit when any of its captions is in the top K.
    ``mR`` is the mean of the three t2i recalls (the number the issue compares), ``mR6`` the
    mean over all six. Embeddings are assumed L2-normalised (cosine = dot product).
    """
    img = np.asarray(img_emb, dtype=np.float32)
    txt = np.asarray(txt_emb, dtype=np.float32)
    owner = np.asarray(txt_to_img, dtype=np.int64)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"embeddings must be (N, D) and (M, D), got {img.shape} and {txt.shape}")
    if owner.shape != (txt.shape[0],):
        raise ValueError("txt_to_img must hold one image index per text")
    sim = txt @ img.T  # (M texts, N images)

    # t2i: rank of the own image = number of images scoring strictly higher.
    own = sim[np.arange(len(owner)), owner]
    t2i_rank = (sim > own[:, None]).sum(axis=1)
    # i2t: best rank among the image's captions.
    sim_i = sim.T  # (N, M)
    order = np.argsort(-sim_i, axis=1, kind="stable")
    is_own = owner[order] == np.arange(img.shape[0])[:, None]
    has = is_own.any(axis=1)
    i2t_rank = np.where(has, is_own.argmax(axis=1), sim_i.shape[1])

    t2i = {f"R@{k}": float(100.0 * (t2i_rank < k).mean()) for k in KS}
    i2t = {f"R@{k}": float(100.0 * (i2t_rank < k).mean()) for k in KS}
    m_r = float(np.mean(list(t2i.values())))
    m_r6 = float(np.mean(list(t2i.values()) + list(i2t.values())))
    return {"t2i": t2i, "i2t": i2t, "mR": m_r, "mR6": m_r6}


def format_metrics(metrics: dict[str, Any]) -> str:
    """One-line summary for logs."""
    t, i = metrics["t2i"], metrics["i2t"]
    return (
        f"t2i R@1/5/10 {t['R@1']:.2f}/{t['R@5']:.2f}/{t['R@10']:.2f} mR {metrics['mR']:.2f} | "
        f"i2t {i['R@1']:.2f}/{i['R@5']:.2f}/{i['R@10']:.2f} | mR6 {metrics['mR6']:.2f}"
    )


ZERO_SHOT_TEMPLATES = ("an aerial image of {}.", "a satellite image of {}.", "a remote sensing image of {}.")
"""Zero-shot prompts; each class's text vector is the normalised mean over these templates."""


def zero_shot_accuracy(
    img_emb: ArrayLike,
    labels: Sequence[str],
    encode_texts: Callable[[list[str]], ArrayLike],
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
) -> dict[str, Any]:
    """Scene classification by the nearest class prompt: accuracy in percent over `labels`' classes.

    ``labels`` are dataset class ids (spoken through `datasets.class_phrase`); ``encode_texts`` maps
    prompts to L2-normalised vectors of the same space as ``img_emb``.
    """
    img = np.asarray(img_emb, dtype=np.float32)
    classes = sorted(set(labels))
    prompts = [t.format(class_phrase(c)) for c in classes for t in templates]
    txt = np.asarray(encode_texts(prompts), dtype=np.float32).reshape(len(classes), len(templates), -1).mean(axis=1)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    pred = np.asarray(classes)[(img @ txt.T).argmax(axis=1)]
    accuracy = float(100.0 * (pred == np.asarray(labels)).mean())
    return {"accuracy": accuracy, "n_classes": len(classes)}
