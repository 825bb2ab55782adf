"""Ingest end to end on real scenes and the embedded Qdrant engine.

Tests marked slow load the real default models (`ingested`, `fresh_engine`) or ingest many scenes; the
others run the tiny random CLIP (`tiny_engine`), which is all that threading, counting and filtering need.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geosearch.errors import InvalidInput
from geosearch.ingest import IngestOptions, IngestReport, SceneResult, SceneStatus, expand_paths, ingest
from geosearch.schemas import SceneInfo
from geosearch.tilers import TileOptions, open_scene


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


@pytest.mark.slow
def test_sample_scenes_ingest_with_exact_counts(ingested, sample_scenes) -> None:  # type: ignore[no-untyped-def]
    engine, report = ingested
    assert report.ok
    assert [s.status for s in report.scenes] == [SceneStatus.INGESTED] * len(sample_scenes)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_reingest_is_idempotent_and_delete_removes_everything(fresh_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    scene = scenes_dir / "rasterio" / "cogeo.tif"
    engine = fresh_engine
    first = ingest(engine, [scene])
    count = engine.store.count()
    assert count == first.chips > 0

    again = ingest(engine, [scene])
    assert again.scenes[0].status == SceneStatus.ALREADY
    assert engine.store.count() == count

    forced = ingest(engine, [scene], IngestOptions(force=True))
    assert forced.scenes[0].status == SceneStatus.INGESTED
    assert engine.store.count() == count  # same deterministic ids: overwritten, not duplicated

    # Other ingest parameters re-chip the scene and leave no stale chips of the old grid.
    strided = ingest(engine, [scene], IngestOptions(tile=TileOptions(stride=112), captions=False))
    assert strided.scenes[0].status == SceneStatus.INGESTED
    assert engine.store.count() == strided.chips > count

    removed = engine.delete_scene(first.scenes[0].scene_id or "")
    assert removed == strided.chips
    assert engine.store.count() == 0
    assert engine.scenes() == []


def test_failed_scene_does_not_stop_the_others(tmp_path, tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    no_crs = tmp_path / "no_crs.tif"
    with rasterio.open(no_crs, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8") as dst:
        dst.write(np.full((3, 300, 300), 100, dtype=np.uint8))
    good = scenes_dir / "rio-tiler" / "cog_rgb.tif"
    report = ingest(tiny_engine, [broken, no_crs, tmp_path / "missing.tif", good], IngestOptions(captions=False))
    status = {Path(s.path).name: s for s in report.scenes}
    assert not report.ok
    assert status["cog_rgb.tif"].status == SceneStatus.INGESTED and status["cog_rgb.tif"].chips > 0
    for name in ("broken.tif", "no_crs.tif", "missing.tif"):
        assert status[name].status == SceneStatus.FAILED
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


def test_multiscale_ingest_counts_payloads_ids_and_ingest_params(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
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
    assert info is not None and info.ingest_params["scales"] == [1, 4] and info.chips == 29

    # Same ingest parameters: skipped. Forced: the same ids again (deterministic), so overwritten, not duplicated.
    assert ingest(engine, [scene], MULTI).scenes[0].status == SceneStatus.ALREADY
    assert ingest(engine, [scene], replace(MULTI, force=True)).scenes[0].status == SceneStatus.INGESTED
    assert stored_by_scale(engine) == stored

    # Other scales re-chip: back to one scale, the coarse chips are gone and the native ids are kept.
    single = ingest(engine, [scene], IngestOptions(captions=False))
    assert single.scenes[0].status == SceneStatus.INGESTED and single.chips == 25
    assert stored_by_scale(engine) == {1: stored[1]}


def test_search_ranks_across_scales_and_filters_by_gsd(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    from litestar.testing import TestClient

    from geosearch.api import create_app
    from geosearch.schemas import SearchQuery

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
def antimeridian_engine(tmp_path, tiny_engine, scenes_dir):  # type: ignore[no-untyped-def]
    source = scenes_dir / "rasterio" / "cogeo.tif"
    write_scene_at(tmp_path / "west_of_180.tif", source, west=179.9, north=-15.0)
    write_scene_at(tmp_path / "east_of_180.tif", source, west=-179.99, north=-15.0)
    write_scene_at(tmp_path / "elsewhere.tif", source, west=10.0, north=45.0)
    report = ingest(tiny_engine, sorted(tmp_path.glob("*.tif")), IngestOptions(captions=False))
    assert report.ok
    return tiny_engine


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
def test_io_threads_yield_the_cpu_to_the_model(tiny_engine, scenes_dir, io_nice) -> None:  # type: ignore[no-untyped-def]
    """Store writes (and reads) run at `io_nice` so the model's threads win the cores; the caller's
    thread keeps its priority."""
    seen: list[int] = []

    def progress(done: int, scenes: int, total: int) -> None:  # called from the writer thread
        if threading.current_thread() is not threading.main_thread():
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    base = os.getpriority(os.PRIO_PROCESS, 0)
    report = ingest(
        tiny_engine, [scenes_dir / "rasterio" / "cogeo.tif"], IngestOptions(captions=False, io_nice=io_nice), progress
    )
    assert report.ok and seen
    assert set(seen) == {base if io_nice is None else max(base, io_nice)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


@pytest.mark.parametrize("interval", [None, 0.0005])
def test_gil_switch_interval_only_while_ingesting(tiny_engine, scenes_dir, interval) -> None:  # type: ignore[no-untyped-def]
    """The short GIL switch interval holds while the stages run and the caller's setting comes back."""
    seen: list[float] = []
    before = sys.getswitchinterval()
    report = ingest(
        tiny_engine,
        [scenes_dir / "rasterio" / "cogeo.tif"],
        IngestOptions(captions=False, gil_switch_interval=interval),
        lambda done, scenes, total: seen.append(sys.getswitchinterval()),
    )
    assert report.ok and seen
    assert set(seen) == {before if interval is None else interval}
    assert sys.getswitchinterval() == before


