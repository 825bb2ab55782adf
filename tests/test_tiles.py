"""Web map tiles through Litestar's test client: vector tiles of chip footprints, scene imagery tiles, TileJSON.

Geometry and imagery run on the tiny random CLIP (no captions); captions and query tiles on the real
default models (`ingested`, slow). Expected values are computed independently of `geosearch.maptiles`:
tile bounds and Web Mercator coordinates with morecantile / pyproj, scene pixels with rasterio, chips
with `render_chip`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import morecantile
import numpy as np
import pytest
import rasterio
from litestar import Litestar
from litestar.testing import TestClient
from PIL import Image
from pyproj import Transformer
from shapely.geometry import box, shape

from geosearch.api import GeoSearchMount, create_app
from geosearch.engine import Engine
from geosearch.ingest import IngestOptions, ingest
from geosearch.schemas import CaptionsQuery, SceneInfo, SearchQuery
from geosearch.store import Hit, open_store
from geosearch.tilers import render_chip

TMS = morecantile.tms.get("WebMercatorQuad")
EXTENT = 4096
MVT = "application/vnd.mapbox-vector-tile"
SCENE_FILES = {
    "cogeo": "rasterio/cogeo.tif",  # EPSG:3857, internal mask
    "landsat": "rasterio/RGB.byte.tif",  # UTM 18N, nodata 0
    "drone": "rio-tiler/pix4d_alpha_nodata.tif",  # UTM 50S, alpha band
    "geographic": "rio-tiler/mosaic_cog3.tif",  # EPSG:4326, uint16 (stretched), shorter than a chip
}


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_clip_spec: str, tmp_path_factory: pytest.TempPathFactory, scenes_dir: Path) -> Iterator[Engine]:
    """The tiny CLIP's engine (no captioner) with the four sample scenes, shared by the fast tests."""
    from geosearch import load_embedder

    embedder = load_embedder(tiny_clip_spec, device="cpu")
    store = open_store(tmp_path_factory.mktemp("tiles_store"), model_id=embedder.model_id, dim=embedder.dim)
    engine = Engine(embedder, store)
    report = ingest(engine, [scenes_dir / name for name in SCENE_FILES.values()], IngestOptions(captions=False))
    assert report.ok, [s.error for s in report.scenes]
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def client(tiny: Engine) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(tiny)) as test_client:
        yield test_client


def scene(engine: Engine, key: str) -> SceneInfo:
    return next(s for s in engine.scenes() if s.path.endswith(SCENE_FILES[key]))


def all_chips(engine: Engine, scene_id: str | None = None) -> list[Hit]:
    return engine.page_chips(CaptionsQuery(scene=scene_id, limit=1000))[0]


# -- helpers computed without geosearch.maptiles ---------------------------------------------------------
def decode(content: bytes) -> list[dict[str, Any]]:
    """Features of layer "chips" in raw tile coordinates (0..4096, y down); [] for the empty tile."""
    if not content:
        return []
    layers = mapbox_vector_tile.decode(content, default_options={"y_coord_down": True})
    assert set(layers) == {"chips"}
    assert layers["chips"]["extent"] == EXTENT
    return list(layers["chips"]["features"])


def tile_units(lon: float, lat: float, tile: morecantile.Tile) -> tuple[float, float]:
    xy = TMS.xy(lon, lat)
    b = TMS.xy_bounds(tile)
    return (xy.x - b.left) / (b.right - b.left) * EXTENT, (b.top - xy.y) / (b.top - b.bottom) * EXTENT


def vertices(geometry: dict[str, Any]) -> np.ndarray[Any, Any]:
    coords = geometry["coordinates"]
    if geometry["type"] == "Point":
        return np.array([coords], dtype=float)
    if geometry["type"] == "Polygon":
        return np.array([p for ring in coords for p in ring], dtype=float)
    return np.array([p for poly in coords for ring in poly for p in ring], dtype=float)


