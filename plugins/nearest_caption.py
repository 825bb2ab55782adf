"""geosearch-nearest-caption: the fast CPU captioner.

A chip's caption is one of the UCM-Captions train captions, chosen by consensus among the chip's
nearest train *images* (image-image similarity in the embedder's space, which is far more reliable
than image-text similarity): each of the k neighbours votes for its five captions with its
similarity, and the candidate most similar (tf-idf n-gram overlap, CIDEr-style) to all the votes
wins (Devlin et al. 2015, "Exploring nearest neighbor approaches for image captioning"). It costs
two small matrix products per batch on the vectors the ingest already computed for search.

The image vectors belong to the embedder the bank was built with. Another embedder gets the
caption texts re-encoded once (cached) and the plain nearest caption in the joint space instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from geosearch.plugins.base import Embedder, ImageBatch, check_image_batch, nearest_rows, unit_rows
from numpy.typing import NDArray

from geosearch.errors import ModelError

MODEL_ID = "geosearch-nearest-caption"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "nearest_caption"
BANK_JSON = "bank.json"
BANK_VECTORS = "bank.npy"
"""Caption text vectors (float16): the fallback for an embedder the image vectors do not belong to."""
IMAGE_VECTORS = "bank_images.npy"
"""Train image vectors (float16) of the bank's embedder."""
CONSENSUS = "bank_consensus.npy"
"""Caption x caption n-gram similarity (float16), independent of any embedder."""


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


class ImageNeighbours:
    """The image half of a bank: train image vectors, their caption ids, the consensus matrix."""

    def __init__(
        self,
        vectors: NDArray[np.float32],
        image_captions: NDArray[np.int64],
        consensus: NDArray[np.float32],
        k: int,
    ) -> None:
        n_caps = consensus.shape[0]
        if consensus.shape != (n_caps, n_caps) or image_captions.shape[0] != vectors.shape[0]:
            raise ModelError("caption bank: image vectors, image captions and consensus matrix disagree")
        if image_captions.size and (image_captions.max() >= n_caps or image_captions.min() < -1):
            raise ModelError("caption bank: an image refers to a caption that does not exist")
        self.vectors = unit_rows(vectors)
        self.image_captions = image_captions
        self.consensus = consensus
        self.k = max(1, min(int(k), len(vectors)))

    def choose(self, queries: NDArray[np.float32]) -> NDArray[np.int64]:
        """Caption id per (unit) query vector: the candidate with the highest weighted consensus."""
        top, weight = nearest_rows(queries, self.vectors, self.k)
        caps = self.image_captions[top]  # (B, k, captions per image); -1 pads
        rows = np.broadcast_to(np.arange(len(queries))[:, None, None], caps.shape)
        valid = caps >= 0
        votes = np.zeros((len(queries), self.consensus.shape[0]), np.float32)
        np.add.at(votes, (rows[valid], caps[valid]), np.broadcast_to(weight[:, :, None], caps.shape)[valid])
        score = votes @ self.consensus
        score[votes == 0] = -np.inf  # only the neighbours' own captions are candidates
        picks: NDArray[np.int64] = score.argmax(axis=1).astype(np.int64)
        return picks


class NearestCaptioner:
    """Captions chips with a train caption: neighbour consensus, or the nearest caption text."""

    def __init__(
        self,
        embedder: Embedder,
        captions: list[str],
        bank: NDArray[np.float32],
        neighbours: ImageNeighbours | None = None,
    ) -> None:
        if bank.shape != (len(captions), embedder.dim):
            raise ModelError(f"caption bank has shape {bank.shape}, expected ({len(captions)}, {embedder.dim})")
        if neighbours is not None and neighbours.vectors.shape[1] != embedder.dim:
            raise ModelError("caption bank image vectors do not match the embedder's dimension")
        self.model_id = MODEL_ID if neighbours is not None else f"{MODEL_ID}-text"
        self.embedder = embedder
        self.captions = captions
        self.bank = unit_rows(bank)
        self.neighbours = neighbours

    def choose(self, image_vectors: NDArray[np.float32]) -> list[int]:
        """Bank caption ids chosen for unit image vectors."""
        if self.neighbours is not None:
            return [int(i) for i in self.neighbours.choose(image_vectors)]
        return [int(i) for i in (image_vectors @ self.bank.T).argmax(axis=1)]

    def caption_vectors(self, vectors: NDArray[np.float32]) -> list[str]:
        """Captions for image vectors of this captioner's embedder."""
        if len(vectors) == 0:
            return []
        return [self.captions[i] for i in self.choose(unit_rows(vectors))]

    def caption(self, images: ImageBatch) -> list[str]:
        images = check_image_batch(images)
        if len(images) == 0:
            return []
        return self.caption_vectors(self.embedder.encode_images(images))


