"""geosearch-lite-clip with its real weights: towers really loaded, and the trained model retrieves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geosearch.errors import ModelError
from geosearch.evaluation.datasets import CaptionRecord, flatten_captions, load_images, load_records
from geosearch.evaluation.retrieval import retrieval_metrics
from geosearch.plugins import lite_clip

pytestmark = pytest.mark.slow  # loads and scores the real default embedder

SENTENCES = [
    "There is a piece of farmland .",
    "many planes are parked next to a long building in an airport .",
    "Two tennis courts are surrounded by green trees.",
    "a",
]


def _imagenet_input(name: str) -> torch.Tensor:
    """sklearn sample photo → resize short side to 224, centre crop, scale to [-1, 1] (Lite0 norm)."""
    from sklearn.datasets import load_sample_image

    x = torch.from_numpy(load_sample_image(name).copy()).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    s = 224 / min(h, w)
    x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., top : top + 224, left : left + 224]
    return (x - 0.5) / 0.5


@pytest.mark.parametrize(
    ("photo", "plausible"),
    [
        # Chinese temple by a lake: bell cote, boathouse, castle, church, monastery, palace, stupa, lakeside...
        ("china.jpg", {442, 449, 483, 497, 538, 663, 698, 832, 975, 580}),
        ("flower.jpg", {985}),  # daisy
    ],
)
def test_lite0_imagenet_top1(photo: str, plausible: set[int]) -> None:
    import timm

    net = timm.create_model("tf_efficientnet_lite0").eval()  # TF 'same' padding, BN eps 1e-3
    assert lite_clip.load_lite0_trunk_weights(net) == len(net.state_dict())
    with torch.inference_mode():
        top1 = int(net(_imagenet_input(photo)).argmax())
    assert top1 in plausible


def test_lite0_checkpoint_does_not_fit_wrong_variant_silently() -> None:
    """Same shapes in timm's `efficientnet_lite0`, but its outputs differ: we must build the tf_ one."""
    model: Any = lite_clip.build_model()
    trunk = model.visual.trunk
    assert trunk.bn1.eps == pytest.approx(1e-3)
    assert type(trunk.conv_stem).__name__ == "Conv2dSame"


def test_shipped_towers_equal_package_weights(embedder: Any) -> None:
    """Every tower tensor in the loaded default model comes from the packages or the trained file."""
    from safetensors.torch import load_file

    model: Any = embedder.model
    trained = set(load_file(str(lite_clip.TRAINED_FILE)))
    src = torch.load(lite_clip.lite0_checkpoint(), map_location="cpu", weights_only=True)
    lite0 = lite_clip.convert_lite0_state_dict(src, model.visual.trunk)
    for key, value in model.visual.trunk.state_dict().items():
        if f"visual.trunk.{key}" not in trained:
            assert torch.equal(value.cpu(), lite0[key]), key
    minilm = load_file(str(lite_clip.minilm_dir() / "model.safetensors"))
    for key, value in model.text.transformer.state_dict().items():
        if f"text.transformer.{key}" not in trained:
            assert torch.equal(value.cpu(), minilm[key]), key
    assert len(lite_clip.tower_keys(model) - {k for k in trained}) > 300


def test_minilm_tower_matches_sentence_transformers() -> None:
    from open_clip.tokenizer import HFTokenizer
    from sentence_transformers import SentenceTransformer

    model: Any = lite_clip.build_model()  # towers only: before the trained layers/projection
    tok = HFTokenizer(str(lite_clip.minilm_dir()), context_length=64)
    ids = tok(SENTENCES)
    mask = (ids != 0).long()
    with torch.inference_mode():
        pooled = model.text.pooler(model.text.transformer(input_ids=ids, attention_mask=mask), mask)
    ours = F.normalize(pooled, dim=-1).numpy()
    st = SentenceTransformer(str(lite_clip.minilm_dir()), device="cpu")
    ref = st.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_default_embedder(embedder: Any) -> None:
    assert embedder.model_id == lite_clip.model_id()
    assert embedder.dim in (256, 512)
    chips = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    img = embedder.encode_images(chips)
    txt = embedder.encode_texts(["an airport", "a beach"])
    assert img.shape == (3, embedder.dim) and img.dtype == np.float32
    assert txt.shape == (2, embedder.dim) and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-4)


