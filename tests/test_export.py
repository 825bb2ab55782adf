"""`geosearch export`: the caption layer or a search result as GeoPackage, FlatGeobuf and GeoParquet,
opened back with GDAL (pyogrio, and Debian's ogrinfo where installed) and pyarrow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely
from shapely.geometry import box, shape

from geosearch.engine import Engine
from geosearch.errors import InvalidInput
from geosearch.export import ExportQuery, export
from geosearch.schemas import ChipPayload, GeoPoint, SceneInfo, SearchQuery, Window
from geosearch.store import ChipPoint, chip_id

GEOSEARCH = str(Path(sys.executable).with_name("geosearch"))
FIELDS = ["id", "scene", "caption", "datetime", "gsd"]


def fill(engine: Engine) -> None:
    """Two scenes: 6 dated chips near (10, 45), 3 undated chips just east of the antimeridian."""
    rng = np.random.default_rng(1)
    layout = {
        "a" * 32: ("2021-03-04T05:06:07", [(10 + 0.01 * i, 45.0, 10.01 + 0.01 * i, 45.01) for i in range(6)]),
        "b" * 32: (None, [(-180 + 0.01 * i, 0.0, -179.99 + 0.01 * i, 0.01) for i in range(3)]),
    }
    for scene, (when, boxes) in layout.items():
        points = []
        for k, (w, s, e, n) in enumerate(boxes):
            window = Window(col=224 * k, row=0, width=224, height=224)
            payload = ChipPayload(
                scene_id=scene,
                scene_path="/data/x.tif",
                window=window,
                chip_size=224,
                crs="EPSG:4326",
                footprint=shapely.geometry.mapping(box(w, s, e, n)),
                centre=GeoPoint(lon=(w + e) / 2, lat=(s + n) / 2),
                gsd=0.6,
                valid_fraction=1.0,
                caption=f"caption {k}",
                datetime=when,
            )
            vector = rng.normal(size=engine.embedder.dim).astype(np.float32)
            points.append(
                ChipPoint(id=chip_id(scene, window, 224, engine.embedder.model_id), vector=vector, payload=payload)
            )
        engine.store.upsert(points)
        engine.store.put_scene(
            SceneInfo(
                id=scene,
                path="/data/x.tif",
                crs="EPSG:4326",
                width=224,
                height=224,
                chips=len(boxes),
                skipped=0,
                bbox=[0, 0, 0, 0],
                datetime=when,
            )
        )


@pytest.fixture
def engine(tiny_engine: Engine) -> Engine:
    fill(tiny_engine)
    return tiny_engine


def read_ogr(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(read_info, {field: values, "geometry": shapely geometries}) through pyogrio's GDAL."""
    info = pyogrio.read_info(path, layer="chips")
    meta, _, geometry, values = pyogrio.raw.read(path, layer="chips")
    columns = dict(zip(meta["fields"], values, strict=True))
    columns["geometry"] = shapely.from_wkb(geometry)
    return info, columns


