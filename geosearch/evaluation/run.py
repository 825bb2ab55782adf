"""One evaluation run: a dataset split through the embedder (retrieval, zero-shot) and both captioners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geosearch.errors import InvalidInput
from geosearch.evaluation.captions import CAPTION_KEYS, caption_metrics, java_available
from geosearch.evaluation.datasets import SPLITS, CaptionRecord, flatten_captions, load_images, load_records
from geosearch.evaluation.retrieval import retrieval_metrics, zero_shot_accuracy

FULL_CAPTIONER = "lite-capret"


def load_split(dataset: Path, split: str, limit: int | None) -> tuple[list[CaptionRecord], NDArray[np.uint8]]:
    """The first `limit` records of `split` and their decoded images; a bad folder or argument is `InvalidInput`."""
    if not (dataset / "captions.json").is_file():
        raise InvalidInput(f"{dataset} is not a Karpathy-format caption dataset (no captions.json)")
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise InvalidInput("limit must be a positive number of images")
    records = load_records(dataset, split)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise InvalidInput(f"no {split} images in {dataset}")
    try:
        return records, load_images(records)
    except OSError as exc:
        raise InvalidInput(f"cannot read the images in {dataset}: {exc}") from exc


def score_embedder(emb: Any, records: list[CaptionRecord], images: NDArray[np.uint8]) -> dict[str, Any]:
    """Retrieval metrics over the records' captions, and zero-shot accuracy when every image has a class."""
    texts, owner = flatten_captions(records)
    img_vec = np.asarray(emb.encode_images(images), dtype=np.float32)
    txt_vec = np.asarray(emb.encode_texts(texts), dtype=np.float32)
    ret = retrieval_metrics(img_vec, txt_vec, owner)
    labels = [r.class_name for r in records]
    zero_shot = zero_shot_accuracy(img_vec, labels, emb.encode_texts) if all(labels) else None
    return {
        "retrieval": {"t2i": ret["t2i"], "i2t": ret["i2t"], "mR": ret["mR"], "mR6": ret["mR6"]},
        "zero_shot": zero_shot,
    }


def caption_all(captioner: Any, images: NDArray[np.uint8], batch: int = 32) -> list[str]:
    """One caption per image, in batches."""
    out: list[str] = []
    for i in range(0, len(images), batch):
        out.extend(captioner.caption(images[i : i + batch]))
    return out


def score_captioner(
    spec: str, emb: Any, records: list[CaptionRecord], images: NDArray[np.uint8]
) -> tuple[str, dict[str, float | None]]:
    """(model id, caption metrics) of captioner `spec` built on the loaded embedder."""
    from geosearch.models import load_captioner

    cap = load_captioner(spec, embedder=emb)
    return cap.model_id, caption_metrics([list(r.captions) for r in records], caption_all(cap, images))


def run_evaluation(
    dataset: Path,
    split: str = "test",
    *,
    limit: int | None = None,
    embedder: str | None = None,
    captioner: str | None = None,
    fast_captioner: str | None = "nearest-caption",
    model_runtime: str | None = None,
) -> dict[str, Any]:
    """Retrieval (t2i/i2t R@1/5/10, mR) and captioning metrics for both captioner modes.

    ``captioner`` None means the full captioner (lite-capret) whatever the ingest default is, so both
    modes are always reported; ``fast_captioner`` None skips the fast mode (its metrics are then
    null). Both captioners reuse the one loaded embedder.
    """
    from geosearch.models import load_embedder
    from geosearch.plugins.cpu import runtime_info

    dataset = Path(dataset).expanduser()
    records, images = load_split(dataset, split, limit)
    emb = load_embedder(embedder, **({"runtime": model_runtime} if model_runtime else {}))
    result = score_embedder(emb, records, images)
    cap_id, scores = score_captioner(captioner or FULL_CAPTIONER, emb, records, images)
    fast_id: str | None = None
    fast_scores: dict[str, float | None] = dict.fromkeys(CAPTION_KEYS)
    if fast_captioner:
        fast_id, fast_scores = score_captioner(fast_captioner, emb, records, images)
    return {
        **result,
        "captioning": scores,
        "captioning_fast": fast_scores,
        "model": {
            "embedder": emb.model_id,
            "captioner": cap_id,
            "fast_captioner": fast_id,
            "caption_tokenizer": "ptb" if java_available() else "simple",
        },
        "dataset": dataset.name,
        "split": split,
        "n_images": len(records),
        "runtime": runtime_info(emb),  # CPU capability, threads, runtime and precision behind these numbers
    }
