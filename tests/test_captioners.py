"""Both captioners with the real shipped models: contract, batching, content, embedder mismatch, options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geosearch.errors import InvalidInput, ModelError
from geosearch.evaluation.datasets import CaptionRecord, load_images, load_records
from geosearch.models import load_captioner, load_embedder
from geosearch.plugins.base import Captioner, Embedder

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


@pytest.fixture(params=["nearest", "capret"])
def either(request: pytest.FixtureRequest) -> Captioner:
    """Each captioner in turn (the module's loaded ones)."""
    cap: Captioner = request.getfixturevalue(request.param)
    return cap


@pytest.mark.slow
def test_one_nonempty_caption_per_chip(either: Captioner, class_images: tuple[list[CaptionRecord], Any]) -> None:
    _, images = class_images
    noise = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    odd_size = images[:1, :200, :150]  # chips at scene edges can be smaller
    _assert_english(either.caption(np.concatenate([images, noise])), len(images) + 1)
    _assert_english(either.caption(np.ascontiguousarray(odd_size)), 1)
    assert either.caption(np.zeros((0, 224, 224, 3), np.uint8)) == []


@pytest.mark.slow
def test_bad_input_rejected(either: Captioner) -> None:
    with pytest.raises(InvalidInput):
        either.caption(np.zeros((1, 224, 224, 3), np.float32))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        either.caption(np.zeros((224, 224, 3), np.uint8))


@pytest.mark.slow
def test_batched_equals_one_by_one(either: Captioner, class_images: tuple[list[CaptionRecord], Any]) -> None:
    _, images = class_images
    batched = either.caption(images)
    single = [either.caption(images[i : i + 1])[0] for i in range(len(images))]
    assert batched == single


@pytest.mark.slow
def test_nearest_caption_names_the_class(nearest: Captioner, class_images: tuple[list[CaptionRecord], Any]) -> None:
    recs, images = class_images
    for rec, text in zip(recs, nearest.caption(images), strict=True):
        assert any(w in text.lower() for w in CLASS_WORDS[rec.class_name]), (rec.class_name, text)


@pytest.mark.slow
def test_capret_names_the_class(capret: Captioner, class_images: tuple[list[CaptionRecord], Any]) -> None:
    recs, images = class_images
    texts = capret.caption(images)
    hits = [any(w in t.lower() for w in CLASS_WORDS[r.class_name]) for r, t in zip(recs, texts, strict=True)]
    # The generative mode may miss one of these classes, never most of them.
    assert sum(hits) >= len(hits) - 1, list(zip([r.class_name for r in recs], texts, strict=True))
    assert hits[0] and hits[1], texts[:2]  # airplane, tennis court


@pytest.mark.slow
def test_capret_refuses_other_embedder(embedder: Embedder, tmp_path: Path) -> None:
    from geosearch.plugins.capret import WEIGHTS_DIR, load_capret_captioner

    weights = tmp_path / "capret"
    shutil.copytree(WEIGHTS_DIR, weights)
    cfg = json.loads((weights / "config.json").read_text())
    cfg["embedder_model_id"] = "some-other-clip"
    (weights / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="trained against embedder 'some-other-clip'"):
        load_capret_captioner(str(weights), embedder=embedder)


@pytest.mark.slow
def test_nearest_bank_recomputed_for_other_embedder(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank built with another embedder falls back to the nearest caption text, re-encoded with this
    embedder (and cached), never to the bank's image vectors."""
    from geosearch.plugins.nearest_caption import NGRAMS, ImageNeighbours, NearestCaptioner, write_bank
    from geosearch.training.bank import ngram_matrix

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
    from geosearch.training.bank import caption_ids, ngram_matrix

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
    from geosearch.training.bank import ngram_matrix

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


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "step", "margin"), [("ucm-captions", 2, 0.05), ("aid-rsicd", 4, 0.5)])
def test_neighbour_consensus_beats_nearest_text_on_val(
    embedder: Embedder, nearest: Captioner, ucm_dir: Path, dataset: str, step: int, margin: float
) -> None:
    """The reason the bank ships image vectors: on each dataset's val split (unseen) the neighbour
    vote scores higher CIDEr than the nearest caption text in the joint space."""
    from geosearch.evaluation import caption_metrics
    from geosearch.plugins.nearest_caption import NearestCaptioner

    assert isinstance(nearest, NearestCaptioner)
    recs = load_records(ucm_dir.parent / dataset, "val")[::step]
    vectors = embedder.encode_images(load_images(recs))
    refs = [list(r.captions) for r in recs]
    text_only = NearestCaptioner(embedder, nearest.captions)  # text vectors encoded on first use (cached)
    vote = caption_metrics(refs, nearest.caption_vectors(vectors), use_java=False)["CIDEr"]
    plain = caption_metrics(refs, text_only.caption_vectors(vectors), use_java=False)["CIDEr"]
    assert vote is not None and plain is not None
    assert vote > plain + margin, (vote, plain)