def test_report_statuses_are_the_scene_status_enum(tmp_path, tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """Each scene ends INGESTED, ALREADY or FAILED (never PENDING); the members equal their old strings."""
    good = scenes_dir / "rio-tiler" / "cog_rgb.tif"
    options = IngestOptions(captions=False)
    first = ingest(tiny_engine, [tmp_path / "missing.tif", good], options)
    assert [s.status for s in first.scenes] == [SceneStatus.FAILED, SceneStatus.INGESTED]
    assert all(isinstance(s.status, SceneStatus) for s in first.scenes)
    again = ingest(tiny_engine, [good], options)
    assert [s.status for s in again.scenes] == [SceneStatus.ALREADY]
    assert again.scenes[0].chips == first.scenes[1].chips > 0
    assert [first.count(s) for s in (SceneStatus.INGESTED, SceneStatus.FAILED, SceneStatus.ALREADY)] == [1, 1, 0]
    assert not first.ok and again.ok
    assert {m.value for m in SceneStatus} == {"pending", "ingested", "already", "failed"}
    assert SceneStatus.FAILED == "failed" and f"{SceneStatus.ALREADY}" == "already"  # prints as before


def test_report_totals() -> None:
    scenes = [
        SceneResult(path="a.tif", status=SceneStatus.INGESTED, chips=5, skipped=2),
        SceneResult(path="b.tif", status=SceneStatus.ALREADY, chips=3),
    ]
    report = IngestReport(scenes=scenes, seconds=1.0, stage_seconds={})
    assert report.ok and (report.chips, report.skipped) == (8, 2)
    failed = IngestReport(
        scenes=[*scenes, SceneResult("c.tif", SceneStatus.FAILED, error="bad")], seconds=1.0, stage_seconds={}
    )
    assert not failed.ok and failed.count(SceneStatus.FAILED) == 1


def test_scene_record_from_before_ingest_params_is_reingested_once(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """A stored record with the old `settings` key decodes (the key is ignored) with empty ingest_params,
    so its scene is ingested again, over the same chip ids, and then skipped."""
    record = {"id": "s", "path": "p", "crs": "EPSG:4326", "width": 1, "height": 1, "chips": 1, "skipped": 0}
    old = msgspec.convert({**record, "bbox": [0, 0, 1, 1], "settings": {"chip_size": 224}}, SceneInfo)
    assert old.ingest_params == {}
    scene = scenes_dir / "rio-tiler" / "cog_rgb.tif"
    options = IngestOptions(captions=False)
    first = ingest(tiny_engine, [scene], options)
    scene_id = first.scenes[0].scene_id or ""
    info = tiny_engine.store.get_scene(scene_id)
    assert info is not None and info.ingest_params["captioner"] is None
    tiny_engine.store.put_scene(msgspec.structs.replace(info, ingest_params={}))  # as an old record reads
    redo = ingest(tiny_engine, [scene], options)
    assert redo.scenes[0].status == SceneStatus.INGESTED and redo.chips == first.chips
    assert tiny_engine.store.count() == first.chips
    assert ingest(tiny_engine, [scene], options).scenes[0].status == SceneStatus.ALREADY


def test_expand_paths_folders_globs_missing_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.TIF", "sub/a.tif", "sub/c.jp2", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = expand_paths([tmp_path, str(tmp_path / "sub" / "*.tif"), tmp_path / "missing.tif"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["b.TIF", "sub/a.tif", "sub/c.jp2", "missing.tif"]
    with pytest.raises(InvalidInput):
        expand_paths([tmp_path / "empty-*.tif"])


@pytest.mark.slow
def test_box_limited_ingest_is_not_taken_for_the_whole_scene(tiny_engine, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    """`--bbox` is part of a scene's ingest parameters: the whole scene after a box-limited ingest (or the
    other way round) is chipped again, never reported as already ingested."""
    scene = scenes_dir / "rasterio" / "cogeo.tif"
    with open_scene(scene, TileOptions()) as opened:
        west, south, east, north = opened.bbox
    box = (west, south, west + (east - west) / 4, south + (north - south) / 4)
    options = IngestOptions(captions=False)
    (limited,) = expand_paths([scene], area=box)
    part = ingest(tiny_engine, [limited], options)
    assert part.scenes[0].status == SceneStatus.INGESTED and part.chips > 0
    again = ingest(tiny_engine, [limited], options)
    assert again.scenes[0].status == SceneStatus.ALREADY
    whole = ingest(tiny_engine, [scene], options)
    assert whole.scenes[0].status == SceneStatus.INGESTED and whole.chips > part.chips
    assert tiny_engine.store.count() == whole.chips