def write_bank(
    out_dir: Path,
    embedder_id: str,
    captions: list[str],
    caption_vectors: NDArray[np.float32],
    neighbours: ImageNeighbours,
) -> None:
    """Store the bank: texts + image caption ids + k (JSON), vectors and consensus (float16 .npy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "embedder_model_id": embedder_id,
        "dim": int(caption_vectors.shape[1]),
        "neighbours": neighbours.k,
        "captions": captions,
        "image_captions": neighbours.image_captions.tolist(),
    }
    (out_dir / BANK_JSON).write_text(json.dumps(meta, separators=(",", ":"), ensure_ascii=False) + "\n")
    np.save(out_dir / BANK_VECTORS, caption_vectors.astype(np.float16))
    np.save(out_dir / IMAGE_VECTORS, neighbours.vectors.astype(np.float16))
    np.save(out_dir / CONSENSUS, neighbours.consensus.astype(np.float16))


def _load_bank(
    embedder: Embedder, bank_dir: Path, k: int | None
) -> tuple[list[str], NDArray[np.float32], ImageNeighbours | None]:
    """Captions, their text vectors for `embedder` (re-encoded + cached if the bank is another's),
    and the image neighbours when the bank was built with this very embedder."""
    meta_path = bank_dir / BANK_JSON
    if not meta_path.is_file():
        raise ModelError(f"nearest-caption bank not found at {meta_path}")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    captions = [str(c) for c in meta["captions"]]
    if meta.get("embedder_model_id") == embedder.model_id:
        vectors = np.load(bank_dir / BANK_VECTORS).astype(np.float32)
        neighbours = None
        if (bank_dir / IMAGE_VECTORS).is_file() and "image_captions" in meta:
            neighbours = ImageNeighbours(
                np.load(bank_dir / IMAGE_VECTORS).astype(np.float32),
                np.asarray(meta["image_captions"], dtype=np.int64),
                np.load(bank_dir / CONSENSUS).astype(np.float32),
                k if k is not None else int(meta.get("neighbours", 1)),
            )
        return captions, vectors, neighbours
    key = hashlib.sha256((embedder.model_id + "\0" + "\n".join(captions)).encode("utf-8")).hexdigest()[:16]
    cached = _cache_root() / "nearest-caption" / f"{key}.npy"
    if cached.is_file():
        vectors = np.load(cached).astype(np.float32)
        if vectors.shape == (len(captions), embedder.dim):
            return captions, vectors, None
    vectors = np.asarray(embedder.encode_texts(captions), dtype=np.float32)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors.astype(np.float16))
    os.replace(tmp, cached)
    return captions, vectors, None


def load_nearest_captioner(spec: str = "", **options: Any) -> NearestCaptioner:
    """Factory for the `nearest-caption` entry point.

    ``spec``: an embedder spec (default: the default embedder). Options: ``embedder`` (an already
    loaded Embedder, reused instead of loading another), ``neighbours`` (k train images that vote;
    default: the bank's, chosen on val), ``bank_dir``; other options (device, batch_size) go to the
    embedder loader.
    """
    from geosearch.models import load_embedder

    embedder = options.pop("embedder", None)
    k = options.pop("neighbours", None)
    bank_dir = Path(options.pop("bank_dir", WEIGHTS_DIR))
    options.pop("mode", None)
    if embedder is None:
        embedder = load_embedder(spec or None, **options)
    if not isinstance(embedder, Embedder):
        raise ModelError("the `embedder` option must be an Embedder")
    captions, vectors, neighbours = _load_bank(embedder, bank_dir, None if k is None else int(k))
    return NearestCaptioner(embedder, captions, vectors, neighbours)