def test_text_encoding_without_padding_columns_is_exact(embedder: Any) -> None:
    """encode_texts drops all-padding columns for speed; the vectors must equal full-context ones."""
    texts = ["a", "oil storage tanks near the port", " ".join(["many green trees around a parking lot"] * 3)]
    ids = embedder.tokenizer(texts)
    assert ids.shape[1] > (ids != embedder._text_pad_id).sum(1).max()  # the tokenizer does pad
    with torch.inference_mode():
        full = torch.nn.functional.normalize(embedder.model.encode_text(ids).float(), dim=-1).numpy()
    np.testing.assert_allclose(embedder.encode_texts(texts), full, atol=1e-5)
    single = np.stack([embedder.encode_texts([t])[0] for t in texts])
    np.testing.assert_allclose(single, full, atol=1e-5)


def test_missing_trained_tensor_is_a_model_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(lite_clip.TRAINED_FILE))
    state.pop(next(k for k in state if k.startswith("visual.head.")))
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelError, match="do not cover"):
        lite_clip.load_trained(lite_clip.build_model(), tmp_path / "partial.safetensors")


@pytest.fixture(scope="module")
def ucm_subset(ucm_dir: Path) -> tuple[list[CaptionRecord], np.ndarray]:
    """Two test images per class (42), decoded at 256 px like the originals."""
    per_class: dict[str, list[CaptionRecord]] = {}
    for rec in load_records(ucm_dir, "test"):
        per_class.setdefault(rec.class_name, []).append(rec)
    recs = [r for cls in sorted(per_class) for r in per_class[cls][:2]]
    return recs, load_images(recs, size=256)


def test_images_prefer_their_class_captions(embedder: Any, ucm_dir: Path, ucm_subset: Any) -> None:
    recs, images = ucm_subset
    by_class: dict[str, list[str]] = {}
    for rec in load_records(ucm_dir, "test"):
        by_class.setdefault(rec.class_name, []).extend(rec.captions)
    classes = sorted(by_class)
    txt = embedder.encode_texts([c for cls in classes for c in by_class[cls]])
    owner = np.repeat(np.arange(len(classes)), [len(by_class[c]) for c in classes])
    picks = ["airplane", "beach", "forest", "harbor", "storagetanks", "tenniscourt", "parkinglot", "river"]
    rows = [next(i for i, r in enumerate(recs) if r.class_name == cls) for cls in picks]
    img = embedder.encode_images(images[rows])
    for cls, emb in zip(picks, img, strict=True):
        sim = txt @ emb
        k = classes.index(cls)
        own, others = sim[owner == k].mean(), sim[owner != k].mean()
        best_other = max(sim[owner == j].mean() for j in range(len(classes)) if j != k)
        assert own > others + 0.1, cls
        assert own > best_other, cls


def test_small_retrieval_beats_chance(embedder: Any, ucm_subset: Any) -> None:
    recs, images = ucm_subset
    texts, owner = flatten_captions(recs)
    m = retrieval_metrics(embedder.encode_images(images), embedder.encode_texts(texts), owner)
    # 42 images: chance R@1 2.4 %, R@10 24 %. Within a class captions are often identical, so R@1 is
    # bounded near 50 % here; the class-level ceiling matters, not instance recall.
    assert m["t2i"]["R@1"] > 25
    assert m["t2i"]["R@10"] > 85
    assert m["i2t"]["R@1"] > 40


def test_cpu_auto_precision_close_to_fp32(embedder: Any, ucm_subset: Any) -> None:
    if embedder.device.type != "cpu":
        pytest.skip("auto precision only differs on CPU")
    _, images = ucm_subset
    # The towers' precision; the caption memory's top-k choice would amplify last-bit differences.
    # torch's auto is bf16 only on CPUs with native bf16 (tests/test_onnx_runtime.py); fp32 elsewhere.
    auto = lite_clip.load_lite_clip(device="cpu", runtime="torch", memory=False)
    fp32 = lite_clip.load_lite_clip(device="cpu", runtime="torch", precision="fp32", memory=False)
    a, b = auto.encode_images(images[:16]), fp32.encode_images(images[:16])
    assert float((a * b).sum(axis=1).min()) > 0.99


