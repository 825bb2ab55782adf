"""Shared fixtures. Test data is read from ../shared/data beside the project checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENES = SHARED / "scenes"
UCM = SHARED / "ucm-captions"
AID = SHARED / "aid-rsicd"


MODEL_FIXTURES = frozenset({"embedder", "captioner", "ingested", "fresh_engine"})
"""Fixtures that load the real default models: a test using one is marked `slow` automatically."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def scenes_dir() -> Path:
    if not SCENES.is_dir():
        pytest.fail(f"shared scenes not found at {SCENES}")
    return SCENES


@pytest.fixture(scope="session")
def ucm_dir() -> Path:
    if not UCM.is_dir():
        pytest.fail(f"UCM-Captions not found at {UCM}")
    return UCM


@pytest.fixture(scope="session")
def aid_dir() -> Path:
    if not AID.is_dir():
        pytest.fail(f"AID + RSICD not found at {AID}")
    return AID


# -- engine fixtures: the real default models, real scenes, the embedded Qdrant engine ---------------
SAMPLE_SCENES = (
    "rasterio/cogeo.tif",  # EPSG:3857, aerial, 0.6 m
    "rasterio/RGB.byte.tif",  # UTM 18N, Landsat, nodata 0
    "rio-tiler/pix4d_alpha_nodata.tif",  # UTM 50S, drone, alpha
    "rio-tiler/mosaic_cog3.tif",  # EPSG:4326, uint16, smaller than one chip in height
)


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from geosearch import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def captioner(embedder):  # type: ignore[no-untyped-def]
    from geosearch import load_captioner

    # The fast mode keeps engine tests quick; the LM captioner has its own tests.
    return load_captioner("nearest-caption", embedder=embedder)


@pytest.fixture(scope="session")
def sample_scenes(scenes_dir: Path) -> list[Path]:
    return [scenes_dir / name for name in SAMPLE_SCENES]


def make_engine(store_dir: Path, embedder, captioner):  # type: ignore[no-untyped-def]
    from geosearch.engine import Engine
    from geosearch.store import open_store

    store = open_store(store_dir, model_id=embedder.model_id, dim=embedder.dim)
    return Engine(embedder, store, captioner=captioner)


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, embedder, captioner, sample_scenes):  # type: ignore[no-untyped-def]
    """One store with the sample scenes, shared read-only by the API tests."""
    from geosearch.ingest import ingest

    engine = make_engine(tmp_path_factory.mktemp("store"), embedder, captioner)
    report = ingest(engine, sample_scenes)
    assert report.ok, [s.error for s in report.scenes]
    yield engine, report
    engine.close()


@pytest.fixture
def fresh_engine(tmp_path, embedder, captioner):  # type: ignore[no-untyped-def]
    """An engine on an empty store of its own, for tests that write or delete."""
    engine = make_engine(tmp_path / "store", embedder, captioner)
    yield engine
    engine.close()


TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A tiny open_clip ViT/text-transformer CLIP (random weights) for fast plugin and engine tests."""


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """open_clip ``local-dir`` folder (open_clip_config.json + safetensors) of the tiny CLIP, seeded."""
    import open_clip
    import torch

    from geosearch.plugins.open_clip import write_local_dir

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    return Path(write_local_dir(TINY_CLIP_CFG, model.state_dict(), tmp_path_factory.mktemp("tiny_clip")))


@pytest.fixture(scope="session")
def tiny_clip_spec(tiny_clip_dir: Path) -> str:
    """Embedder spec of the tiny CLIP: ``load_embedder(tiny_clip_spec)`` loads in well under a second."""
    return f"local-dir:{tiny_clip_dir}"


@pytest.fixture
def tiny_engine(tmp_path, tiny_clip_spec):  # type: ignore[no-untyped-def]
    """An engine with the tiny CLIP and no captioner on an empty store: for ingest and filter tests that
    need real chips and a real store but no real semantics (ingest with ``captions=False``)."""
    from geosearch import load_embedder

    engine = make_engine(tmp_path / "tiny_store", load_embedder(tiny_clip_spec, device="cpu"), None)
    yield engine
    engine.close()
