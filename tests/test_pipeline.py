"""Ingest end to end on real scenes and the embedded Qdrant engine."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from geosearch.tilers import TileOptions, open_scene
from rasterio.transform import from_origin

from geosearch.pipeline import IngestOptions, ingest


def expected_chips(path: Path, options: TileOptions) -> tuple[int, int]:
    """(chips kept, chips skipped) computed by reading every chip through the tiler directly."""
    kept = skipped = 0
    with open_scene(path, options) as scene:
        for spec in scene.windows():
            if scene.read(spec).valid_fraction >= options.min_valid:
                kept += 1
            else:
                skipped += 1
    return kept, skipped


def test_sample_scenes_ingest_with_exact_counts(ingested, sample_scenes) -> None:  # type: ignore[no-untyped-def]
    engine, report = ingested
    assert report.ok
    assert [s.status for s in report.scenes] == ["ingested"] * len(sample_scenes)
    for result, path in zip(report.scenes, sample_scenes, strict=True):
        assert (result.chips, result.skipped) == expected_chips(path, TileOptions())
        assert engine.store.count(scene=result.scene_id) == result.chips
    assert engine.store.count() == report.chips
    listed = {s.id: s for s in engine.scenes()}
    assert set(listed) == {s.scene_id for s in report.scenes}
    # Every stored chip got a caption from the captioner, and a footprint in WGS84.
    hits, _ = engine.store.browse(limit=1000)
    assert len(hits) == report.chips
    assert all(h.payload.caption for h in hits)
    assert all(h.payload.footprint["type"] == "Polygon" for h in hits)


def test_every_shared_scene_ingests(fresh_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """All shared scenes (UTM N/S, 3857, 4326; uint8/uint16; nodata, alpha, mask) go in, counted exactly."""
    paths = sorted(scenes_dir.rglob("*.tif"))
    report = ingest(fresh_engine, paths, IngestOptions(captions=False))
    assert report.ok, [(s.path, s.error) for s in report.scenes if s.error]
    assert len(report.scenes) == len(paths)
    by_path = {Path(s.path).resolve(): s for s in report.scenes}
    for path in paths:
        result = by_path[path.resolve()]
        assert (result.chips, result.skipped) == expected_chips(path, TileOptions()), path.name
    assert fresh_engine.store.count() == report.chips > 0


def test_reingest_is_idempotent_and_delete_removes_everything(fresh_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    scene = scenes_dir / "rasterio" / "cogeo.tif"
    engine = fresh_engine
    first = ingest(engine, [scene])
    count = engine.store.count()
    assert count == first.chips > 0

    again = ingest(engine, [scene])
    assert again.scenes[0].status == "already"
    assert engine.store.count() == count

    forced = ingest(engine, [scene], IngestOptions(force=True))
    assert forced.scenes[0].status == "ingested"
    assert engine.store.count() == count  # same deterministic ids: overwritten, not duplicated

    # Other settings re-chip the scene and leave no stale chips of the old grid.
    strided = ingest(engine, [scene], IngestOptions(tile=TileOptions(stride=112), captions=False))
    assert strided.scenes[0].status == "ingested"
    assert engine.store.count() == strided.chips > count

    removed = engine.delete_scene(first.scenes[0].scene_id or "")
    assert removed == strided.chips
    assert engine.store.count() == 0
    assert engine.scenes() == []


def test_failed_scene_does_not_stop_the_others(tmp_path, fresh_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    no_crs = tmp_path / "no_crs.tif"
    with rasterio.open(no_crs, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8") as dst:
        dst.write(np.full((3, 300, 300), 100, dtype=np.uint8))
    good = scenes_dir / "rio-tiler" / "cog_rgb.tif"
    report = ingest(fresh_engine, [broken, no_crs, tmp_path / "missing.tif", good], IngestOptions(captions=False))
    status = {Path(s.path).name: s for s in report.scenes}
    assert not report.ok
    assert status["cog_rgb.tif"].status == "ingested" and status["cog_rgb.tif"].chips > 0
    for name in ("broken.tif", "no_crs.tif", "missing.tif"):
        assert status[name].status == "failed"
        assert status[name].error
    assert "CRS" in (status["no_crs.tif"].error or "") or "georeferenc" in (status["no_crs.tif"].error or "")


MULTI = IngestOptions(tile=TileOptions(scales=(1, 4)), captions=False)


def stored_by_scale(engine) -> dict[int, dict[str, float]]:  # type: ignore[no-untyped-def]
    """Every stored chip as {scale: {id: gsd}}."""
    hits, token = engine.store.browse(limit=1000)
    assert token is None
    out: dict[int, dict[str, float]] = {}
    for h in hits:
        out.setdefault(h.payload.scale, {})[h.id] = h.payload.gsd
    return out


def test_multiscale_ingest_counts_payloads_ids_and_settings(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """cogeo.tif (1024², 0.597 m) at scales 1,4: 25 + 4 chips in one pass; scale 4 is 4x the gsd."""
    engine = tiny_engine
    scene = scenes_dir / "rasterio" / "cogeo.tif"
    report = ingest(engine, [scene], MULTI)
    result = report.scenes[0]
    assert (result.chips, result.skipped) == expected_chips(scene, MULTI.tile) == (29, 0)
    stored = stored_by_scale(engine)
    assert {scale: len(ids) for scale, ids in stored.items()} == {1: 25, 4: 4}
    assert engine.store.count() == 29  # distinct ids: no chip of one scale overwrote another's
    with open_scene(scene) as plain:
        native = plain.native_gsd
    for scale, ids in stored.items():
        assert all(gsd == pytest.approx(native * scale, rel=1e-9) for gsd in ids.values())
    info = engine.store.get_scene(result.scene_id or "")
    assert info is not None and info.settings["scales"] == [1, 4] and info.chips == 29

    # Same settings: skipped. Forced: the same ids again (deterministic), so overwritten, not duplicated.
    assert ingest(engine, [scene], MULTI).scenes[0].status == "already"
    assert ingest(engine, [scene], replace(MULTI, force=True)).scenes[0].status == "ingested"
    assert stored_by_scale(engine) == stored

    # Other scales re-chip: back to one scale, the coarse chips are gone and the native ids are kept.
    single = ingest(engine, [scene], IngestOptions(captions=False))
    assert single.scenes[0].status == "ingested" and single.chips == 25
    assert stored_by_scale(engine) == {1: stored[1]}


def test_search_ranks_across_scales_and_filters_by_gsd(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    from geosearch.schemas import SearchQuery
    from litestar.testing import TestClient

    from geosearch.api import create_app

    engine = tiny_engine
    assert ingest(engine, [scenes_dir / "rasterio" / "cogeo.tif"], MULTI).ok
    hits = engine.search(SearchQuery(q="a lake", limit=100))
    assert len(hits) == 29 and {h.payload.scale for h in hits} == {1, 4}  # one collection, one ranking
    scores = [h.score or 0.0 for h in hits]
    assert scores == sorted(scores, reverse=True)
    coarse = engine.search(SearchQuery(q="a lake", limit=100, gsd=(1.0, None)))
    assert len(coarse) == 4 and all(h.payload.scale == 4 and h.payload.gsd >= 1.0 for h in coarse)
    # The ranking within the range is the full ranking restricted to it.
    assert [h.id for h in coarse] == [h.id for h in hits if h.payload.scale == 4]

    with TestClient(create_app(engine)) as client:
        got = client.get("/search", params={"q": "a lake", "gsd": "../1", "limit": 100})
        posted = client.post("/search", json={"q": "a lake", "gsd": "2/2.5", "limit": 100})
        bad = client.get("/search", params={"q": "a lake", "gsd": "2/1"})
    assert got.status_code == 200 and posted.status_code == 200
    fine = [f["properties"] for f in got.json()["features"]]
    assert len(fine) == 25 and all(p["scale"] == 1 and p["gsd"] <= 1 for p in fine)
    assert [f["properties"]["scale"] for f in posted.json()["features"]] == [4] * 4
    assert bad.status_code == 400 and "gsd range starts above its end" in bad.json()["detail"]


def write_scene_at(path: Path, source: Path, west: float, north: float, res: float = 0.0002) -> None:
    """A real aerial image re-georeferenced at (west, north) in EPSG:4326."""
    with rasterio.open(source) as src:
        pixels = src.read(window=((0, 448), (0, 448)))
    profile = {
        "driver": "GTiff",
        "width": 448,
        "height": 448,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:4326",
        "transform": from_origin(west, north, res, res),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)


@pytest.fixture
def antimeridian_engine(tmp_path, fresh_engine, scenes_dir):  # type: ignore[no-untyped-def]
    source = scenes_dir / "rasterio" / "cogeo.tif"
    write_scene_at(tmp_path / "west_of_180.tif", source, west=179.9, north=-15.0)
    write_scene_at(tmp_path / "east_of_180.tif", source, west=-179.99, north=-15.0)
    write_scene_at(tmp_path / "elsewhere.tif", source, west=10.0, north=45.0)
    report = ingest(fresh_engine, sorted(tmp_path.glob("*.tif")), IngestOptions(captions=False))
    assert report.ok
    return fresh_engine


def test_antimeridian_bbox(antimeridian_engine) -> None:  # type: ignore[no-untyped-def]
    from geosearch.schemas import SearchQuery

    engine = antimeridian_engine
    names = {s.id: Path(s.path).name for s in engine.scenes()}
    hits = engine.search(SearchQuery(q="trees", bbox=(179.8, -20.0, -179.8, -10.0), limit=1000))
    assert {names[h.payload.scene_id] for h in hits} == {"west_of_180.tif", "east_of_180.tif"}
    assert len(hits) == engine.store.count() - engine.store.count(
        scene=next(k for k, v in names.items() if v == "elsewhere.tif")
    )
    plain = engine.search(SearchQuery(q="trees", bbox=(-180.0, -20.0, -179.8, -10.0), limit=1000))
    assert {names[h.payload.scene_id] for h in plain} == {"east_of_180.tif"}
    # The same over HTTP, as a STAC-style bbox with west > east.
    from litestar.testing import TestClient

    from geosearch.api import create_app

    with TestClient(create_app(engine)) as client:
        response = client.get("/search", params={"q": "trees", "bbox": "179.8,-20,-179.8,-10", "limit": 1000})
    assert response.status_code == 200
    features = response.json()["features"]
    assert sorted(f["id"] for f in features) == sorted(h.id for h in hits)
    assert {names[f["properties"]["scene"]] for f in features} == {"west_of_180.tif", "east_of_180.tif"}


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="per-thread niceness is a Linux feature")
@pytest.mark.parametrize("io_nice", [None, 7])
def test_io_threads_yield_the_cpu_to_the_model(fresh_engine, scenes_dir, io_nice) -> None:  # type: ignore[no-untyped-def]
    """Store writes (and reads) run at `io_nice` so the model's threads win the cores; the caller's
    thread keeps its priority."""
    seen: list[int] = []

    def progress(done: int, scenes: int, total: int) -> None:  # called from the writer thread
        if threading.current_thread() is not threading.main_thread():
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    base = os.getpriority(os.PRIO_PROCESS, 0)
    report = ingest(
        fresh_engine, [scenes_dir / "rasterio" / "cogeo.tif"], IngestOptions(captions=False, io_nice=io_nice), progress
    )
    assert report.ok and seen
    assert set(seen) == {base if io_nice is None else max(base, io_nice)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


@pytest.mark.parametrize("interval", [None, 0.0005])
def test_gil_switch_interval_only_while_ingesting(fresh_engine, scenes_dir, interval) -> None:  # type: ignore[no-untyped-def]
    """The short GIL switch interval holds while the stages run and the caller's setting comes back."""
    seen: list[float] = []
    before = sys.getswitchinterval()
    report = ingest(
        fresh_engine,
        [scenes_dir / "rasterio" / "cogeo.tif"],
        IngestOptions(captions=False, gil_switch_interval=interval),
        lambda done, scenes, total: seen.append(sys.getswitchinterval()),
    )
    assert report.ok and seen
    assert set(seen) == {before if interval is None else interval}
    assert sys.getswitchinterval() == before
