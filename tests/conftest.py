"""Shared fixtures. Test data is read from ../shared/data beside the project checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENES = SHARED / "scenes"
UCM = SHARED / "ucm-captions"


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
    return load_captioner("nearest-caption")


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
    from geosearch.pipeline import ingest

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
