"""Both captioners with the real shipped models: contract, batching, content, embedder mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from geosearch.plugins.base import Captioner, Embedder

from geosearch.errors import InvalidInput, ModelError
from geosearch.models import load_captioner, load_embedder
from geosearch.training.data import CaptionRecord, load_images, load_records

CLASS_WORDS = {
    "airplane": ("plane", "airplane"),
    "tenniscourt": ("tennis",),
    "baseballdiamond": ("baseball",),
    "beach": ("beach", "sea", "ocean"),
    "parkinglot": ("parking", "cars"),
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(scope="module")
def nearest(embedder: Embedder) -> Captioner:
    return load_captioner("nearest-caption", embedder=embedder)


@pytest.fixture(scope="module")
def capret(embedder: Embedder) -> Captioner:
    return load_captioner("lite-capret", embedder=embedder)


@pytest.fixture(scope="module")
def class_images(ucm_dir: Path) -> tuple[list[CaptionRecord], np.ndarray[Any, Any]]:
    """The first UCM *test* image of each class in CLASS_WORDS (never seen in training)."""
    recs: dict[str, CaptionRecord] = {}
    for r in load_records(ucm_dir, "test"):
        if r.class_name in CLASS_WORDS and r.class_name not in recs:
            recs[r.class_name] = r
    chosen = [recs[c] for c in CLASS_WORDS]
    return chosen, load_images(chosen)


def _assert_english(captions: list[str], n: int) -> None:
    assert len(captions) == n
    for c in captions:
        assert isinstance(c, str) and c.strip()
        assert c.isascii() and sum(ch.isalpha() for ch in c) >= 3, c


@pytest.mark.parametrize("which", ["nearest", "capret"])
def test_one_nonempty_caption_per_chip(
    which: str, request: pytest.FixtureRequest, class_images: tuple[list[CaptionRecord], Any]
) -> None:
    cap: Captioner = request.getfixturevalue(which)
    _, images = class_images
    noise = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    odd_size = images[:1, :200, :150]  # chips at scene edges can be smaller
    _assert_english(cap.caption(np.concatenate([images, noise])), len(images) + 1)
    _assert_english(cap.caption(np.ascontiguousarray(odd_size)), 1)
    assert cap.caption(np.zeros((0, 224, 224, 3), np.uint8)) == []


@pytest.mark.parametrize("which", ["nearest", "capret"])
def test_bad_input_rejected(which: str, request: pytest.FixtureRequest) -> None:
    cap: Captioner = request.getfixturevalue(which)
    with pytest.raises(InvalidInput):
        cap.caption(np.zeros((1, 224, 224, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        cap.caption(np.zeros((224, 224, 3), np.uint8))


@pytest.mark.parametrize("which", ["nearest", "capret"])
def test_batched_equals_one_by_one(
    which: str, request: pytest.FixtureRequest, class_images: tuple[list[CaptionRecord], Any]
) -> None:
    cap: Captioner = request.getfixturevalue(which)
    _, images = class_images
    batched = cap.caption(images)
    single = [cap.caption(images[i : i + 1])[0] for i in range(len(images))]
    assert batched == single


def test_nearest_caption_names_the_class(nearest: Captioner, class_images: tuple[list[CaptionRecord], Any]) -> None:
    recs, images = class_images
    for rec, text in zip(recs, nearest.caption(images), strict=True):
        assert any(w in text.lower() for w in CLASS_WORDS[rec.class_name]), (rec.class_name, text)


def test_capret_names_the_class(capret: Captioner, class_images: tuple[list[CaptionRecord], Any]) -> None:
    recs, images = class_images
    texts = capret.caption(images)
    hits = [any(w in t.lower() for w in CLASS_WORDS[r.class_name]) for r, t in zip(recs, texts, strict=True)]
    # The generative mode may miss one of these classes, never most of them.
    assert sum(hits) >= len(hits) - 1, list(zip([r.class_name for r in recs], texts, strict=True))
    assert hits[0] and hits[1], texts[:2]  # airplane, tennis court


def test_capret_refuses_other_embedder(embedder: Embedder, tmp_path: Path) -> None:
    from geosearch.plugins.capret import WEIGHTS_DIR, load_capret_captioner

    weights = tmp_path / "capret"
    shutil.copytree(WEIGHTS_DIR, weights)
    cfg = json.loads((weights / "config.json").read_text())
    cfg["embedder_model_id"] = "some-other-clip"
    (weights / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="trained against embedder 'some-other-clip'"):
        load_capret_captioner(str(weights), embedder=embedder)


def test_nearest_bank_recomputed_for_other_embedder(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank built with another embedder falls back to the nearest caption text, re-encoded with this
    embedder (and cached), never to the bank's image vectors."""
    from geosearch.plugins.nearest_caption import NGRAMS, ImageNeighbours, NearestCaptioner, write_bank

    from geosearch.training.captioner import ngram_matrix

    captions = ["Many planes are parked at the airport.", "A white sandy beach next to the sea."]
    image_captions = np.array([[0], [1]])
    images = np.eye(2, embedder.dim, dtype=np.float32)
    write_bank(
        tmp_path / "bank",
        "some-other-clip",
        captions,
        ImageNeighbours(images, image_captions, ngram_matrix(captions, image_captions), 1),
    )
    assert (tmp_path / "bank" / NGRAMS).is_file()
    monkeypatch.setenv("GEOSEARCH_CACHE", str(tmp_path / "cache"))
    fresh = load_captioner("nearest-caption", embedder=embedder, bank_dir=tmp_path / "bank")
    assert isinstance(fresh, NearestCaptioner)
    assert fresh.neighbours is None and fresh.model_id == "geosearch-nearest-caption-text"
    assert np.allclose(fresh.bank, embedder.encode_texts(captions), atol=2e-3)
    assert list((tmp_path / "cache" / "nearest-caption").glob("*.npy"))
    planes, beach = embedder.encode_texts(["airport with planes", "beach and sea"])
    assert fresh.caption_vectors(np.stack([beach, planes])) == captions[::-1]
    own = load_captioner("nearest-caption", embedder=embedder)
    assert isinstance(own, NearestCaptioner) and own.neighbours is not None
    assert own.model_id == "geosearch-nearest-caption"


