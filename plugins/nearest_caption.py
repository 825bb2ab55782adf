"""geosearch-nearest-caption: the fast CPU captioner.

A chip's caption is one of the bank's train captions (UCM-Captions + AID/RSICD), chosen by
consensus among the chip's nearest train *images* (image-image similarity in the embedder's space,
which is far more reliable than image-text similarity): each of the k neighbours votes for its
captions with its similarity, and the candidate most similar (tf-idf n-gram overlap, CIDEr-style)
to all the votes wins (Devlin et al. 2015, "Exploring nearest neighbor approaches for image
captioning"). The caption x caption similarity is stored factorised, V Vᵀ with V the sparse
n-gram matrix, so the bank grows linearly with its captions; per batch it costs one product with
the train image vectors the ingest already computed for search, and two sparse products.

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
from numpy.typing import NDArray
from scipy import sparse

from geosearch.errors import ModelError
from geosearch.plugins.base import Embedder, ImageBatch, cache_root, check_image_batch, nearest_rows, unit_rows

MODEL_ID = "geosearch-nearest-caption"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "nearest_caption"
BANK_JSON = "bank.json"
IMAGE_VECTORS = "bank_images.npy"
"""Train image vectors (float16) of the bank's embedder."""
NGRAMS = "bank_ngrams.npz"
"""Sparse caption x n-gram tf-idf matrix V (scipy .npz): consensus = V Vᵀ, independent of any embedder."""
BANK_METRICS = "metrics.json"
"""What the bank build measured (val scores per k, the chosen k), for the model card."""
CHUNK = 256
"""Queries scored at once: bounds the (queries x candidates) score block."""
EMBEDDER_OPTIONS = frozenset({"device", "batch_size", "precision", "runtime", "memory"})
"""The options of `geosearch.models.load_embedder` that a captioner factory accepts and passes on when it
loads an embedder (they configure that embedder; a given, already loaded one ignores them)."""


def clean_caption(text: str) -> str:
    """UCM raw captions end in ' .' (sometimes '. .'); give them one attached full stop."""
    words = text.replace(" .", ".").strip().rstrip(". ").split()
    if not words:
        return ""
    out = " ".join(words)
    return out[0].upper() + out[1:] + "."


class ImageNeighbours:
    """The image half of a bank: train image vectors, their caption ids, the n-gram matrix V."""

    def __init__(
        self,
        vectors: NDArray[np.float32],
        image_captions: NDArray[np.int64],
        ngrams: sparse.csr_matrix,
        k: int,
    ) -> None:
        n_caps = ngrams.shape[0]
        if image_captions.ndim != 2 or image_captions.shape[0] != vectors.shape[0]:
            raise ModelError("caption bank: image vectors and image captions disagree")
        if image_captions.size and (image_captions.max() >= n_caps or image_captions.min() < -1):
            raise ModelError("caption bank: an image refers to a caption that does not exist")
        self.vectors = unit_rows(vectors)
        self.image_captions = image_captions
        self.ngrams = sparse.csr_matrix(ngrams, dtype=np.float32)
        self.k = max(1, min(int(k), len(vectors)))

    def votes(self, queries: NDArray[np.float32]) -> sparse.csr_matrix:
        """(queries x captions) sum of the similarities of the k nearest images holding each caption."""
        top, weight = nearest_rows(queries, self.vectors, self.k)
        caps = self.image_captions[top]  # (B, k, captions per image); -1 pads
        rows = np.broadcast_to(np.arange(len(queries))[:, None, None], caps.shape)
        valid = caps >= 0
        w = np.broadcast_to(weight[:, :, None], caps.shape)[valid]
        shape = (len(queries), self.ngrams.shape[0])
        return sparse.csr_matrix((w, (rows[valid], caps[valid])), shape=shape, dtype=np.float32)  # sums repeats

    def scores(self, queries: NDArray[np.float32]) -> NDArray[np.float32]:
        """(queries x captions) vote-weighted consensus, votes @ V Vᵀ, computed only for the captions
        some neighbour holds (the candidates); -inf elsewhere."""
        votes = self.votes(queries)
        cand = np.unique(votes.indices)
        out = np.full(votes.shape, -np.inf, np.float32)
        block = ((votes @ self.ngrams) @ self.ngrams[cand].T).toarray()
        held = votes[:, cand].toarray() != 0  # weights are floored > 0: held == some neighbour voted
        out[:, cand] = np.where(held, block, -np.inf)
        return out

    def choose(self, queries: NDArray[np.float32]) -> NDArray[np.int64]:
        """Caption id per (unit) query vector: the candidate with the highest weighted consensus."""
        picks = [self.scores(queries[i : i + CHUNK]).argmax(axis=1) for i in range(0, len(queries), CHUNK)]
        out: NDArray[np.int64] = np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)
        return out


def text_vectors(embedder: Embedder, captions: list[str]) -> NDArray[np.float32]:
    """The captions encoded by `embedder`, cached on disk (keyed by embedder id and the texts): the
    text-only mode needs them, and encoding ~10k captions takes a while on CPU."""
    key = hashlib.sha256((embedder.model_id + "\0" + "\n".join(captions)).encode("utf-8")).hexdigest()[:16]
    cached = cache_root() / "nearest-caption" / f"{key}.npy"
    if cached.is_file():
        stored: NDArray[np.float32] = np.load(cached).astype(np.float32)
        if stored.shape == (len(captions), embedder.dim):
            return stored
    vectors: NDArray[np.float32] = np.asarray(embedder.encode_texts(captions), dtype=np.float32)
    if vectors.shape != (len(captions), embedder.dim):
        raise ModelError(f"caption vectors have shape {vectors.shape}, expected ({len(captions)}, {embedder.dim})")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors.astype(np.float16))
    os.replace(tmp, cached)
    return vectors