def intersecting(chips: list[Hit], tile: morecantile.Tile) -> set[str]:
    area = box(*TMS.bounds(tile))
    return {h.id for h in chips if shape(h.payload.footprint).intersects(area)}


def corners(hit: Hit) -> list[tuple[float, float]]:
    """The 4 window corners of a footprint ring (8 points per edge, see tilers.geometry)."""
    ring = hit.payload.footprint["coordinates"][0]  # type: ignore[index]
    return [tuple(ring[i]) for i in (0, 8, 16, 24)]  # type: ignore[misc]


def png(content: bytes) -> np.ndarray[Any, Any]:
    image = Image.open(io.BytesIO(content))
    assert image.mode == "RGBA" and image.size == (256, 256)
    return np.asarray(image)


def mosaic(client: TestClient[Any], scene_id: str, bbox: tuple[float, float, float, float], z: int) -> Any:
    """The scene's tiles at zoom z covering bbox as one RGBA array, its upper-left corner (EPSG:3857) and pixel size."""
    tiles = list(TMS.tiles(*bbox, zooms=[z]))
    x0, y0 = min(t.x for t in tiles), min(t.y for t in tiles)
    width, height = max(t.x for t in tiles) - x0 + 1, max(t.y for t in tiles) - y0 + 1
    out = np.zeros((height * 256, width * 256, 4), dtype=np.uint8)
    for t in tiles:
        response = client.get(f"/scenes/{scene_id}/tiles/{z}/{t.x}/{t.y}.png")
        assert response.status_code in (200, 404), response.text
        if response.status_code == 200:
            out[(t.y - y0) * 256 : (t.y - y0 + 1) * 256, (t.x - x0) * 256 : (t.x - x0 + 1) * 256] = png(
                response.content
            )
    ul = TMS.xy_bounds(morecantile.Tile(x0, y0, z))
    return out, (ul.left, ul.top), (ul.right - ul.left) / 256


def pixel_to_crs(transform: Any, cols: Any, rows: Any) -> tuple[Any, Any]:
    """Apply an affine transform to (col, row) arrays (or the inverse transform to x, y)."""
    return transform.c + transform.a * cols + transform.b * rows, transform.f + transform.d * cols + transform.e * rows