def _dense_consensus(captions: list[str], image_captions: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The definition the factorised bank must reproduce, written densely: the mean over n = 1..4 of
    the cosine of tf-idf n-gram vectors (term frequency x log(images / images holding the n-gram))."""
    import math
    from collections import Counter

    from geosearch.evaluation import simple_tokenize

    words = [simple_tokenize(c).split() for c in captions]
    sim = np.zeros((len(captions), len(captions)))
    for n in range(1, 5):
        grams = [[tuple(w[i : i + n]) for i in range(len(w) - n + 1)] for w in words]
        df: Counter[tuple[str, ...]] = Counter()
        for row in image_captions:
            df.update({g for c in row if c >= 0 for g in grams[c]})
        col = {g: j for j, g in enumerate(sorted(df))}
        x = np.zeros((len(captions), len(col)))
        for i, gs in enumerate(grams):
            for g, count in Counter(gs).items():
                x[i, col[g]] = count / len(gs) * math.log(len(image_captions) / df[g])
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim += x @ x.T / 4
    return sim


def test_factorised_consensus_equals_dense(ucm_dir: Path) -> None:
    """votes @ V Vᵀ on the candidates equals votes @ (dense consensus) on a small real bank, and so
    do the picks."""
    from geosearch.plugins.nearest_caption import ImageNeighbours

    from geosearch.training.captioner import caption_ids, ngram_matrix

    recs = load_records(ucm_dir, "train")[::20]  # 84 images, every class
    captions, image_captions = caption_ids(recs)
    dense = _dense_consensus(captions, image_captions)
    v = ngram_matrix(captions, image_captions)
    assert v.shape[0] == len(captions) and v.nnz < v.shape[0] * v.shape[1] / 20
    assert np.allclose((v @ v.T).toarray(), dense, atol=1e-5)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(recs), 16)).astype(np.float32)
    queries = vectors[:30] + 0.5 * rng.normal(size=(30, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for k in (1, 7, 40):
        nb = ImageNeighbours(vectors, image_captions, v, k)
        votes = nb.votes(queries).toarray()
        want = votes @ dense
        want[votes == 0] = -np.inf
        got = nb.scores(queries)
        assert np.array_equal(np.isinf(got), np.isinf(want))
        assert np.allclose(got[np.isfinite(got)], want[np.isfinite(want)], atol=1e-5)
        assert nb.choose(queries).tolist() == want.argmax(axis=1).tolist()


def test_consensus_picks_what_the_neighbours_agree_on() -> None:
    """Tiny hand-made bank: the caption most neighbours' captions overlap with wins, and only
    captions of the k nearest images are candidates."""
    from geosearch.plugins.nearest_caption import ImageNeighbours

    from geosearch.training.captioner import ngram_matrix

    captions = [
        "many planes are parked at the airport",  # 0
        "some planes are parked at the airport",  # 1
        "a plane is parked next to a building",  # 2
        "a white sandy beach next to the sea",  # 3
        "waves wash the sandy beach",  # 4
    ]
    image_captions = np.array([[0, 2], [1, -1], [0, 1], [3, 4], [4, -1]])
    v = ngram_matrix(captions, image_captions)
    consensus = (v @ v.T).toarray()
    assert consensus.shape == (5, 5) and np.allclose(consensus, consensus.T, atol=1e-6)
    assert np.allclose(np.diag(consensus), 1.0, atol=1e-5)
    assert consensus[0, 1] > consensus[0, 2] > consensus[0, 3]
    vectors = np.array([[1, 0.1], [1, 0.2], [1, 0.0], [-1, 0.3], [-1, 0.2]], np.float32)
    nb = ImageNeighbours(vectors, image_captions, v, k=3)
    planes = np.array([[1.0, 0.0]], np.float32)
    beach = np.array([[-1.0, 0.3]], np.float32) / np.hypot(1.0, 0.3)
    assert nb.choose(planes).tolist() == [0]  # 0 and 1 appear most and agree; 2 is the odd one out
    assert int(nb.choose(beach)[0]) in (3, 4)
    # A query unlike every image (all similarities negative) still gets one of its neighbours' captions.
    assert int(ImageNeighbours(vectors[:3], image_captions[:3], v, k=1).choose(-planes)[0]) in (0, 1, 2)
    with pytest.raises(ModelError, match="does not exist"):
        ImageNeighbours(vectors, image_captions + 5, v, k=3)


@pytest.mark.parametrize(("dataset", "step", "margin"), [("ucm-captions", 2, 0.05), ("aid-rsicd", 4, 0.5)])
def test_neighbour_consensus_beats_nearest_text_on_val(
    embedder: Embedder, nearest: Captioner, ucm_dir: Path, dataset: str, step: int, margin: float
) -> None:
    """The reason the bank ships image vectors: on each dataset's val split (unseen) the neighbour
    vote scores higher CIDEr than the nearest caption text in the joint space."""
    from geosearch.plugins.nearest_caption import NearestCaptioner

    from geosearch.evaluation import caption_metrics

    assert isinstance(nearest, NearestCaptioner)
    recs = load_records(ucm_dir.parent / dataset, "val")[::step]
    vectors = embedder.encode_images(load_images(recs))
    refs = [list(r.captions) for r in recs]
    text_only = NearestCaptioner(embedder, nearest.captions)  # text vectors encoded on first use (cached)
    vote = caption_metrics(refs, nearest.caption_vectors(vectors), use_java=False)["CIDEr"]
    plain = caption_metrics(refs, text_only.caption_vectors(vectors), use_java=False)["CIDEr"]
    assert vote is not None and plain is not None
    assert vote > plain + margin, (vote, plain)


def test_capret_without_weights_is_a_clear_error(embedder: Embedder, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lite-capret weights not found"):
        load_captioner(f"lite-capret:{tmp_path}", embedder=embedder)