def read_parquet(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    columns = table.to_pydict()
    columns["geometry"] = shapely.from_wkb(columns["geometry"])
    return geo, columns


def assert_debian_gdal_reads(path: Path, count: int) -> None:
    """The system GDAL (apt gdal-bin), where installed, opens the file without a warning."""
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo is None:
        return
    run = subprocess.run([ogrinfo, "-so", str(path), "chips"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"Feature Count: {count}" in run.stdout and "Geometry: Polygon" in run.stdout
    assert "Warning" not in run.stderr, run.stderr


@pytest.mark.parametrize(("suffix", "driver"), [(".gpkg", "GPKG"), (".fgb", "FlatGeobuf")])
def test_gdal_formats_round_trip(engine: Engine, tmp_path: Path, suffix: str, driver: str) -> None:
    out = tmp_path / f"chips{suffix}"
    report = export(engine, out)
    assert report.count == 9 and report.format == driver
    info, columns = read_ogr(out)
    assert info["driver"] == driver and info["features"] == 9 and info["geometry_type"] == "Polygon"
    assert info["crs"] == "EPSG:4326"
    assert list(info["fields"]) == FIELDS and info["dtypes"][3].startswith("datetime64")
    by_id = {h.id: h for h in engine.store.browse(limit=100)[0]}
    for i, chip in enumerate(columns["id"]):
        hit = by_id[chip]
        assert columns["caption"][i] == hit.payload.caption and columns["scene"][i] == hit.payload.scene_id
        assert columns["geometry"][i].equals(shape(hit.payload.footprint))
        when = columns["datetime"][i]
        assert (np.isnat(when) and hit.payload.datetime is None) or str(when).startswith("2021-03-04T05:06:07")
    assert_debian_gdal_reads(out, 9)


def test_geoparquet_round_trip_and_validates(engine: Engine, tmp_path: Path) -> None:
    import geoparquet_validator

    out = tmp_path / "chips.parquet"
    assert export(engine, out).count == 9
    geo, columns = read_parquet(out)
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert column["bbox"] == pytest.approx([-180.0, 0.0, 10.06, 45.01])
    assert len(columns["id"]) == 9 and all(columns["caption"])
    assert sum(v is None for v in columns["datetime"]) == 3
    report = geoparquet_validator.check(str(out))
    for conformance_class in ("core", "covering", "distribution"):
        assert geoparquet_validator.conformant(report, conformance_class), geoparquet_validator.failed(report)


def test_bbox_and_search_exports(engine: Engine, tmp_path: Path) -> None:
    # A box across the antimeridian holds exactly the chips whose footprints touch it.
    boxed = export(engine, tmp_path / "east.fgb", ExportQuery(bbox=(179.0, -1.0, -179.985, 1.0)))
    assert boxed.count == 2
    ranked = export(engine, tmp_path / "ranked.gpkg", ExportQuery(q="a field", limit=4))
    info, columns = read_ogr(ranked.path)
    assert info["features"] == 4 and list(info["fields"]) == [*FIELDS, "score", "relevance"]
    scores = list(columns["score"])
    assert scores == sorted(scores, reverse=True)
    best = engine.search(SearchQuery(q="a field", limit=4))
    assert list(columns["id"]) == [h.id for h in best]
    empty = export(engine, tmp_path / "empty.parquet", ExportQuery(bbox=(50.0, 50.0, 51.0, 51.0)))
    assert empty.count == 0 and pq.read_table(empty.path).num_rows == 0


@pytest.mark.parametrize(
    ("name", "query", "message"),
    [
        ("chips.shp", ExportQuery(), "cannot export to '.shp'"),
        ("chips", ExportQuery(), "without extension"),
        ("chips.gpkg", ExportQuery(q="  "), "must not be empty"),
        ("chips.gpkg", ExportQuery(limit=0), "at least 1"),
        ("chips.gpkg", ExportQuery(q="roads", limit=10_001), "at most 10000"),
        ("missing/chips.gpkg", ExportQuery(), "does not exist"),
    ],
)
def test_bad_exports_say_why(engine: Engine, tmp_path: Path, name: str, query: ExportQuery, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        export(engine, tmp_path / name, query)


def test_cli_rejects_a_bad_extension_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [GEOSEARCH, "export", str(tmp_path / "x.kml"), "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert run.stderr.startswith("geosearch: error: cannot export to '.kml'")


# -- the real sample scenes and models -------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".parquet"])
def test_export_the_real_caption_layer(ingested, tmp_path: Path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    total = engine.store.count()
    out = tmp_path / f"captions{suffix}"
    assert export(engine, out).count == total
    if suffix == ".parquet":
        _, columns = read_parquet(out)
    else:
        info, columns = read_ogr(out)
        assert info["features"] == total and info["crs"] == "EPSG:4326" and info["geometry_type"] == "Polygon"
        assert_debian_gdal_reads(out, total)
    assert len(columns["id"]) == total and all(columns["caption"])
    assert all(g.geom_type == "Polygon" and g.is_valid for g in columns["geometry"])


@pytest.mark.slow
def test_cli_export_end_to_end(tmp_path: Path, scenes_dir: Path) -> None:
    env = {**os.environ, "GEOSEARCH_STORE": str(tmp_path / "store")}
    env.pop("QDRANT_URL", None)
    scene = str(scenes_dir / "rasterio" / "cogeo.tif")
    ingest = subprocess.run(
        [GEOSEARCH, "ingest", scene, "--captioner", "nearest-caption", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ingest.returncode == 0, ingest.stderr
    out = tmp_path / "beach.fgb"
    run = subprocess.run(
        [GEOSEARCH, "export", str(out), "--q", "a beach", "--limit", "5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"wrote 5 chips to {out} (FlatGeobuf)"
    info, columns = read_ogr(out)
    assert info["features"] == 5 and "score" in info["fields"] and all(columns["caption"])
    everything = tmp_path / "all.gpkg"
    run = subprocess.run(
        [GEOSEARCH, "export", str(everything), "--bbox", "-180,-90,180,90"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert pyogrio.read_info(everything, layer="chips")["features"] == int(run.stdout.split()[1]) > 5