def chip_pixel_centres_3857(hit: Hit) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Web Mercator position of every chip pixel's centre, from the scene's own geotransform."""
    p = hit.payload
    with rasterio.open(p.scene_path) as ds:
        transform, crs = ds.transform, ds.crs
    k = np.arange(p.chip_size) + 0.5
    cols, rows = np.meshgrid(
        p.window.col + k * p.window.width / p.chip_size, p.window.row + k * p.window.height / p.chip_size
    )
    xs, ys = pixel_to_crs(transform, cols, rows)
    mx, my = Transformer.from_crs(crs, "EPSG:3857", always_xy=True).transform(xs, ys)
    return np.asarray(mx), np.asarray(my)


# -- vector tiles: geometry ---------------------------------------------------------------------------
def sample_tiles(engine: Engine) -> list[morecantile.Tile]:
    """Per scene: tiles at its north-west corner and at a chip centre, from whole-scene to chip zooms."""
    tiles = [morecantile.Tile(0, 0, 0)]
    for info in engine.scenes():
        chip = all_chips(engine, info.id)[len(all_chips(engine, info.id)) // 2]
        for z in (4, 8, 12, 15, 17):
            tiles.append(TMS.tile(info.bbox[0] + 1e-9, info.bbox[3] - 1e-9, z))
            tiles.append(TMS.tile(chip.payload.centre.lon, chip.payload.centre.lat, z))
    return tiles


def test_vector_tiles_hold_exactly_the_chips_whose_footprints_intersect(client, tiny) -> None:  # type: ignore[no-untyped-def]
    chips = all_chips(tiny)
    assert len(chips) > 40
    nonempty = 0
    for tile in sample_tiles(tiny):
        response = client.get(f"/tiles/{tile.z}/{tile.x}/{tile.y}.mvt")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(MVT)
        features = decode(response.content)
        ids = [f["properties"]["id"] for f in features]
        assert len(ids) == len(set(ids))
        expected = intersecting(chips, tile)
        assert set(ids) == expected, tile
        store_query = tiny.page_chips(CaptionsQuery(bbox=tuple(TMS.bounds(tile)), limit=1000))[0]
        assert set(ids) == {h.id for h in store_query}
        nonempty += bool(ids)
        by_id = {h.id: h for h in chips}
        for f in features:
            p = by_id[f["properties"]["id"]].payload
            assert f["properties"]["scene"] == p.scene_id
            assert f["properties"]["gsd"] == pytest.approx(p.gsd)
            assert "caption" not in f["properties"]  # ingested without captions: absent, MVT has no null
            assert "score" not in f["properties"] and "rank" not in f["properties"]
            pts = vertices(f["geometry"])
            assert (pts >= -64).all() and (pts <= EXTENT + 64).all()
    assert nonempty > 10


@pytest.mark.parametrize("key", ["cogeo", "landsat", "drone", "geographic"])
def test_vector_tile_geometry_is_in_place(client, tiny, key: str) -> None:  # type: ignore[no-untyped-def]
    """Each window corner of a chip lies on a vertex of its feature, at the tile coordinates morecantile gives."""
    info = scene(tiny, key)
    hit = all_chips(tiny, info.id)[0]
    width_m = abs(TMS.xy(*corners(hit)[0]).x - TMS.xy(*corners(hit)[2]).x)
    z = int(np.floor(np.log2(2 * 20037508.34 / (2 * width_m))))  # tiles about twice the chip's width
    checked = 0
    for lon, lat in corners(hit):
        tile = TMS.tile(lon, lat, z)
        features = decode(client.get(f"/tiles/{z}/{tile.x}/{tile.y}.mvt").content)
        feature = next(f for f in features if f["properties"]["id"] == hit.id)
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        u, v = tile_units(lon, lat, tile)
        assert 0 <= u <= EXTENT and 0 <= v <= EXTENT
        distance = np.hypot(*(vertices(feature["geometry"]) - [u, v]).T).min()
        assert distance <= 1.0, (key, z, (u, v))
        checked += 1
    assert checked == 4


def test_low_zoom_footprints_become_points(client, tiny) -> None:  # type: ignore[no-untyped-def]
    features = decode(client.get("/tiles/0/0/0.mvt").content)
    assert {f["properties"]["id"] for f in features} == {h.id for h in all_chips(tiny)}
    small = {scene(tiny, "cogeo").id, scene(tiny, "drone").id}  # chips of 134 m and 79 m: far below one unit
    assert {f["geometry"]["type"] for f in features if f["properties"]["scene"] in small} == {"Point"}
    big = [f for f in features if f["properties"]["scene"] == scene(tiny, "geographic").id]  # 1.7° chips
    assert big and {f["geometry"]["type"] for f in big} == {"Polygon"}
    hit = all_chips(tiny, scene(tiny, "cogeo").id)[0]
    point = next(f for f in features if f["properties"]["id"] == hit.id)["geometry"]["coordinates"]
    u, v = tile_units(hit.payload.centre.lon, hit.payload.centre.lat, morecantile.Tile(0, 0, 0))
    assert abs(point[0] - u) <= 1 and abs(point[1] - v) <= 1


def test_footprint_across_the_antimeridian_lands_on_both_sides() -> None:
    """A footprint unwrapped past 180° (see tilers.geometry) is drawn in the tiles on either side of it."""
    from geosearch.maptiles import encode_chips
    from geosearch.schemas import ChipPayload, GeoPoint, Window

    ring = [[179.5, -10.5], [180.5, -10.5], [180.5, -9.5], [179.5, -9.5], [179.5, -10.5]]
    payload = ChipPayload(
        scene_id="s",
        scene_path="/nowhere.tif",
        window=Window(col=0, row=0, width=224, height=224),
        chip_size=224,
        crs="EPSG:4326",
        footprint={"type": "Polygon", "coordinates": [ring]},
        centre=GeoPoint(lon=-180.0, lat=-10.0),
        gsd=500.0,
        valid_fraction=1.0,
    )
    hit = Hit(id="00000000-0000-0000-0000-000000000001", score=None, payload=payload)
    east, west = TMS.tile(179.9, -10.0, 6), TMS.tile(-179.9, -10.0, 6)
    assert (east.x, west.x) == (63, 0)
    for tile, inside_lon in ((east, 179.5), (west, -179.5)):
        (feature,) = decode(encode_chips([hit], tile))
        u, v = tile_units(inside_lon, -10.5, tile)
        assert np.hypot(*(vertices(feature["geometry"]) - [u, v]).T).min() <= 1.0
        assert (vertices(feature["geometry"])[:, 0] >= -64).all() and (
            vertices(feature["geometry"])[:, 0] <= 4160
        ).all()


def test_openapi_lists_the_tile_routes(client) -> None:  # type: ignore[no-untyped-def]
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/tiles/{z}/{x}/{y_file}", "/tiles/tilejson.json", "/scenes/{scene_id}/tilejson.json"} <= set(paths)


def test_empty_tile_is_an_empty_mvt(client) -> None:  # type: ignore[no-untyped-def]
    tile = TMS.tile(-150.0, -40.0, 10)  # South Pacific: no scene there
    response = client.get(f"/tiles/{tile.z}/{tile.x}/{tile.y}.mvt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(MVT)
    assert response.content == b""
    assert mapbox_vector_tile.decode(response.content) == {}


def test_limit_caps_features_and_is_validated(client, tiny) -> None:  # type: ignore[no-untyped-def]
    assert len(decode(client.get("/tiles/0/0/0.mvt", params={"limit": 3}).content)) == 3
    for bad in (0, -1, 10001):
        response = client.get("/tiles/0/0/0.mvt", params={"limit": bad})
        assert response.status_code == 400, bad
        assert "limit" in response.json()["detail"]
    assert client.get("/tiles/0/0/0.mvt", params={"limit": "many"}).status_code == 400


@pytest.mark.parametrize(
    ("url", "status", "reason"),
    [
        ("/tiles/1/2/0.mvt", 400, "outside zoom 1"),
        ("/tiles/1/0/2.mvt", 400, "outside zoom 1"),
        ("/tiles/25/0/0.mvt", 400, "zoom z=25"),
        ("/tiles/a/0/0.mvt", 400, "tile z"),
        ("/tiles/3/-1/0.mvt", 400, "tile x"),
        ("/tiles/3/0/1e2.mvt", 400, "tile y"),
        ("/tiles/3/0/0.pbf", 404, ".mvt"),
        ("/tiles/3/0/0", 404, ".mvt"),
        ("/scenes/nope/tiles/0/0/0.png", 404, "no scene"),
        ("/scenes/nope/tilejson.json", 404, "no scene"),
    ],
)
def test_bad_tile_addresses_are_4xx_with_a_reason(client, url: str, status: int, reason: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get(url)
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]


def test_bad_scene_tile_address_is_4xx(client, tiny) -> None:  # type: ignore[no-untyped-def]
    scene_id = scene(tiny, "cogeo").id
    assert client.get(f"/scenes/{scene_id}/tiles/30/0/0.png").status_code == 400
    assert client.get(f"/scenes/{scene_id}/tiles/2/9/0.png").status_code == 400
    assert client.get(f"/scenes/{scene_id}/tiles/2/0/0.jpg").status_code == 404


# -- TileJSON -----------------------------------------------------------------------------------------
def assert_tilejson(body: dict[str, Any], base: str, suffix: str) -> None:
    assert body["tilejson"] == "3.0.0"
    assert body["scheme"] == "xyz"
    assert len(body["tiles"]) == 1 and body["tiles"][0].startswith(base) and suffix in body["tiles"][0]
    assert "{z}/{x}/{y}" in body["tiles"][0]
    assert 0 <= body["minzoom"] <= body["maxzoom"] <= 24
    west, south, east, north = body["bounds"]
    assert -180 <= west < east <= 180 and -85.06 <= south < north <= 85.06
    assert None not in body.values()


def test_chips_tilejson(client, tiny) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/tiles/tilejson.json").json()
    assert_tilejson(body, "http://testserver.local/tiles/", ".mvt")
    assert body["tiles"][0] == "http://testserver.local/tiles/{z}/{x}/{y}.mvt"
    (layer,) = body["vector_layers"]
    assert layer["id"] == "chips"
    assert set(layer["fields"]) == {"id", "scene", "caption", "gsd", "datetime"}
    assert all(isinstance(v, str) for v in layer["fields"].values())
    assert layer["minzoom"] == body["minzoom"] and layer["maxzoom"] == body["maxzoom"]
    # Bounds hold every scene; maxzoom: tiles a few of the finest chips (cogeo's 134 m, the drone's 79 m) wide.
    outer = box(*body["bounds"])
    assert all(outer.buffer(1e-9).contains(box(*s.bbox)) for s in tiny.scenes())
    assert 14 <= body["maxzoom"] <= 18

    query = client.get("/tiles/tilejson.json", params={"q": " green trees ", "limit": 50}).json()
    assert query["tiles"][0] == "http://testserver.local/tiles/{z}/{x}/{y}.mvt?q=green+trees&limit=50"
    assert {"score", "relevance", "rank"} <= set(query["vector_layers"][0]["fields"])
    assert client.get("/tiles/tilejson.json", params={"limit": 0}).status_code == 400


def test_tilejson_urls_follow_the_mount_path(tiny) -> None:  # type: ignore[no-untyped-def]
    app = Litestar(plugins=[GeoSearchMount(tiny, path="/geo")])
    with TestClient(app) as mounted:
        body = mounted.get("/geo/tiles/tilejson.json").json()
        assert body["tiles"] == ["http://testserver.local/geo/tiles/{z}/{x}/{y}.mvt"]
        scene_id = scene(tiny, "cogeo").id
        imagery = mounted.get(f"/geo/scenes/{scene_id}/tilejson.json").json()
        assert imagery["tiles"] == [f"http://testserver.local/geo/scenes/{scene_id}/tiles/{{z}}/{{x}}/{{y}}.png"]
        assert mounted.get("/geo/tiles/0/0/0.mvt").content


@pytest.mark.parametrize(("key", "native_zoom"), [("cogeo", 18), ("landsat", 9), ("drone", 19), ("geographic", 7)])
def test_scene_tilejson(client, tiny, key: str, native_zoom: int) -> None:  # type: ignore[no-untyped-def]
    info = scene(tiny, key)
    body = client.get(f"/scenes/{info.id}/tilejson.json").json()
    assert_tilejson(body, f"http://testserver.local/scenes/{info.id}/tiles/", ".png")
    assert body["bounds"] == pytest.approx(info.bbox)
    assert body["maxzoom"] == native_zoom  # the zoom whose pixel size is closest to the native resolution
    assert body["minzoom"] < body["maxzoom"]
    assert "vector_layers" not in body


# -- imagery tiles ------------------------------------------------------------------------------------
MATCH = [
    # scene, zooms above its native one, mean abs difference, correlation (uint8 RGB levels)
    ("cogeo", 0, 0.5, 0.999),  # EPSG:3857 on the z18 grid: the very same pixels
    ("landsat", 0, 6.0, 0.93),
    ("drone", 0, 9.0, 0.92),
    ("geographic", 0, 22.0, 0.85),  # 600 x 1200 m pixels against 850 m tile pixels
    ("cogeo", 2, 2.0, 0.99),  # finer tiles: the difference is resampling only and shrinks
    ("landsat", 2, 2.0, 0.99),
    ("drone", 2, 3.0, 0.99),
    ("geographic", 2, 7.0, 0.98),
]


@pytest.mark.parametrize(("key", "above", "max_mad", "min_corr"), MATCH)
def test_scene_tile_matches_the_chip_as_ingested(
    client, tiny, key: str, above: int, max_mad: float, min_corr: float
) -> None:  # type: ignore[no-untyped-def]
    """Tiles at (and above) the scene's native zoom, sampled at every chip pixel's ground position,
    reproduce `render_chip`: same bands, same stretch (no bias), same place."""
    info = scene(tiny, key)
    hit = max(all_chips(tiny, info.id), key=lambda h: h.payload.valid_fraction)
    z = client.get(f"/scenes/{info.id}/tilejson.json").json()["maxzoom"] + above
    footprint = shape(hit.payload.footprint)
    image, (left, top), res = mosaic(client, info.id, footprint.bounds, z)
    mx, my = chip_pixel_centres_3857(hit)
    rows = np.floor((top - my) / res).astype(int)
    cols = np.floor((mx - left) / res).astype(int)
    assert rows.min() >= 0 and cols.min() >= 0 and rows.max() < image.shape[0] and cols.max() < image.shape[1]
    sampled = image[rows, cols]
    chip = render_chip(hit.payload).astype(float)
    valid = sampled[..., 3] == 255
    assert valid.mean() >= 0.5 * hit.payload.valid_fraction
    a, b = sampled[..., :3][valid].astype(float), chip[valid]
    mad = float(np.abs(a - b).mean())
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert mad <= max_mad and corr >= min_corr, (key, z, mad, corr)
    assert np.abs((a - b).mean(axis=0)).max() <= 4.0  # a different stretch would shift the levels


@pytest.mark.parametrize("key", ["cogeo", "landsat", "drone", "geographic"])
def test_scene_tile_is_transparent_outside_the_scene(client, tiny, key: str) -> None:  # type: ignore[no-untyped-def]
    """A tile twice the scene's size: alpha 0 wherever the pixel centre falls outside the raster."""
    info = scene(tiny, key)
    z = client.get(f"/scenes/{info.id}/tilejson.json").json()["minzoom"] - 1
    with rasterio.open(info.path) as ds:
        inverse, crs, width, height = ~ds.transform, ds.crs, ds.width, ds.height
        middle = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            *pixel_to_crs(ds.transform, width / 2, height / 2)
        )
    tile = TMS.tile(*middle, z)
    response = client.get(f"/scenes/{info.id}/tiles/{z}/{tile.x}/{tile.y}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    rgba = png(response.content)
    b = TMS.xy_bounds(tile)
    res = (b.right - b.left) / 256
    mx, my = np.meshgrid(b.left + (np.arange(256) + 0.5) * res, b.top - (np.arange(256) + 0.5) * res)
    xs, ys = Transformer.from_crs("EPSG:3857", crs, always_xy=True).transform(mx, my)
    cols, rows = pixel_to_crs(inverse, xs, ys)
    outside = (cols < -1) | (rows < -1) | (cols > width + 1) | (rows > height + 1)  # a pixel of resampling slack
    assert outside.any() and (~outside).any()
    assert (rgba[..., 3][outside] == 0).all()
    assert (rgba[..., :3][rgba[..., 3] == 0] == 0).all()
    assert (rgba[..., 3][~outside] == 255).any()
    assert set(np.unique(rgba[..., 3])) <= {0, 255}


def test_scene_tile_outside_the_scene_is_404(client, tiny) -> None:  # type: ignore[no-untyped-def]
    info = scene(tiny, "cogeo")
    inside = TMS.tile((info.bbox[0] + info.bbox[2]) / 2, (info.bbox[1] + info.bbox[3]) / 2, 18)
    assert client.get(f"/scenes/{info.id}/tiles/18/{inside.x}/{inside.y}.png").status_code == 200
    response = client.get(f"/scenes/{info.id}/tiles/18/{inside.x + 20}/{inside.y}.png")
    assert response.status_code == 404
    assert "does not intersect" in response.json()["detail"]
    far = TMS.tile(-150.0, -40.0, 5)
    assert client.get(f"/scenes/{info.id}/tiles/5/{far.x}/{far.y}.png").status_code == 404


def test_deleted_scene_has_no_tiles(tmp_path, tiny_clip_spec, scenes_dir) -> None:  # type: ignore[no-untyped-def]
    from geosearch import load_embedder

    embedder = load_embedder(tiny_clip_spec, device="cpu")
    with Engine(embedder, open_store(tmp_path / "s", model_id=embedder.model_id, dim=embedder.dim)) as engine:
        ingest(engine, [scenes_dir / SCENE_FILES["landsat"]], IngestOptions(captions=False))
        info = engine.scenes()[0]
        tile = TMS.tile((info.bbox[0] + info.bbox[2]) / 2, (info.bbox[1] + info.bbox[3]) / 2, 8)
        with TestClient(create_app(engine)) as c:
            assert c.get(f"/scenes/{info.id}/tiles/8/{tile.x}/{tile.y}.png").status_code == 200
            assert decode(c.get(f"/tiles/8/{tile.x}/{tile.y}.mvt").content)
            assert c.delete(f"/scenes/{info.id}").status_code == 200
            assert c.get(f"/scenes/{info.id}/tiles/8/{tile.x}/{tile.y}.png").status_code == 404
            assert c.get(f"/tiles/8/{tile.x}/{tile.y}.mvt").content == b""


# -- captions and query tiles (real models) -----------------------------------------------------------
@pytest.fixture(scope="module")
def real_client(ingested) -> Iterator[TestClient[Any]]:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    with TestClient(create_app(engine)) as test_client:
        yield test_client


def test_caption_tiles_carry_captions(real_client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    info = next(s for s in engine.scenes() if s.path.endswith("cogeo.tif"))
    tile = TMS.tile((info.bbox[0] + info.bbox[2]) / 2, (info.bbox[1] + info.bbox[3]) / 2, 16)
    features = decode(real_client.get(f"/tiles/16/{tile.x}/{tile.y}.mvt").content)
    assert features
    for f in features:
        assert f["properties"]["caption"] == engine.chip(f["properties"]["id"]).payload.caption
        assert f["properties"]["caption"]


def test_query_tiles_rank_hits_by_score(real_client, ingested) -> None:  # type: ignore[no-untyped-def]
    engine, _ = ingested
    info = next(s for s in engine.scenes() if s.path.endswith("cogeo.tif"))
    tile = TMS.tile((info.bbox[0] + info.bbox[2]) / 2, (info.bbox[1] + info.bbox[3]) / 2, 15)
    q = "trees next to a road"
    response = real_client.get(f"/tiles/15/{tile.x}/{tile.y}.mvt", params={"q": q, "limit": 12})
    assert response.status_code == 200 and response.headers["content-type"].startswith(MVT)
    features = decode(response.content)
    assert len(features) == 12
    props = [f["properties"] for f in features]
    assert [p["rank"] for p in props] == list(range(1, 13))
    scores = [p["score"] for p in props]
    assert scores == sorted(scores, reverse=True)
    relevance = [p["relevance"] for p in props]
    assert relevance == sorted(relevance, reverse=True) and all(0 <= r <= 1 for r in relevance)
    # The same hits as a search over the tile's box, and only chips whose footprints intersect the tile.
    expected = engine.search(SearchQuery(q=q, bbox=tuple(TMS.bounds(tile)), limit=12))
    assert [p["id"] for p in props] == [h.id for h in expected]
    assert scores == pytest.approx([h.score for h in expected], abs=1e-6)
    assert {p["id"] for p in props} <= intersecting(all_chips(engine), tile)
    assert all(p["caption"] for p in props)
    # A tile the query does not reach (no chips there) is empty.
    far = TMS.tile(-150.0, -40.0, 10)
    assert real_client.get(f"/tiles/10/{far.x}/{far.y}.mvt", params={"q": q}).content == b""