class NearestCaptioner:
    """Captions chips with a train caption: neighbour consensus, or the nearest caption text.

    ``bank`` (caption text vectors) is only needed by the text mode; None computes it on first use
    (cached), so the image-neighbour mode never pays for encoding the captions.
    """

    def __init__(
        self,
        embedder: Embedder,
        captions: list[str],
        bank: NDArray[np.float32] | None = None,
        neighbours: ImageNeighbours | None = None,
    ) -> None:
        if bank is not None and bank.shape != (len(captions), embedder.dim):
            raise ModelError(f"caption bank has shape {bank.shape}, expected ({len(captions)}, {embedder.dim})")
        if neighbours is not None and neighbours.vectors.shape[1] != embedder.dim:
            raise ModelError("caption bank image vectors do not match the embedder's dimension")
        if neighbours is not None and neighbours.ngrams.shape[0] != len(captions):
            raise ModelError("caption bank n-gram matrix does not match its captions")
        self.model_id = MODEL_ID if neighbours is not None else f"{MODEL_ID}-text"
        self.embedder = embedder
        self.captions = captions
        self._bank: NDArray[np.float32] | None = None if bank is None else unit_rows(bank)
        self.neighbours = neighbours

    @property
    def bank(self) -> NDArray[np.float32]:
        """Unit caption text vectors in the embedder's space."""
        bank = self._bank
        if bank is None:
            bank = self._bank = unit_rows(text_vectors(self.embedder, self.captions))
        return bank

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


def write_bank(out_dir: Path, embedder_id: str, captions: list[str], neighbours: ImageNeighbours) -> None:
    """Store the bank: texts + image caption ids + k (JSON), image vectors (float16 .npy), V (sparse .npz).

    Files of an older layout in `out_dir` are removed so a stale one is never read.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "embedder_model_id": embedder_id,
        "dim": int(neighbours.vectors.shape[1]),
        "neighbours": neighbours.k,
        "captions": captions,
        "image_captions": neighbours.image_captions.tolist(),
    }
    (out_dir / BANK_JSON).write_text(json.dumps(meta, separators=(",", ":"), ensure_ascii=False) + "\n")
    np.save(out_dir / IMAGE_VECTORS, neighbours.vectors.astype(np.float16))
    sparse.save_npz(out_dir / NGRAMS, neighbours.ngrams.astype(np.float32), compressed=True)
    for old in ("bank.npy", "bank_consensus.npy"):
        (out_dir / old).unlink(missing_ok=True)


def _load_bank(embedder: Embedder, bank_dir: Path, k: int | None) -> tuple[list[str], ImageNeighbours | None]:
    """Captions, and the image neighbours when the bank was built with this very embedder."""
    meta_path = bank_dir / BANK_JSON
    if not meta_path.is_file():
        raise ModelError(f"nearest-caption bank not found at {meta_path}")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    captions = [str(c) for c in meta["captions"]]
    if meta.get("embedder_model_id") != embedder.model_id or not (bank_dir / IMAGE_VECTORS).is_file():
        return captions, None
    if not (bank_dir / NGRAMS).is_file() or "image_captions" not in meta:
        raise ModelError(f"nearest-caption bank at {bank_dir} is incomplete (rebuild it)")
    neighbours = ImageNeighbours(
        np.load(bank_dir / IMAGE_VECTORS).astype(np.float32),
        np.asarray(meta["image_captions"], dtype=np.int64),
        sparse.load_npz(bank_dir / NGRAMS).tocsr(),
        k if k is not None else int(meta.get("neighbours", 1)),
    )
    return captions, neighbours


def load_nearest_captioner(
    spec: str = "",
    *,
    embedder: Embedder | None = None,
    neighbours: int | None = None,
    bank_dir: str | Path = WEIGHTS_DIR,
    **embedder_options: Any,
) -> NearestCaptioner:
    """Factory for the `nearest-caption` entry point.

    ``spec``: an embedder spec (default: the default embedder). Options: ``embedder`` (an already
    loaded Embedder, reused instead of loading another), ``neighbours`` (k train images that vote;
    default: the bank's, chosen on val), ``bank_dir``, and the embedder loader's (EMBEDDER_OPTIONS),
    which configure the embedder this loads when none is given. Any other option is a ModelError.
    """
    from geosearch.models import load_embedder

    check_embedder_options("nearest-caption", embedder_options, ("embedder", "neighbours", "bank_dir"))
    if embedder is None:
        embedder = load_embedder(spec or None, **embedder_options)
    if not isinstance(embedder, Embedder):
        raise ModelError("the `embedder` option must be an Embedder")
    captions, found = _load_bank(embedder, Path(bank_dir), None if neighbours is None else int(neighbours))
    return NearestCaptioner(embedder, captions, None, found)


def check_embedder_options(plugin: str, options: dict[str, Any], own: tuple[str, ...]) -> None:
    """A captioner factory's leftover options must be the embedder loader's: ModelError naming any other."""
    unknown = sorted(set(options) - EMBEDDER_OPTIONS)
    if unknown:
        known = ", ".join(sorted({*own, *EMBEDDER_OPTIONS}))
        raise ModelError(f"unknown {plugin} option(s): {', '.join(unknown)}; known: {known}")