def test_caption_memory_moves_images_toward_their_neighbours_captions(embedder: Any, ucm_subset: Any) -> None:
    """The shipped memory changes image vectors only (unit norm kept, texts untouched), it pulls an
    image toward its own class's captions, and it is part of the model id."""
    from geosearch.plugins.caption_memory import CaptionMemory

    assert isinstance(embedder.memory, CaptionMemory) and embedder.memory.dim == embedder.dim
    raw = lite_clip.load_lite_clip(memory=False)
    assert raw.model_id != embedder.model_id and "nomemory" in raw.model_id
    recs, images = ucm_subset
    plain, mixed = raw.encode_images(images), embedder.encode_images(images)
    np.testing.assert_allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.memory.expand(plain), mixed, atol=1e-5)
    assert float((plain * mixed).sum(axis=1).max()) < 0.999  # it does move them
    np.testing.assert_allclose(raw.encode_texts(SENTENCES), embedder.encode_texts(SENTENCES), atol=1e-6)
    texts, owner = flatten_captions(recs)
    txt = embedder.encode_texts(texts)
    own = lambda img: np.mean([(txt[owner == i] @ img[i]).mean() for i in range(len(recs))])  # noqa: E731
    assert own(mixed) > own(plain) + 0.02


def test_caption_memory_rejects_bad_files(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from geosearch.plugins.caption_memory import CaptionMemory

    with pytest.raises(ModelError, match="same"):
        CaptionMemory(np.ones((4, 8), np.float32), np.ones((3, 8), np.float32), k=2, weight=1.0)
    ones = np.ones((4, 8), np.float16)
    save_file({"image_vectors": ones, "caption_vectors": ones}, str(tmp_path / "m.safetensors"))
    with pytest.raises(ModelError, match="metadata"):
        CaptionMemory.load(tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="missing"):
        CaptionMemory.load(tmp_path / "absent.safetensors")
    memory = CaptionMemory(np.eye(4, 8, dtype=np.float32), np.eye(4, 8, k=4, dtype=np.float32), k=1, weight=1.0)
    memory.save(tmp_path / "ok.safetensors")
    again = CaptionMemory.load(tmp_path / "ok.safetensors")
    assert (again.k, again.weight) == (1, 1.0)
    # Image 0's nearest stored image is 0, whose caption vector is e4: the mix is (e0 + e4) / sqrt 2.
    expected = [[2**-0.5, 0, 0, 0, 2**-0.5, 0, 0, 0]]
    np.testing.assert_allclose(again.expand(np.eye(1, 8, dtype=np.float32)), expected, atol=1e-3)


@pytest.fixture(scope="module")
def plain_embedder() -> Any:
    """The shipped model without its caption memory (what a memory is built from)."""
    return lite_clip.load_lite_clip(memory=False)


def _pond_split(aid_dir: Path, per_class: int) -> tuple[list[CaptionRecord], np.ndarray[Any, Any]]:
    """All AID test ponds + `per_class` test images of every other class, and the pond mask."""
    counts: dict[str, int] = {}
    chosen = []
    for r in load_records(aid_dir, "test"):
        if r.class_name == "pond" or counts.get(r.class_name, 0) < per_class:
            counts[r.class_name] = counts.get(r.class_name, 0) + 1
            chosen.append(r)
    return chosen, np.array([r.class_name == "pond" for r in chosen])


def _average_precision(scores: np.ndarray[Any, Any], positive: np.ndarray[Any, Any]) -> float:
    order = np.argsort(-scores)
    hits = positive[order]
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


@pytest.mark.slow
def test_memory_without_a_class_leaves_that_class_findable(plain_embedder: Any, aid_dir: Path) -> None:
    """Leave-one-class-out: a caption memory built without AID's ponds must not bury "a pond"."""
    from geosearch.plugins.caption_memory import CaptionMemory

    shipped = CaptionMemory.load(lite_clip.WEIGHTS_DIR / lite_clip.MEMORY_NAME)
    counts: dict[str, int] = {}
    train = []
    for r in load_records(aid_dir, "train"):
        if r.class_name != "pond" and counts.get(r.class_name, 0) < 12:
            counts[r.class_name] = counts.get(r.class_name, 0) + 1
            train.append(r)
    texts, owner = flatten_captions(train)
    per_caption = plain_embedder.encode_texts(texts)
    captions = np.stack([per_caption[owner == i].mean(axis=0) for i in range(len(train))])
    memory = CaptionMemory(plain_embedder.encode_images(load_images(train)), captions, shipped.k, shipped.weight)

    test, is_pond = _pond_split(aid_dir, per_class=8)
    plain = plain_embedder.encode_images(load_images(test))
    query = plain_embedder.encode_texts(["an aerial image of a pond."])[0]
    chance = float(is_pond.mean())
    ap_plain = _average_precision(plain @ query, is_pond)
    ap_memory = _average_precision(memory.expand(plain) @ query, is_pond)
    assert ap_memory > 3 * chance, (ap_memory, chance)
    assert ap_memory > 0.7 * ap_plain, (ap_memory, ap_plain)
