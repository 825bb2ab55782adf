"""Frozen-tower features for training geosearch-lite-clip, cached under the user cache dir.

Both pretrained towers stay frozen, so each image view and each distinct text runs through them
once: pooled EfficientNet-Lite0 features (1280-d) per augmented view, mean-pooled MiniLM features
(384-d) per text. Every cache file is keyed by what produced it (dataset, split, view, seed, the
augmentation and the tower), so a changed recipe can never reuse stale features.

Augmentation follows how chips arrive in the field (`Augment`): a random-resized crop over a wide
area range (a chip shows part of a scene), down-then-up resampling (the same ground seen 1x-4x
coarser), the 8 dihedral transforms (overhead imagery has no 'up') and colour jitter (sensors and
processing differ in colour).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from geosearch.training.data import CaptionRecord, load_image

IMAGE_SIZE = 224
FEATURES_VERSION = 1
"""Bump when the feature computation changes in a way the keys below do not capture."""


@dataclass(frozen=True)
class Augment:
    """Field-like augmentation of one training view (view 0 is always the clean image)."""

    crop_area: tuple[float, float] = (0.25, 1.0)
    """Random-resized crop: fraction of the image area kept."""
    coarsen: tuple[float, float] = (1.0, 4.0)
    """Down-then-up resampling factor range (log-uniform): 1x-4x coarser ground resolution."""
    jitter: float = 0.3
    """Brightness, contrast and saturation each scaled by 1 +- jitter."""


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 rotations/flips (k in 0..7) of a (..., H, W) tensor."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def field_view(img: torch.Tensor, view: int, rng: random.Random, aug: Augment, size: int = IMAGE_SIZE) -> torch.Tensor:
    """float (3, H, W) in [0, 1] → (3, size, size): view 0 clean, other views augmented."""
    if view == 0:
        return _resize(img, size) if img.shape[-2:] != (size, size) else img
    _, h, w = img.shape
    area = rng.uniform(*aug.crop_area)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    ch = max(8, min(h, round(math.sqrt(area * aspect) * h)))
    cw = max(8, min(w, round(math.sqrt(area / aspect) * w)))
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    x = _resize(img[:, top : top + ch, left : left + cw], size)
    factor = math.exp(rng.uniform(math.log(aug.coarsen[0]), math.log(aug.coarsen[1])))
    if factor > 1.05:
        x = _resize(_resize(x, max(8, round(size / factor))), size)
    if aug.jitter > 0:
        b, c, s = (1 + rng.uniform(-aug.jitter, aug.jitter) for _ in range(3))
        x = x * b
        mean = x.mean()
        x = (x - mean) * c + mean
        grey = x.mean(dim=0, keepdim=True)
        x = (x - grey) * s + grey
    return dihedral(x.clamp(0, 1), rng.randrange(8))


def features_root() -> Path:
    from geosearch.plugins.base import cache_root

    return cache_root() / "features"


def _key(**parts: Any) -> str:
    blob = json.dumps({"version": FEATURES_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def native_bf16() -> bool:
    """True where the CPU runs bf16 natively; the one probe lives in `geosearch.plugins.cpu`."""
    from geosearch.plugins.cpu import native_bf16 as probe

    return probe()


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
        key = _key(
            kind="image",
            files=[f"{r.image_path.parent.parent.name}/{r.image_path.name}" for r in records],  # dataset/file
            view=view,
            seed=seed,
            aug=asdict(aug) if view else None,
            tower=self.tower_id(),
        )
        path = self.root / f"img-{key}.npy"
        if path.is_file():
            return np.load(path)  # type: ignore[no-any-return]
        t0 = time.time()
        rng = random.Random(seed * 100_003 + view)
        trunk = self.model.visual.trunk
        bf16 = native_bf16()
        out = np.empty((len(records), 1280), dtype=np.float16)
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
        np.save(path, out)
        print(f"cached image view {view} of {len(records)} images in {time.time() - t0:.0f} s", flush=True)
        return out

    def texts(self, texts: Sequence[str], *, context_length: int = 64) -> NDArray[np.float32]:
        """(N, 384) mean-pooled MiniLM features, in the order given.

        One store per tower holds every text seen so far, so a new recipe only encodes new texts.
        """
        store = self.root / f"txt-{_key(kind='text', context=context_length, tower=self.tower_id())}"
        if store not in self._text_stores:
            names = store / "texts.json"
            known: list[str] = json.loads(names.read_text()) if names.is_file() else []
            feats = np.load(store / "features.npy") if known else np.empty((0, 384), np.float32)
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
        out = np.empty((len(texts), 384), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), 256):
                ids = tok(texts[start : start + 256])
                mask = (ids != text.config.pad_token_id).long()
                used = int(mask.sum(dim=1).max())
                ids, mask = ids[:, :used], mask[:, :used]
                hidden = text.transformer(input_ids=ids, attention_mask=mask)
                out[start : start + len(ids)] = text.pooler(hidden, mask).float().numpy()
        return out
