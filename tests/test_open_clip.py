"""The generic open_clip plugin, exercised on a tiny random-weight CLIP saved like a user's checkpoint."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geosearch.errors import InvalidInput, ModelError
from geosearch.models import load_embedder
from geosearch.plugins.base import Embedder
from geosearch.plugins.open_clip import (
    OpenClipEmbedder,
    file_digest,
    load_open_clip_embedder,
    state_digest,
    write_local_dir,
)

TEXTS = ["a river crossing farmland", "dense residential area", "an airport runway", "storage tanks"]


def _chips(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a bare state-dict .pt file (RemoteCLIP style) for a registered architecture."""
    import open_clip
    from safetensors.torch import load_file

    cfg = json.loads((tiny_clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    folder = tmp_path_factory.mktemp("arch")
    (folder / "geosearch-test-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / "geosearch-test-tiny.json")
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(load_file(str(tiny_clip_dir / "open_clip_model.safetensors")), ckpt)
    return ckpt


def _check(model: Embedder) -> None:
    img = model.encode_images(_chips(5))
    txt = model.encode_texts(TEXTS)
    assert img.dtype == np.float32 and img.shape == (5, model.dim)
    assert txt.dtype == np.float32 and txt.shape == (4, model.dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)


def test_local_dir_spec(tiny_clip_spec: str) -> None:
    model = load_embedder(tiny_clip_spec, device="cpu")
    assert model.dim == 32
    assert model.model_id.startswith("open_clip:")
    _check(model)


@pytest.mark.slow
def test_checkpoint_file_forms_agree(tiny_clip_spec: str, tiny_ckpt: Path) -> None:
    ref = load_open_clip_embedder(tiny_clip_spec, device="cpu")
    chips = _chips(3, seed=1)
    for spec in (f"geosearch-test-tiny={tiny_ckpt}", f"geosearch-test-tiny:{tiny_ckpt}"):
        model = load_open_clip_embedder(spec, device="cpu")
        assert model.model_id.startswith("open_clip:geosearch-test-tiny@")
        np.testing.assert_allclose(model.encode_images(chips), ref.encode_images(chips), atol=1e-5)
        np.testing.assert_allclose(model.encode_texts(TEXTS), ref.encode_texts(TEXTS), atol=1e-5)
    # Through the registry, as a user would type it.
    via_registry = load_embedder(f"open_clip:geosearch-test-tiny={tiny_ckpt}", device="cpu")
    np.testing.assert_allclose(via_registry.encode_texts(TEXTS), ref.encode_texts(TEXTS), atol=1e-5)


def test_model_id_tracks_checkpoint_content(tiny_ckpt: Path, tmp_path: Path) -> None:
    other = tmp_path / "tiny.pt"
    state = torch.load(tiny_ckpt, weights_only=True)
    state["logit_scale"] = state["logit_scale"] + 1
    torch.save(state, other)
    a = load_open_clip_embedder(f"geosearch-test-tiny={tiny_ckpt}", device="cpu")
    b = load_open_clip_embedder(f"geosearch-test-tiny={other}", device="cpu")
    assert a.model_id != b.model_id


def test_deterministic_and_batch_size_independent(tiny_clip_spec: str) -> None:
    chips = _chips(7, seed=2)
    one = load_open_clip_embedder(tiny_clip_spec, device="cpu", batch_size=1)
    big = load_open_clip_embedder(tiny_clip_spec, device="cpu", batch_size=32)
    a = one.encode_images(chips)
    np.testing.assert_allclose(a, big.encode_images(chips), atol=1e-5)
    np.testing.assert_array_equal(big.encode_images(chips), big.encode_images(chips))
    np.testing.assert_allclose(one.encode_texts(TEXTS), big.encode_texts(TEXTS), atol=1e-5)
    # Each row depends only on its own chip.
    np.testing.assert_allclose(big.encode_images(chips[2:4]), a[2:4], atol=1e-5)


def test_resizes_other_chip_sizes(tiny_clip_spec: str) -> None:
    model = load_open_clip_embedder(tiny_clip_spec, device="cpu")
    assert model.encode_images(_chips(2, size=100)).shape == (2, 32)


def test_bf16_close_to_fp32(tiny_clip_spec: str) -> None:
    chips = _chips(4, seed=3)
    fp32 = load_open_clip_embedder(tiny_clip_spec, device="cpu").encode_images(chips)
    bf16 = load_open_clip_embedder(tiny_clip_spec, device="cpu", precision="bf16").encode_images(chips)
    assert np.all((fp32 * bf16).sum(axis=1) > 0.98)


@pytest.mark.slow
def test_random_builtin_architecture() -> None:
    model = load_open_clip_embedder("RN50", device="cpu")  # smallest built-in, random weights
    assert re.fullmatch(r"open_clip:RN50@random-[0-9a-f]{12}", model.model_id)
    assert model.encode_texts(["x"]).shape == (1, 1024)


# ---- model ids follow the weights ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cfg(tiny_clip_dir: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((tiny_clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    return cfg


def _register(name: str, cfg: dict[str, Any], folder: Path) -> None:
    import open_clip

    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{name}.json")


def test_random_weights_are_seeded_and_hashed(tiny_cfg: dict[str, Any], tmp_path: Path) -> None:
    """A bare architecture has random weights from a fixed seed: the same ones (and id) on every load,
    whatever the caller's RNG; another architecture, or other weights, another id."""
    _register("geosearch-test-random-a", tiny_cfg, tmp_path)
    _register("geosearch-test-random-b", {**tiny_cfg, "embed_dim": 16}, tmp_path)
    torch.manual_seed(123)
    a = load_open_clip_embedder("geosearch-test-random-a", device="cpu")
    assert isinstance(a, OpenClipEmbedder)
    torch.manual_seed(456)
    again = load_open_clip_embedder("geosearch-test-random-a", device="cpu")
    b = load_open_clip_embedder("geosearch-test-random-b", device="cpu")
    assert re.fullmatch(r"open_clip:geosearch-test-random-a@random-[0-9a-f]{12}", a.model_id)
    assert again.model_id == a.model_id
    np.testing.assert_array_equal(again.encode_texts(TEXTS), a.encode_texts(TEXTS))
    assert b.model_id.startswith("open_clip:geosearch-test-random-b@random-")
    assert b.model_id.split("@")[1] != a.model_id.split("@")[1]
    # The id is the weights' content: the same weights saved to disk are the same tensors (one digest),
    # and changing one tensor changes it.
    assert state_digest(a.model) == a.model_id.removeprefix("open_clip:geosearch-test-random-a@random-")
    with torch.no_grad():
        a.model.logit_scale.add_(1.0)  # type: ignore[operator]
    assert state_digest(a.model) != again.model_id.split("@random-")[1]


def test_two_random_local_dirs_get_two_ids(tiny_clip_dir: Path, tiny_cfg: dict[str, Any], tmp_path: Path) -> None:
    """Two tiny CLIPs of one architecture, differently initialised, in folders of the same name."""
    import open_clip

    torch.manual_seed(1)
    other = write_local_dir(tiny_cfg, open_clip.CLIP(**tiny_cfg).state_dict(), tmp_path / tiny_clip_dir.name)
    a = load_open_clip_embedder(f"local-dir:{tiny_clip_dir}", device="cpu")
    b = load_open_clip_embedder(f"local-dir:{other}", device="cpu")
    assert a.model_id.split("@")[0] == b.model_id.split("@")[0] == f"open_clip:{tiny_clip_dir.name}"
    assert a.model_id != b.model_id


def test_one_weights_file_one_id(tiny_clip_dir: Path, tiny_cfg: dict[str, Any]) -> None:
    """The weights file of a local-dir, named directly, is the same spec; under an architecture name it is
    the same digest with another name (ids do not assume two names are one architecture)."""
    weights = tiny_clip_dir / "open_clip_model.safetensors"
    via_dir = load_open_clip_embedder(f"local-dir:{tiny_clip_dir}", device="cpu").model_id
    assert load_open_clip_embedder(str(weights), device="cpu").model_id == via_dir
    assert via_dir == f"open_clip:{tiny_clip_dir.name}@{file_digest(weights)}"
    _register("geosearch-test-named", tiny_cfg, tiny_clip_dir.parent)
    named = load_open_clip_embedder(f"geosearch-test-named={weights}", device="cpu").model_id
    assert named == f"open_clip:geosearch-test-named@{file_digest(weights)}"


def test_file_digest_is_cached_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEARCH_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights one")
    full = hashlib.sha256(b"weights one").hexdigest()
    assert file_digest(weights) == full[:12] and file_digest(weights, 64) == full
    entries = list((tmp_path / "cache" / "weights-digests").iterdir())
    assert [e.read_text().strip() for e in entries] == [full]
    assert file_digest(weights) == full[:12]  # from the cache: no second entry
    assert len(list((tmp_path / "cache" / "weights-digests").iterdir())) == 1
    weights.write_bytes(b"weights two!")  # a new version: another size and time, hashed again
    assert file_digest(weights) == hashlib.sha256(b"weights two!").hexdigest()[:12]
    assert len(list((tmp_path / "cache" / "weights-digests").iterdir())) == 2


@pytest.mark.slow
def test_hf_hub_offline_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="Hugging Face Hub"):
        load_open_clip_embedder("hf-hub:geosearch-nonexistent/nothing-here")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("NoSuchNet-99", "unknown open_clip architecture"),
        ("ViT-B-32/not-a-tag", "unknown pretrained tag"),
        ("ViT-B-32=/nonexistent/ckpt.pt", "not found"),
        ("local-dir:/nonexistent/dir", "open_clip_config.json"),
        ("", "empty"),
    ],
)
def test_bad_specs_are_model_errors(spec: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_open_clip_embedder(spec)


def test_bad_inputs(tiny_clip_spec: str) -> None:
    model = load_open_clip_embedder(tiny_clip_spec, device="cpu")
    with pytest.raises(InvalidInput):
        model.encode_images(np.zeros((1, 8, 8, 3), dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        model.encode_texts("not a list")
    with pytest.raises(ModelError):
        load_open_clip_embedder(tiny_clip_spec, precision="fp8")


@pytest.mark.parametrize("loader", ["load_embedder", "load_captioner"])
def test_unknown_model_option_is_a_model_error_before_loading(loader: str) -> None:
    import geosearch

    with pytest.raises(ModelError, match="devise"):
        getattr(geosearch, loader)(None, devise="cpu")
