"""geosearch-nearest-caption: the fast CPU captioner.

A chip's caption is a caption from the UCM-Captions train bank chosen in the embedder's joint
space: one image embedding plus a matrix product, so it costs little more than embedding does.
The bank ships with the text embeddings of the embedder it was built with; any other embedder
gets the bank re-encoded once and cached, never mixed with vectors of another space.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from geosearch.plugins.base import Embedder, ImageBatch, check_image_batch
from numpy.typing import NDArray

from geosearch.errors import ModelError

MODEL_ID = "geosearch-nearest-caption"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "nearest_caption"
BANK_JSON = "bank.json"
BANK_VECTORS = "bank.npy"
DEFAULT_TOP_K = 1
"""Consensus size; 1 = plain nearest caption (chosen on val, see MODEL_CARD.md)."""


def _cache_root() -> Path:
    import platformdirs

    return Path(os.environ.get("GEOSEARCH_CACHE", platformdirs.user_cache_dir("geosearch")))


def clean_caption(text: str) -> str:
    """UCM raw captions end in ' .' (sometimes '. .'); give them one attached full stop."""
    words = text.replace(" .", ".").strip().rstrip(". ").split()
    if not words:
        return ""
    out = " ".join(words)
    return out[0].upper() + out[1:] + "."


def write_bank(out_dir: Path, captions: list[str], vectors: NDArray[np.float32], embedder_id: str) -> None:
    """Store the caption texts (JSON) and their embeddings (float16 .npy, ~1.6 MB)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"embedder_model_id": embedder_id, "dim": int(vectors.shape[1]), "captions": captions}
    (out_dir / BANK_JSON).write_text(json.dumps(meta, indent=0, ensure_ascii=False) + "\n")
    np.save(out_dir / BANK_VECTORS, vectors.astype(np.float16))


def _normalise(v: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    out: NDArray[np.float32] = (v / np.maximum(norm, 1e-12)).astype(np.float32)
    return out


class NearestCaptioner:
    """Captions chips with the train caption nearest to each chip's image embedding."""

    def __init__(
        self,
        embedder: Embedder,
        captions: list[str],
        bank: NDArray[np.float32],
        top_k: int = DEFAULT_TOP_K,
    ) -> None:
        if bank.shape != (len(captions), embedder.dim):
            raise ModelError(f"caption bank has shape {bank.shape}, expected ({len(captions)}, {embedder.dim})")
        self.model_id = MODEL_ID if top_k == 1 else f"{MODEL_ID}-k{top_k}"
        self.embedder = embedder
        self.captions = captions
        self.bank = _normalise(bank)
        self.top_k = max(1, int(top_k))

    def choose(self, image_vectors: NDArray[np.float32]) -> list[int]:
        """Bank rows chosen for each image vector (top-1, or the top-k consensus)."""
        sim = image_vectors @ self.bank.T
        if self.top_k == 1:
            return [int(i) for i in sim.argmax(axis=1)]
        k = min(self.top_k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        picks: list[int] = []
        for row in top:
            cand = self.bank[row]
            pair = cand @ cand.T
            # Mean similarity to the other candidates: the caption most of the top-k agree with.
            score = (pair.sum(axis=1) - np.diag(pair)) / max(k - 1, 1)
            picks.append(int(row[int(score.argmax())]))
        return picks

    def caption_vectors(self, vectors: NDArray[np.float32]) -> list[str]:
        """Captions for image vectors of this captioner's embedder."""
        if len(vectors) == 0:
            return []
        return [self.captions[i] for i in self.choose(_normalise(np.asarray(vectors, dtype=np.float32)))]

    def caption(self, images: ImageBatch) -> list[str]:
        images = check_image_batch(images)
        if len(images) == 0:
            return []
        return self.caption_vectors(self.embedder.encode_images(images))


def _load_bank(embedder: Embedder, bank_dir: Path) -> tuple[list[str], NDArray[np.float32]]:
    """The shipped bank if it belongs to `embedder`, else a re-encoded, cached copy."""
    meta_path = bank_dir / BANK_JSON
    if not meta_path.is_file():
        raise ModelError(f"nearest-caption bank not found at {meta_path}")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    captions = [str(c) for c in meta["captions"]]
    if meta.get("embedder_model_id") == embedder.model_id and (bank_dir / BANK_VECTORS).is_file():
        vectors = np.load(bank_dir / BANK_VECTORS).astype(np.float32)
        if vectors.shape == (len(captions), embedder.dim):
            return captions, vectors
    key = hashlib.sha256((embedder.model_id + "\0" + "\n".join(captions)).encode("utf-8")).hexdigest()[:16]
    cached = _cache_root() / "nearest-caption" / f"{key}.npy"
    if cached.is_file():
        vectors = np.load(cached).astype(np.float32)
        if vectors.shape == (len(captions), embedder.dim):
            return captions, vectors
    vectors = np.asarray(embedder.encode_texts(captions), dtype=np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors.astype(np.float16))
    os.replace(tmp, cached)
    return captions, vectors


def load_nearest_captioner(spec: str = "", **options: Any) -> NearestCaptioner:
    """Factory for the `nearest-caption` entry point.

    ``spec``: an embedder spec (default: the default embedder). Options: ``embedder`` (an already
    loaded Embedder, reused instead of loading another), ``top_k`` (consensus size), ``bank_dir``;
    other options (device, batch_size) go to the embedder loader.
    """
    from geosearch.models import load_embedder

    embedder = options.pop("embedder", None)
    top_k = int(options.pop("top_k", DEFAULT_TOP_K))
    bank_dir = Path(options.pop("bank_dir", WEIGHTS_DIR))
    options.pop("mode", None)
    if embedder is None:
        embedder = load_embedder(spec or None, **options)
    if not isinstance(embedder, Embedder):
        raise ModelError("the `embedder` option must be an Embedder")
    captions, vectors = _load_bank(embedder, bank_dir)
    return NearestCaptioner(embedder, captions, vectors, top_k=top_k)
