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
from geosearch.training.data import UcmRecord, load_images, load_ucm

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
def class_images(ucm_dir: Path) -> tuple[list[UcmRecord], np.ndarray[Any, Any]]:
    """The first UCM *test* image of each class in CLASS_WORDS (never seen in training)."""
    recs: dict[str, UcmRecord] = {}
    for r in load_ucm(ucm_dir, "test"):
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
    which: str, request: pytest.FixtureRequest, class_images: tuple[list[UcmRecord], Any]
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
    which: str, request: pytest.FixtureRequest, class_images: tuple[list[UcmRecord], Any]
) -> None:
    cap: Captioner = request.getfixturevalue(which)
    _, images = class_images
    batched = cap.caption(images)
    single = [cap.caption(images[i : i + 1])[0] for i in range(len(images))]
    assert batched == single


def test_nearest_caption_names_the_class(
    nearest: Captioner, class_images: tuple[list[UcmRecord], Any]
) -> None:
    recs, images = class_images
    for rec, text in zip(recs, nearest.caption(images), strict=True):
        assert any(w in text.lower() for w in CLASS_WORDS[rec.class_name]), (rec.class_name, text)


def test_capret_names_the_class(capret: Captioner, class_images: tuple[list[UcmRecord], Any]) -> None:
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
    embedder: Embedder, nearest: Captioner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank built with another embedder is re-encoded (and cached), never used as is."""
    from geosearch.plugins.nearest_caption import BANK_JSON, BANK_VECTORS, WEIGHTS_DIR, NearestCaptioner

    bank = tmp_path / "bank"
    shutil.copytree(WEIGHTS_DIR, bank)
    meta = json.loads((bank / BANK_JSON).read_text())
    meta["embedder_model_id"] = "some-other-clip"
    (bank / BANK_JSON).write_text(json.dumps(meta))
    np.save(bank / BANK_VECTORS, np.zeros((len(meta["captions"]), embedder.dim), np.float16))
    monkeypatch.setenv("GEOSEARCH_CACHE", str(tmp_path / "cache"))
    fresh = load_captioner("nearest-caption", embedder=embedder, bank_dir=bank)
    assert isinstance(fresh, NearestCaptioner) and isinstance(nearest, NearestCaptioner)
    assert np.allclose(fresh.bank, nearest.bank, atol=2e-3)
    assert list((tmp_path / "cache" / "nearest-caption").glob("*.npy"))
    # The bank's image vectors belong to another space: plain nearest caption text, and it says so.
    assert fresh.neighbours is None and fresh.model_id == "geosearch-nearest-caption-text"
    assert nearest.neighbours is not None and nearest.model_id == "geosearch-nearest-caption"


def test_consensus_picks_what_the_neighbours_agree_on() -> None:
    """Tiny hand-made bank: the caption most neighbours' captions overlap with wins, and only
    captions of the k nearest images are candidates."""
    from geosearch.plugins.nearest_caption import ImageNeighbours

    from geosearch.training.captioner import consensus_matrix

    captions = [
        "many planes are parked at the airport",  # 0
        "some planes are parked at the airport",  # 1
        "a plane is parked next to a building",  # 2
        "a white sandy beach next to the sea",  # 3
        "waves wash the sandy beach",  # 4
    ]
    image_captions = np.array([[0, 2], [1, -1], [0, 1], [3, 4], [4, -1]])
    consensus = consensus_matrix(captions, image_captions)
    assert consensus.shape == (5, 5) and np.allclose(consensus, consensus.T, atol=1e-6)
    assert np.allclose(np.diag(consensus), 1.0, atol=1e-5)
    assert consensus[0, 1] > consensus[0, 2] > consensus[0, 3]
    vectors = np.array([[1, 0.1], [1, 0.2], [1, 0.0], [-1, 0.3], [-1, 0.2]], np.float32)
    nb = ImageNeighbours(vectors, image_captions, consensus, k=3)
    planes = np.array([[1.0, 0.0]], np.float32)
    beach = np.array([[-1.0, 0.3]], np.float32) / np.hypot(1.0, 0.3)
    assert nb.choose(planes).tolist() == [0]  # 0 and 1 appear most and agree; 2 is the odd one out
    assert int(nb.choose(beach)[0]) in (3, 4)
    # A query unlike every image (all similarities negative) still gets one of its neighbours' captions.
    assert int(ImageNeighbours(vectors[:3], image_captions[:3], consensus, k=1).choose(-planes)[0]) in (0, 1, 2)
    with pytest.raises(ModelError, match="does not exist"):
        ImageNeighbours(vectors, image_captions + 5, consensus, k=3)


def test_neighbour_consensus_beats_nearest_text_on_val(
    embedder: Embedder, nearest: Captioner, ucm_dir: Path
) -> None:
    """The reason the bank ships image vectors: on UCM val (unseen) the neighbour vote scores
    clearly higher CIDEr than the nearest caption text in the joint space."""
    from geosearch.plugins.nearest_caption import NearestCaptioner

    from geosearch.evaluation import caption_metrics

    assert isinstance(nearest, NearestCaptioner)
    recs = load_ucm(ucm_dir, "val")[::2]
    vectors = embedder.encode_images(load_images(recs))
    refs = [list(r.captions) for r in recs]
    text_only = NearestCaptioner(embedder, nearest.captions, nearest.bank)
    vote = caption_metrics(refs, nearest.caption_vectors(vectors), use_java=False)["CIDEr"]
    plain = caption_metrics(refs, text_only.caption_vectors(vectors), use_java=False)["CIDEr"]
    assert vote is not None and plain is not None
    assert vote > plain + 0.2 and vote > 3.0, (vote, plain)


def test_capret_without_weights_is_a_clear_error(embedder: Embedder, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lite-capret weights not found"):
        load_captioner(f"lite-capret:{tmp_path}", embedder=embedder)
