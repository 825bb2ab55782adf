"""Frozen-tower features for training geosearch-lite-clip, cached under the user cache dir.

Both pretrained towers stay frozen, so each image view and each distinct text runs through them
once: pooled EfficientNet-Lite0 features (1280-d) per augmented view (`augment.field_view`),
mean-pooled MiniLM features (384-d) per text. Every image cache file is keyed by what produced it
(`image_cache_key`: dataset files, view, seed, the augmentation and the tower), so a changed recipe
can never reuse stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from geosearch.evaluation.datasets import CaptionRecord, load_image
from geosearch.plugins import cpu
from geosearch.training.augment import Augment, field_view

FEATURES_VERSION = 1
"""Bump when the feature computation changes in a way the keys below do not capture."""
IMAGE_FEATURES = 1280
"""Pooled EfficientNet-Lite0 width."""
TEXT_FEATURES = 384
"""all-MiniLM-L6-v2 width."""


def features_root() -> Path:
    from geosearch.plugins.base import cache_root

    return cache_root() / "features"


def _key(**parts: Any) -> str:
    blob = json.dumps({"version": FEATURES_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def image_cache_key(records: Sequence[CaptionRecord], *, view: int, seed: int, aug: Augment, tower: str) -> str:
    """Key of one view of `records`: dataset/file names, view, seed, tower and, for augmented views
    (view > 0), every `Augment` parameter."""
    return _key(
        kind="image",
        files=[f"{r.image_path.parent.parent.name}/{r.image_path.name}" for r in records],  # dataset/file
        view=view,
        seed=seed,
        aug=asdict(aug) if view else None,
        tower=tower,
    )


def text_store_key(*, context_length: int, tower: str) -> str:
    """Key of the text store of one tower and context length (one store holds every text seen)."""
    return _key(kind="text", context=context_length, tower=tower)


class FeatureCache:
    """Pooled frozen-tower features of images and texts, computed on demand and cached on disk."""

    def __init__(self, root: Path | None = None, *, batch_size: int = 64) -> None:
        self.root = root or features_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self._model: Any = None
        self._text_stores: dict[Path, tuple[list[str], dict[str, int], NDArray[np.float32]]] = {}
        """Text stores read once per process: evaluation asks for texts every few hundred steps."""

    @property
    def model(self) -> Any:
        if self._model is None:
            from geosearch.plugins.lite_clip import build_model

            self._model = build_model()
            self._model.visual.trunk.to(memory_format=torch.channels_last)
        return self._model

    def tower_id(self) -> str:
        from geosearch.plugins.lite_clip import lite0_checkpoint, minilm_dir

        return f"{lite0_checkpoint().name}+{minilm_dir().parent.name}"

    def images(
        self, records: Sequence[CaptionRecord], *, view: int = 0, seed: int = 0, aug: Augment | None = None
    ) -> NDArray[np.float16]:
        """(N, 1280) pooled Lite0 features of one view of `records` (view 0: clean 224-px resize)."""
        aug = aug or Augment()
        path = self.root / f"img-{image_cache_key(records, view=view, seed=seed, aug=aug, tower=self.tower_id())}.npy"
        if path.is_file():
            return np.load(path)  # type: ignore[no-any-return]
        t0 = time.time()
        out = self._encode_images(records, view, random.Random(seed * 100_003 + view), aug)
        np.save(path, out)
        print(f"cached image view {view} of {len(records)} images in {time.time() - t0:.0f} s", flush=True)
        return out

    def _encode_images(
        self, records: Sequence[CaptionRecord], view: int, rng: random.Random, aug: Augment
    ) -> NDArray[np.float16]:
        """Pooled trunk features of `view` of each record, in bf16 where the CPU runs it natively."""
        trunk = self.model.visual.trunk
        bf16 = cpu.native_bf16()
        out = np.empty((len(records), IMAGE_FEATURES), dtype=np.float16)
        with torch.inference_mode():
            for start in range(0, len(records), self.batch_size):
                chunk = records[start : start + self.batch_size]
                views = [
                    field_view(
                        torch.from_numpy(load_image(r.image_path).copy()).permute(2, 0, 1).float() / 255, view, rng, aug
                    )
                    for r in chunk
                ]
                x = ((torch.stack(views) - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    feats = trunk(x)
                out[start : start + len(chunk)] = feats.float().numpy().astype(np.float16)
        return out

    def texts(self, texts: Sequence[str], *, context_length: int = 64) -> NDArray[np.float32]:
        """(N, 384) mean-pooled MiniLM features, in the order given.

        One store per tower holds every text seen so far, so a new recipe only encodes new texts.
        """
        store = self.root / f"txt-{text_store_key(context_length=context_length, tower=self.tower_id())}"
        if store not in self._text_stores:
            names = store / "texts.json"
            known: list[str] = json.loads(names.read_text()) if names.is_file() else []
            feats = np.load(store / "features.npy") if known else np.empty((0, TEXT_FEATURES), np.float32)
            self._text_stores[store] = (known, {t: i for i, t in enumerate(known)}, feats)
        known, row, feats = self._text_stores[store]
        missing = sorted(set(texts) - set(row))
        if missing:
            feats = np.concatenate([feats, self._encode_texts(missing, context_length)])
            known += missing
            row.update({t: i for i, t in enumerate(known)})
            self._text_stores[store] = (known, row, feats)
            store.mkdir(parents=True, exist_ok=True)
            tmp = store / f"features.{os.getpid()}.npy"
            np.save(tmp, feats)
            os.replace(tmp, store / "features.npy")
            (store / f"texts.{os.getpid()}.json").write_text(json.dumps(known))
            os.replace(store / f"texts.{os.getpid()}.json", store / "texts.json")
        return feats[[row[t] for t in texts]]  # type: ignore[no-any-return]

    def _encode_texts(self, texts: list[str], context_length: int) -> NDArray[np.float32]:
        from open_clip.tokenizer import HFTokenizer

        from geosearch.plugins.lite_clip import minilm_dir

        tok = HFTokenizer(str(minilm_dir()), context_length=context_length)
        text = self.model.text
        out = np.empty((len(texts), TEXT_FEATURES), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), 256):
                ids = tok(texts[start : start + 256])
                mask = (ids != text.config.pad_token_id).long()
                used = int(mask.sum(dim=1).max())
                ids, mask = ids[:, :used], mask[:, :used]
                hidden = text.transformer(input_ids=ids, attention_mask=mask)
                out[start : start + len(ids)] = text.pooler(hidden, mask).float().numpy()
        return out