def test_capret_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="lite-capret weights not found"):
        load_captioner(f"lite-capret:{tmp_path}")


@pytest.mark.parametrize("name", ["nearest-caption", "lite-capret"])
def test_unknown_option_is_a_clear_error(name: str) -> None:
    """Nothing is silently dropped: an option neither the captioner nor the embedder loader knows is refused
    before any model loads."""
    with pytest.raises(ModelError, match=rf"unknown {name} option\(s\): mode; known: .*batch_size"):
        load_captioner(name, mode="fast")


def _log_likelihood(decoder: Any, prefix: Any, token_ids: list[list[int]]) -> list[float]:
    """Each chip's caption log-probability under the decoder's softmax (its restricted vocabulary), by
    teacher forcing: [BOS] + prefix + the caption, one forward pass per chip."""
    import torch

    column = {t: j for j, t in enumerate(decoder.vocab.tolist())}
    embed = decoder.lm.get_input_embeddings()
    out = []
    with torch.inference_mode():
        for row, ids in zip(prefix, token_ids, strict=True):
            tokens = embed(torch.tensor([[decoder.tok.bos_token_id, *ids[:-1]]]))
            inputs = torch.cat([tokens[:, :1], row[None].to(tokens.dtype), tokens[:, 1:]], dim=1)
            hidden = decoder.lm.model(inputs_embeds=inputs).last_hidden_state[0, -len(ids) :]
            logp = torch.log_softmax(hidden.float() @ decoder.head.float().T, dim=-1)
            out.append(float(logp[torch.arange(len(ids)), [column[t] for t in ids]].sum()))
    return out


@pytest.mark.slow
def test_capret_beam_search_finds_likelier_captions(
    embedder: Embedder, capret: Captioner, class_images: tuple[list[CaptionRecord], Any]
) -> None:
    """The `beams` option switches to beam search: on every chip its caption is at least as likely under
    the LM as the greedy one (strictly likelier on some), and still names the class; one beam is greedy."""
    from dataclasses import replace

    import torch

    from geosearch.plugins.capret import CapRetCaptioner, PrefixDecoder

    beam = load_captioner("lite-capret", embedder=embedder, beams=3)
    assert isinstance(beam, CapRetCaptioner) and isinstance(capret, CapRetCaptioner)
    assert beam.decoder.options.beams == 3 and capret.decoder.options.beams == 1
    recs, images = class_images
    prefix = capret.mapper(torch.from_numpy(np.asarray(embedder.encode_images(images), np.float32)))
    greedy_ids, beam_ids = capret.decoder.decode(prefix), beam.decoder.decode(prefix)
    greedy_lp = _log_likelihood(capret.decoder, prefix, greedy_ids)
    beam_lp = _log_likelihood(capret.decoder, prefix, beam_ids)
    assert all(b >= g - 1e-4 for b, g in zip(beam_lp, greedy_lp, strict=True)), (beam_lp, greedy_lp)
    assert sum(beam_lp) > sum(greedy_lp) + 1.0, (beam_lp, greedy_lp)
    # One beam is greedy search, up to the token limit included.
    short = PrefixDecoder(capret.lm, capret.tokenizer, replace(capret.decoder.options, max_new_tokens=5))
    with torch.inference_mode():
        assert short._beam(prefix) == short._greedy(prefix)
    texts = [beam.tokenizer.decode(ids, skip_special_tokens=True) for ids in beam_ids]
    _assert_english(texts, len(images))
    hits = [any(w in t.lower() for w in CLASS_WORDS[r.class_name]) for r, t in zip(recs, texts, strict=True)]
    assert sum(hits) >= len(hits) - 1, texts
